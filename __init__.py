"""Blender extension entry point: the repository root is the extension root (see blender_manifest.toml)."""


def register() -> None:
    from .exgs_blender import register as register_extension

    register_extension()


def unregister() -> None:
    from .exgs_blender import unregister as unregister_extension

    unregister_extension()
