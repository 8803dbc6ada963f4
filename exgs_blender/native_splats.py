"""Blender's own Gaussian splats (Blender 5.3 imports .ply and .spz as a splat PointCloud) and ExGS splat objects.

A native splat is a PointCloud with point attributes (Blender's io/gsplat code): `position`, `scale` (linear, exp
applied), `rotation` (QUATERNION w, x, y, z), a 4-float colour attribute whose RGB are the SH DC coefficients
(f_dc) and whose alpha is the opacity after the sigmoid, named `radiance:base` (or, in other builds,
`radiance_base` or `color`), and per higher SH coefficient a 3-float attribute `radiance:sh_0`, `radiance:sh_1`, ...
(or `sh_0`, ...), band-major as in the .ply. Names are detected at run time.

The ExGS panel compresses native objects (into a new ExGS splat object), the ExGS engine renders them and Export
takes them directly (Blender's PLY exporter writes none of their points). Object > Convert > ExGS Splats makes an
ExGS splat object of one; Convert > Native Splats goes back. There is no Blender 5.3 `bpy` wheel: the tests build such point clouds in Blender 5.0 with the same
attributes; the native PointCloud type flag (gsplat) cannot be set from Python, so whether 5.3 draws a point cloud
made by Convert > Native Splats as splats is untested.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import bpy
import numpy as np

from exgs_core.scene import GaussianScene

from .splat_object import create_splat_object, is_splat_object, scene_from_object, splat_info

COLOR_NAMES = ("radiance:base", "radiance_base", "color")
SH_PREFIXES = {"radiance:base": "radiance:sh_", "radiance_base": "radiance_sh_", "color": "sh_"}
SH_COUNTS = (15, 8, 3)  # coefficients beyond DC for degrees 3, 2, 1; Blender also stores degree 4, dropped here

if TYPE_CHECKING:
    from .operators.io import OperatorResult


@dataclass
class NativeLayout:
    color: str  # the 4-float attribute: f_dc in RGB, sigmoid(opacity) in alpha
    sh_names: list[str]  # higher SH coefficients, band-major


def native_layout(obj: bpy.types.Object | None) -> NativeLayout | None:
    """The attribute names of a native splat object, or None if `obj` is not one."""
    if obj is None or obj.type != "POINTCLOUD":
        return None
    attributes = obj.original.data.attributes
    if "scale" not in attributes or "rotation" not in attributes:
        return None
    color = next((name for name in COLOR_NAMES if name in attributes and _width(attributes[name]) == 4), None)
    if color is None:
        return None
    for prefix in dict.fromkeys([SH_PREFIXES[color], *SH_PREFIXES.values()]):
        found = 0
        while f"{prefix}{found}" in attributes:
            found += 1
        count = next((k for k in SH_COUNTS if k <= found), 0)
        if count:
            return NativeLayout(color, [f"{prefix}{i}" for i in range(count)])
    return NativeLayout(color, [])


def is_native_splat_object(obj: bpy.types.Object | None) -> bool:
    return native_layout(obj) is not None


def scene_from_native(obj: bpy.types.Object, world_space: bool = True) -> GaussianScene:
    """The Gaussians of a native splat object (world space by default), in exgs' .ply parameters."""
    layout = native_layout(obj)
    if layout is None:
        raise ValueError(f"object {obj.name!r} is not a native splat point cloud")
    attributes = obj.original.data.attributes
    n = len(obj.original.data.points)
    means = _read(attributes["position"], n, 3)
    scales = _read(attributes["scale"], n, 3).astype(np.float64)
    quats = _read(attributes["rotation"], n, 4)
    base = _read(attributes[layout.color], n, 4).astype(np.float64)
    sh = np.empty((n, 1 + len(layout.sh_names), 3), np.float32)
    sh[:, 0] = base[:, :3]
    for k, name in enumerate(layout.sh_names, start=1):
        sh[:, k] = _read(attributes[name], n, 3)
    alpha = np.clip(base[:, 3], 0.0, 1.0)
    with np.errstate(divide="ignore"):
        log_scales = np.log(np.maximum(scales, 0.0))
        logits = np.log(alpha) - np.log1p(-alpha)
    scene = GaussianScene(means, quats, log_scales, logits, sh, {"source_name": obj.name})
    if not world_space:
        return scene
    try:
        return scene.transformed(np.array(obj.matrix_world, dtype=np.float64))
    except ValueError as error:
        raise ValueError(f"object {obj.name!r}: {error} (apply or reset its scale to make it uniform)") from None


def native_info(obj: bpy.types.Object) -> dict:
    """splat_info's facts for a native splat object (never compressed by ExGS)."""
    layout = native_layout(obj)
    if layout is None:
        raise ValueError(f"object {obj.name!r} is not a native splat point cloud")
    degree = {0: 0, 3: 1, 8: 2, 15: 3}[len(layout.sh_names)]
    return {"inria_ratio": None, "count": len(obj.original.data.points), "sh_degree": degree,
            "source_name": obj.name, "source_bytes": 0, "restoration_strength": None, "restoration_gain_db": None}


