"""File > Import > ExGS Demo Scene: the real scene shipped with ExGS, with a camera looking at it.

An artist who installed the extension sees it work before finding a splat file: the scene is imported by the
Gaussian Splats import operator itself (bpy.ops.import_scene.gaussian_splats, so the object is whatever that
operator makes on this Blender: a mesh-based splat object, or a native splat point cloud), from the file inside
exgs_core (found through importlib.resources, exgs_core.data). Then a camera is added, framing the scene from
the front, and made the scene camera, and the render engine is set to ExGS with the Standard view transform:
Compress in the ExGS panel and F12 then work with no other file.
"""

from __future__ import annotations

import math

import bpy
from mathutils import Euler, Vector

from exgs_core.data import DEMO_CREDIT, DEMO_NAME, demo_scene_path

from ..splats import is_splat
from .io import OperatorResult

CAMERA_ELEVATION_DEG = 25.0  # above the scene, looking down at it, as `exgs demo`'s orbit views
CAMERA_MARGIN = 1.08  # the camera steps back this much beyond the distance at which the bounds just fit
ENGINE = "EXGS"


class EXGS_OT_import_demo_scene(bpy.types.Operator):
    """Add the real scene shipped with ExGS (PLAYBOT, CC-BY-4.0) and a camera looking at it, for Compress and F12"""

    bl_idname = "import_scene.exgs_demo"
    bl_label = "Import ExGS Demo Scene"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: bpy.types.Context) -> OperatorResult:
        try:
            with demo_scene_path() as path:
                done = bpy.ops.import_scene.gaussian_splats(  # type: ignore[attr-defined]  # (ours: not in the stubs)
                    filepath=str(path), up_axis="-Y", scale=1.0)
        except (OSError, RuntimeError) as error:  # a broken installation; RuntimeError: the import's own report
            self.report({"ERROR"}, f"ExGS demo scene: {error}")
            return {"CANCELLED"}
        obj = context.view_layer.objects.active
        if "FINISHED" not in done or obj is None:
            self.report({"ERROR"}, "ExGS demo scene: the import did not finish (see the message above)")
            return {"CANCELLED"}
        obj.name = f"{DEMO_NAME} (ExGS demo)"
        scene = context.scene
        camera = add_camera_looking_at(context, obj)
        scene.camera = camera
        try:
            scene.render.engine = ENGINE
        except TypeError:  # not registered (cannot happen while the extension is enabled)
            pass
        scene.view_settings.view_transform = "Standard"  # the file's colours (docs: Render with ExGS)
        obj.select_set(True)
        context.view_layer.objects.active = obj  # the Compress panel shows it
        self.report({"INFO"}, f"Added the ExGS demo scene and a camera ({DEMO_CREDIT}); render engine: "
                              f"{scene.render.engine}. Compress it in the ExGS panel (N), render with F12")
        return {"FINISHED"}


def world_bounds(obj: bpy.types.Object) -> list[Vector]:
    """The 8 corners of the object's bounding box in world space."""
    matrix = obj.matrix_world
    return [matrix @ Vector(corner) for corner in obj.bound_box]


def add_camera_looking_at(context: bpy.types.Context, obj: bpy.types.Object) -> bpy.types.Object:
    """A new camera in the active collection, in front of `obj` (from -Y, CAMERA_ELEVATION_DEG above), at the
    distance where the object's bounding box fits the frame of the scene's render size, plus a margin."""
    context.view_layer.update()  # the new object's bounds
    data = bpy.data.cameras.new(f"{DEMO_NAME} camera")
    data.clip_start, data.clip_end = 0.01, 1000.0
    camera = bpy.data.objects.new(f"{DEMO_NAME} camera", data)
    context.collection.objects.link(camera)
    camera.rotation_euler = Euler((math.radians(90.0 - CAMERA_ELEVATION_DEG), 0.0, 0.0), "XYZ")
    corners = world_bounds(obj)
    centre = sum(corners, Vector()) / len(corners)
    context.view_layer.update()
    coords = [value for corner in corners for value in (corner.x, corner.y, corner.z)]
    fitted, _ = camera.camera_fit_coords(context.evaluated_depsgraph_get(), coords)
    camera.location = centre + (fitted - centre) * CAMERA_MARGIN
    return camera


class VIEW3D_PT_exgs_demo(bpy.types.Panel):
    """In the ExGS tab of the sidebar while the scene has no splat object: a button that adds the demo scene."""

    bl_label = "Demo Scene"
    bl_idname = "VIEW3D_PT_exgs_demo"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "ExGS"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.scene is not None and not any(is_splat(obj) for obj in context.scene.objects)

    def draw(self, context: bpy.types.Context) -> None:
        if self.layout is None:
            return
        self.layout.label(text="No splat object in this scene yet", icon="INFO")
        self.layout.operator(EXGS_OT_import_demo_scene.bl_idname, text="Add the Demo Scene", icon="IMPORT")


def menu_import_demo(self: bpy.types.Menu, context: bpy.types.Context) -> None:
    self.layout.operator(EXGS_OT_import_demo_scene.bl_idname, text="ExGS Demo Scene", icon="OUTLINER_OB_POINTCLOUD")


classes = (EXGS_OT_import_demo_scene, VIEW3D_PT_exgs_demo)

register_classes, unregister_classes = bpy.utils.register_classes_factory(classes)


def register() -> None:
    register_classes()
    bpy.types.TOPBAR_MT_file_import.append(menu_import_demo)  # type: ignore[arg-type]


def unregister() -> None:
    bpy.types.TOPBAR_MT_file_import.remove(menu_import_demo)  # type: ignore[arg-type]
    unregister_classes()
