"""Splat objects, whatever their kind: the one module operators, panels, export, the .blend payload and the
render engine go through.

Two kinds sit behind it, and nothing above this module asks which one it has:
- the native splat object (native_splats.py): a GAUSSIAN_SPLAT point cloud, what ExGS makes on Blender 5.3+
  (compat.NATIVE_SPLATS) and what Blender's own PLY and SPZ importers make;
- the mesh-based splat object (splat_object.py): what ExGS makes before 5.3, and what .blend files saved there
  hold (they keep rendering on 5.3).
Both carry the ExGS facts (source, ratio, fitted restoration, .exgs payload) as splat_data.py stores them.
"""

from __future__ import annotations

import hashlib
from typing import Any

import bpy
import numpy as np

from exgs_core.io.exgs import Restoration
from exgs_core.scene import GaussianScene, SplitScene

from .compat import ATTRIBUTE_KEYS, ATTRIBUTE_WIDTHS, NATIVE_SPLATS
from .native_splats import (create_native_object, fill_native, is_native_splat_object, native_info, native_layout,
                            replace_native_data, scene_from_native)
from .splat_data import is_exgs_data, stored_restoration
from .splat_object import (check_transform, create_splat_object, fill_geometry, is_splat_object, replace_splat_data,
                           scene_from_object, splat_info, splat_problem)


def is_splat(obj: bpy.types.Object | None) -> bool:
    """Any splat object: ExGS's (either kind) or Blender's own native splats."""
    return is_splat_object(obj) or is_native_splat_object(obj)


def is_exgs_splat(obj: bpy.types.Object | None) -> bool:
    """A splat object ExGS made (import or Compress): it carries the ExGS facts."""
    return is_splat(obj) and obj is not None and is_exgs_data(obj.original.data)


def scene_of(obj: bpy.types.Object, world_space: bool = True) -> GaussianScene:
    """All Gaussians of a splat object with full SH and its ExGS facts in the metadata; in world space
    (obj.matrix_world applied) by default. ValueError naming the object when it is not a splat object or its
    transform is not a rotation with uniform scale."""
    if is_splat_object(obj):
        return scene_from_object(obj, world_space=world_space)
    return scene_from_native(obj, world_space=world_space)


def info_of(obj: bpy.types.Object) -> dict[str, Any]:
    """count, sh_degree, source_name, source_bytes (0 when unknown), inria_ratio (None when never compressed),
    restoration_strength and restoration_gain_db (None without a fitted restoration)."""
    return splat_info(obj) if is_splat_object(obj) else native_info(obj)


def count_of(obj: bpy.types.Object) -> int:
    return int(info_of(obj)["count"])


def restoration_of(obj: bpy.types.Object) -> Restoration | None:
    """The fitted restoration kept with a splat object (from its .exgs file), or None."""
    return stored_restoration(obj.original.data) if is_exgs_splat(obj) else None


def problem_of(obj: bpy.types.Object) -> str | None:
    """One line when a splat object lost its Gaussians, else None."""
    return splat_problem(obj) if is_splat_object(obj) else None


def create_splat(scene: GaussianScene | SplitScene, name: str,
                 collection: bpy.types.Collection | None = None) -> bpy.types.Object:
    """A new splat object holding `scene` (object space), of the kind this Blender draws best: a native splat
    object on 5.3+, the mesh-based one before. Linked into `collection` (default: the active scene's). A
    SplitScene is left without its SH columns: each goes once it is written (the import's peak memory)."""
    if NATIVE_SPLATS:
        return create_native_object(scene, name, collection)
    return create_splat_object(scene, name, collection)


def replace_splats(obj: bpy.types.Object, scene: GaussianScene) -> None:
    """Swap the Gaussians of an ExGS splat object in place; the object, its transform and name stay."""
    if not is_exgs_splat(obj):
        raise ValueError(f"object {obj.name!r} is not an ExGS splat object")
    if is_splat_object(obj):
        replace_splat_data(obj, scene)
    else:
        replace_native_data(obj, scene)


def is_mesh_splat(obj: bpy.types.Object | None) -> bool:
    """A mesh-based ExGS splat object (made before Blender 5.3): Convert > Native Splats takes it."""
    return is_splat_object(obj)


def make_native_copy(obj: bpy.types.Object, context: bpy.types.Context) -> bpy.types.Object:
    """A native splat object with the Gaussians, ExGS facts and transform of the splat object `obj`."""
    copy = create_native_object(scene_of(obj, world_space=False), obj.name + "_native", context.collection, context)
    copy.matrix_world = obj.matrix_world.copy()
    for other in context.view_layer.objects.selected:
        other.select_set(False)
    copy.select_set(True)
    context.view_layer.objects.active = copy
    return copy


def fill_data(data: Any, scene: GaussianScene) -> None:
    """Fill emptied splat data (a Mesh or a PointCloud) with `scene` again, as its kind made it."""
    if isinstance(data, bpy.types.PointCloud):
        fill_native(data, scene)
    else:
        fill_geometry(data, scene)
        data.update()


def point_count(data: Any) -> int:
    return len(data.points) if isinstance(data, bpy.types.PointCloud) else len(data.vertices)


def change_key(obj: bpy.types.Object) -> str:
    """Changes whenever the Gaussians of the object's data change (positions, opacities, count, SH degree)."""
    data = obj.original.data
    layout = native_layout(obj)
    count = point_count(data)
    names = ["position", "opacity", "f_dc_0"] if layout is None else ["position", layout.color]
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{data.name_full}|{count}|{data.get('exgs_sh_degree')}".encode())
    for name in names:
        attribute = data.attributes.get(name)
        if attribute is not None and attribute.data_type in ATTRIBUTE_KEYS:
            values = np.empty(count * ATTRIBUTE_WIDTHS[attribute.data_type], np.float32)
            attribute.data.foreach_get(ATTRIBUTE_KEYS[attribute.data_type], values)
            digest.update(values.tobytes())
    return digest.hexdigest()
