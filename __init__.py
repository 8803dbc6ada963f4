"""Blender extension entry point: the repository root is the extension root (see blender_manifest.toml).

exgs_core is a standalone library whose modules import each other as `exgs_core.*`, so the extension root
goes on sys.path (first, so the bundled copy wins) before exgs_blender imports it. exgs_blender itself
must only be imported relatively (it lives at bl_ext.<repo>.exgs.exgs_blender inside Blender).
"""

import os
import sys

_ROOT = os.path.dirname(os.path.abspath(__file__))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


def register() -> None:
    from .exgs_blender import register as register_extension

    register_extension()


def unregister() -> None:
    from .exgs_blender import unregister as unregister_extension

    unregister_extension()