# --- either kind: ExGS splat objects and native ones, for the panel, the operators and the engine ---------------

def is_any_splat(obj: bpy.types.Object | None) -> bool:
    return is_splat_object(obj) or is_native_splat_object(obj)


def scene_of(obj: bpy.types.Object, world_space: bool = True) -> GaussianScene:
    """The Gaussians of an ExGS splat object or a native one."""
    return (scene_from_object if is_splat_object(obj) else scene_from_native)(obj, world_space=world_space)


def info_of(obj: bpy.types.Object) -> dict:
    """splat_info of an ExGS splat object or a native one."""
    return splat_info(obj) if is_splat_object(obj) else native_info(obj)


def create_native_object(
    scene: GaussianScene, name: str, context: bpy.types.Context, color: str = COLOR_NAMES[0]
) -> bpy.types.Object:
    """A PointCloud object with the native splat attributes of `scene` (object space), linked to the active
    collection; made through a mesh and Object > Convert, as Python cannot add points to a PointCloud."""
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(scene))
    mesh.vertices.foreach_set("co", scene.means.reshape(-1))
    base = np.concatenate([scene.sh[:, 0, :], scene.opacities()[:, None]], axis=1)
    _add(mesh, color, "FLOAT_COLOR", base)
    _add(mesh, "scale", "FLOAT_VECTOR", np.exp(scene.log_scales))
    _add(mesh, "rotation", "QUATERNION", scene.unit_quats())
    prefix = SH_PREFIXES[color]
    for k in range(1, scene.sh.shape[1]):
        _add(mesh, f"{prefix}{k - 1}", "FLOAT_VECTOR", scene.sh[:, k, :])
    obj = bpy.data.objects.new(name, mesh)
    context.collection.objects.link(obj)
    with context.temp_override(active_object=obj, selected_objects=[obj], selected_editable_objects=[obj]):
        for other in context.selected_objects:
            other.select_set(False)
        obj.select_set(True)
        context.view_layer.objects.active = obj
        bpy.ops.object.convert(target="POINTCLOUD")
    converted = context.view_layer.objects.active
    if mesh.users == 0:
        bpy.data.meshes.remove(mesh)
    return converted


def _width(attribute: bpy.types.Attribute) -> int:
    return {"FLOAT_COLOR": 4, "BYTE_COLOR": 4, "QUATERNION": 4, "FLOAT_VECTOR": 3, "FLOAT": 1}.get(
        attribute.data_type, 0)


def _read(attribute: Any, n: int, width: int) -> np.ndarray:  # any attribute type: each has .data
    key = {"FLOAT_COLOR": "color", "BYTE_COLOR": "color", "FLOAT_VECTOR": "vector", "QUATERNION": "value"}
    out = np.empty(n * width, np.float32)
    attribute.data.foreach_get(key.get(attribute.data_type, "value"), out)
    return out.reshape(n, width)


def _add(mesh: bpy.types.Mesh, name: str, kind: Literal["FLOAT_COLOR", "FLOAT_VECTOR", "QUATERNION"],
         values: np.ndarray) -> None:
    attribute: Any = mesh.attributes.new(name, kind, "POINT")
    key = {"FLOAT_COLOR": "color", "FLOAT_VECTOR": "vector", "QUATERNION": "value"}[kind]
    attribute.data.foreach_set(key, np.ascontiguousarray(values, np.float32).reshape(-1))


class EXGS_OT_native_to_exgs(bpy.types.Operator):
    """Make an ExGS splat object of the active native splat point cloud (to compress it and render it with
    ExGS); the point cloud is hidden, not deleted"""

    bl_idname = "exgs.native_to_exgs"
    bl_label = "ExGS Splats"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return is_native_splat_object(context.active_object)

    def execute(self, context: bpy.types.Context) -> OperatorResult:
        native = context.active_object
        if native is None:
            return {"CANCELLED"}
        try:
            scene = scene_from_native(native, world_space=False)
        except ValueError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        obj = create_splat_object(scene, native.name, context.collection)
        obj.matrix_world = native.matrix_world.copy()
        native.hide_set(True)
        native.select_set(False)
        obj.select_set(True)
        context.view_layer.objects.active = obj
        self.report({"INFO"}, f"{len(scene):,} Gaussians (SH degree {scene.sh_degree}) now in {obj.name!r}")
        return {"FINISHED"}


class EXGS_OT_exgs_to_native(bpy.types.Operator):
    """Make a point cloud with Blender's native splat attributes of the active ExGS splat object"""

    bl_idname = "exgs.exgs_to_native"
    bl_label = "Native Splats"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return is_splat_object(context.active_object)

    def execute(self, context: bpy.types.Context) -> OperatorResult:
        source = context.active_object
        if source is None:
            return {"CANCELLED"}
        scene = scene_from_object(source, world_space=False)
        obj = create_native_object(scene, source.name + "_native", context)
        obj.matrix_world = source.matrix_world.copy()
        self.report({"INFO"}, f"{len(scene):,} Gaussians in the point cloud {obj.name!r}")
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

