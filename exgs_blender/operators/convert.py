"""Object > Convert > ExGS Splats and > Native Splats: between Blender's own native splats and ExGS splat objects.

- ExGS Splats: a point cloud Blender made itself (its PLY or SPZ importer) becomes an ExGS splat object (of the
  kind this Blender makes: splats.create_splat); the point cloud is hidden, not deleted.
- Native Splats: a mesh-based ExGS splat object (made before Blender 5.3, or opened from such a .blend) becomes a
  native splat point cloud with the same Gaussians and ExGS facts: a GAUSSIAN_SPLAT point cloud on 5.3+, which
  Blender draws, renders with EEVEE and Cycles, and writes with its own exporters.
"""

from __future__ import annotations

from typing import Any

import bpy

from ..splats import create_splat, is_exgs_splat, is_mesh_splat, is_splat, make_native_copy, scene_of
from .io import OperatorResult


class EXGS_OT_native_to_exgs(bpy.types.Operator):
    """Make an ExGS splat object of the active native splat point cloud (to compress it and render it with
    ExGS); the point cloud is hidden, not deleted"""

    bl_idname = "exgs.native_to_exgs"
    bl_label = "ExGS Splats"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        obj = context.active_object
        return is_splat(obj) and not is_exgs_splat(obj)

    def execute(self, context: bpy.types.Context) -> OperatorResult:
        native = context.active_object
        if native is None:
            return {"CANCELLED"}
        try:
            scene = scene_of(native, world_space=False)
        except ValueError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        obj = create_splat(scene, native.name, context.collection)
        obj.matrix_world = native.matrix_world.copy()
        native.hide_set(True)
        native.select_set(False)
        obj.select_set(True)
        context.view_layer.objects.active = obj
        self.report({"INFO"}, f"{len(scene):,} Gaussians (SH degree {scene.sh_degree}) now in {obj.name!r}")
        return {"FINISHED"}


class EXGS_OT_exgs_to_native(bpy.types.Operator):
    """Make a native splat point cloud (Blender's own splats) of the active mesh-based ExGS splat object"""

    bl_idname = "exgs.exgs_to_native"
    bl_label = "Native Splats"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return is_mesh_splat(context.active_object)

    def execute(self, context: bpy.types.Context) -> OperatorResult:
        source = context.active_object
        if source is None:
            return {"CANCELLED"}
        obj = make_native_copy(source, context)
        self.report({"INFO"}, f"{len(obj.data.points):,} Gaussians in the point cloud {obj.name!r}")
        return {"FINISHED"}


def menu_convert(self: Any, context: bpy.types.Context) -> None:
    self.layout.operator(EXGS_OT_native_to_exgs.bl_idname)
    self.layout.operator(EXGS_OT_exgs_to_native.bl_idname)


classes = (EXGS_OT_native_to_exgs, EXGS_OT_exgs_to_native)
register_classes, unregister_classes = bpy.utils.register_classes_factory(classes)


def register() -> None:
    register_classes()
    bpy.types.VIEW3D_MT_object_convert.append(menu_convert)  # type: ignore[arg-type]


def unregister() -> None:
    bpy.types.VIEW3D_MT_object_convert.remove(menu_convert)  # type: ignore[arg-type]
    unregister_classes()
