"""ExGS for Blender: import, compress and render Gaussian splats (the only package that imports bpy).

How to add a module (part B and later): give it `register()` and `unregister()` functions (a `classes` tuple
with bpy.utils.register_class in a loop is the usual body) and append its name, relative to this package, to
MODULES below. Modules register in list order and unregister in reverse order. Nothing imported at register
time may import torch, numba, diffusers or gsplat: Blender's own Python does not have them.
Import other exgs_blender modules relatively (`from ..splat_object import ...`); exgs_core absolutely.
"""

from __future__ import annotations

import importlib
from types import ModuleType

MODULES: list[str] = [
    "operators.io",
    "blend_payload",
    "operators.convert",
    "properties",
    "runtime",
    "preferences",
    "engine",
    "operators.compress",
    "operators.demo",
    "ui.panels",
]

_registered: list[ModuleType] = []


def _modules() -> list[ModuleType]:
    return [importlib.import_module(f"{__package__}.{name}") for name in MODULES]


def register() -> None:
    try:
        for module in _modules():
            module.register()
            _registered.append(module)
    except BaseException:
        unregister()
        raise


def unregister() -> None:
    while _registered:
        _registered.pop().unregister()
