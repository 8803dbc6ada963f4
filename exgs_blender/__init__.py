"""ExGS for Blender: import, compress and render Gaussian splats (the only package that imports bpy)."""


def register() -> None:
    pass


def unregister() -> None:
    pass
