"""The native splat object: a PointCloud with Blender's own Gaussian splat attributes (Blender 5.3 imports .ply and
.spz as these, and draws them as splats in the viewport, EEVEE and Cycles).

Attributes (Blender's io/gsplat code): `position`, `scale` (linear, exp applied), `rotation` (QUATERNION w, x, y,
z, unit length), a 4-float attribute whose first three values are the SH DC coefficients (f_dc) and whose fourth
is the opacity after the sigmoid, named `radiance:base` (or, in other builds, `radiance_base` or `color`), and per
higher SH coefficient a 3-float attribute `radiance:sh_0`, `radiance:sh_1`, ... (or `sh_0`, ...), band-major as in
the .ply. Names are detected at run time.

On Blender 5.3+ (compat.NATIVE_SPLATS) this is also the kind of splat object ExGS makes: a GAUSSIAN_SPLAT point
cloud sized with `resize` whose data carries the ExGS facts (splat_data.py). Point clouds Blender made itself are
read the same way. Before 5.3 a point cloud cannot be a splat: Object > Convert > Native Splats then makes one
with these attributes through a mesh, for files saved for 5.3. Operators, panels and the engine never call this
module directly: they go through splats.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import bpy
import numpy as np

from exgs_core.scene import GaussianScene, SplitScene
from exgs_core.sh import num_sh_bases

from .compat import ATTRIBUTE_KEYS, ATTRIBUTE_WIDTHS, BASE_COLOR_TYPE, NATIVE_SPLATS
from .splat_object import check_transform
from .splat_data import PAYLOAD_PROPERTY, facts_info, is_exgs_data, payload_scene, read_facts, write_facts

COLOR_NAMES = ("radiance:base", "radiance_base", "color")
SH_PREFIXES = {"radiance:base": "radiance:sh_", "radiance_base": "radiance_sh_", "color": "sh_"}
SH_COUNTS = (15, 8, 3)  # coefficients beyond DC for degrees 3, 2, 1; Blender also stores degree 4, dropped here
SH_DEGREES = {0: 0, 3: 1, 8: 2, 15: 3}


@dataclass
class NativeLayout:
    color: str  # the 4-float attribute: f_dc in the first three values, sigmoid(opacity) in the fourth
    sh_names: list[str]  # higher SH coefficients, band-major


def native_layout(obj: bpy.types.Object | None) -> NativeLayout | None:
    """The attribute names of a native splat object, or None if `obj` is not one."""
    if obj is None or obj.type != "POINTCLOUD":
        return None
    data = obj.original.data
    if is_exgs_data(data) and len(data.points) == 0 and data.get(PAYLOAD_PROPERTY) is not None:
        return NativeLayout(COLOR_NAMES[0], [])  # emptied for saving, or linked as saved: its payload holds all
    return _layout(data.attributes)


def _layout(attributes: Any) -> NativeLayout | None:
    if "scale" not in attributes or "rotation" not in attributes:
        return None
    color = next((name for name in COLOR_NAMES if name in attributes
                  and ATTRIBUTE_WIDTHS.get(attributes[name].data_type) == 4), None)
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
    """The Gaussians of a native splat object (world space by default), in exgs' .ply parameters, with the ExGS
    facts of an object ExGS made. ValueError naming the object for a non-uniform scale."""
    layout = native_layout(obj)
    if layout is None:
        raise ValueError(f"object {obj.name!r} is not a native splat point cloud")
    data = obj.original.data
    if len(data.points) == 0 and data.get(PAYLOAD_PROPERTY) is not None:
        decoded = payload_scene(data)  # linked from a saved .blend, which keeps the payload: decode it here
        scene = GaussianScene(decoded.means, decoded.quats, decoded.log_scales, decoded.opacity_logits, decoded.sh)
    else:
        scene = _read_native(data, layout)
    if is_exgs_data(data):
        read_facts(data, scene)
    else:
        scene.metadata["source_name"] = obj.name
    if not world_space:
        return scene
    matrix = np.array(obj.matrix_world, dtype=np.float64)
    check_transform(obj, matrix)
    return scene.transformed(matrix)


def _read_native(data: Any, layout: NativeLayout) -> GaussianScene:
    attributes = data.attributes
    n = len(data.points)
    means = _read(attributes["position"], n)
    scales = _read(attributes["scale"], n).astype(np.float64)
    quats = _read(attributes["rotation"], n)
    base = _read(attributes[layout.color], n).astype(np.float64)
    sh = np.empty((n, 1 + len(layout.sh_names), 3), np.float32)
    sh[:, 0] = base[:, :3]
    for k, name in enumerate(layout.sh_names, start=1):
        sh[:, k] = _read(attributes[name], n)
    alpha = np.clip(base[:, 3], 0.0, 1.0)
    with np.errstate(divide="ignore"):
        log_scales = np.log(np.maximum(scales, 0.0))
        logits = np.log(alpha) - np.log1p(-alpha)
    return GaussianScene(means, quats, log_scales, logits, sh)


def native_info(obj: bpy.types.Object) -> dict[str, Any]:
    """Facts for panels and the engine (as splat_object.splat_info): count, sh_degree and the ExGS facts, which
    an object Blender made itself does not have (never compressed, no restoration)."""
    layout = native_layout(obj)
    if layout is None:
        raise ValueError(f"object {obj.name!r} is not a native splat point cloud")
    data = obj.original.data
    if is_exgs_data(data):
        facts = facts_info(data)
        degree = int(data.get("exgs_sh_degree", 0))
    else:
        facts = {"inria_ratio": None, "restoration_strength": None, "restoration_gain_db": None,
                 "source_name": obj.name, "source_bytes": 0}
        degree = SH_DEGREES[len(layout.sh_names)]
    return {**facts, "count": len(data.points), "sh_degree": degree}


def create_native_object(scene: GaussianScene | SplitScene, name: str, collection: bpy.types.Collection | None = None,
                         context: bpy.types.Context | None = None) -> bpy.types.Object:
    """A native splat object holding `scene` (object space) with its ExGS facts, linked into `collection`
    (default: the active scene's). Blender 5.3+: a GAUSSIAN_SPLAT point cloud. Before 5.3, Python cannot size a
    point cloud: a mesh with the same attributes is converted (Object > Convert, which needs `context`), and
    the result is a plain point cloud that 5.3 opens as splats once its type is set."""
    target = collection if collection is not None else bpy.context.scene.collection
    if not NATIVE_SPLATS:
        return _converted_native_object(scene, name, target, context or bpy.context)
    cloud = bpy.data.pointclouds.new(name)
    try:
        fill_native(cloud, scene)
        write_facts(cloud, scene)
        obj = bpy.data.objects.new(name, cloud)
    except BaseException:
        bpy.data.pointclouds.remove(cloud)
        raise
    target.objects.link(obj)
    return obj


def replace_native_data(obj: bpy.types.Object, scene: GaussianScene) -> None:
    """Swap the Gaussians of a native splat object in place; the object, its transform, name and materials stay."""
    cloud: Any = obj.original.data
    fill_native(cloud, scene)
    write_facts(cloud, scene)
    obj.update_tag()


def fill_native(cloud: bpy.types.PointCloud, scene: GaussianScene | SplitScene) -> None:
    """Make `cloud` (Blender 5.3+) a GAUSSIAN_SPLAT point cloud holding exactly `scene`'s Gaussians, replacing
    whatever it held (a SplitScene is left without its SH columns). Deterministic: a .blend rebuilds point clouds
    from their payload with it."""
    for attribute in [a for a in cloud.attributes if a.name != "position" and not a.name.startswith(".")]:
        cloud.attributes.remove(attribute)
    cloud.resize(len(scene))
    for name, kind, values in native_columns(scene):
        attribute = cloud.attributes.get(name) or cloud.attributes.new(name, kind, "POINT")  # type: ignore[arg-type]
        _write(attribute, values)
        del values  # a column taken from a SplitScene goes here, before the next one is made
    cloud.type = "GAUSSIAN_SPLAT"
    cloud.update_tag()


def native_columns(scene: GaussianScene | SplitScene,
                   color: str = COLOR_NAMES[0]) -> Iterator[tuple[str, str, np.ndarray]]:
    """(name, data type, values) of every native splat attribute of `scene`, position first, each computed when
    it is reached (a 10M-Gaussian import held 0.8 GB of them at once); the SH ones are taken from a SplitScene."""
    split = SplitScene.of(scene)
    base = split.base
    yield "position", "FLOAT_VECTOR", base.means
    color_values = np.empty((len(base), 4), np.float32)  # the same values as float64 would give: exact in float32
    color_values[:, :3] = base.sh[:, 0, :]
    color_values[:, 3] = base.opacities()
    yield color, BASE_COLOR_TYPE, color_values
    del color_values
    yield "scale", "FLOAT_VECTOR", np.exp(base.log_scales.astype(np.float64))
    yield "rotation", "QUATERNION", base.unit_quats()
    prefix = SH_PREFIXES[color]
    for k in range(1, num_sh_bases(split.sh_degree)):
        yield f"{prefix}{k - 1}", "FLOAT_VECTOR", split.take_coefficient(k)


def _converted_native_object(scene: GaussianScene | SplitScene, name: str, collection: bpy.types.Collection,
                             context: bpy.types.Context) -> bpy.types.Object:
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(scene))
    for column, kind, values in native_columns(scene):
        if column == "position":
            mesh.vertices.foreach_set("co", np.ascontiguousarray(values, np.float32).reshape(-1))
        else:
            _write(mesh.attributes.new(column, kind, "POINT"), values)  # type: ignore[arg-type]
    obj = bpy.data.objects.new(name, mesh)
    collection.objects.link(obj)
    with context.temp_override(active_object=obj, selected_objects=[obj], selected_editable_objects=[obj]):
        for other in context.selected_objects:
            other.select_set(False)
        obj.select_set(True)
        context.view_layer.objects.active = obj
        bpy.ops.object.convert(target="POINTCLOUD")
    converted = context.view_layer.objects.active
    if mesh.users == 0:
        bpy.data.meshes.remove(mesh)
    write_facts(converted.data, scene)
    return converted


def _read(attribute: Any, n: int) -> np.ndarray:  # any attribute type: each has .data
    width = ATTRIBUTE_WIDTHS[attribute.data_type]
    out = np.empty(n * width, np.float32)
    attribute.data.foreach_get(ATTRIBUTE_KEYS[attribute.data_type], out)
    return out.reshape(n, width) if width > 1 else out


def _write(attribute: Any, values: np.ndarray) -> None:
    attribute.data.foreach_set(ATTRIBUTE_KEYS[attribute.data_type], np.ascontiguousarray(values, np.float32).reshape(-1))
