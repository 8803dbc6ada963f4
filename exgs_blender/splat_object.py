"""The splat object: how a GaussianScene lives inside Blender.

Representation (format version SPLAT_VERSION):
- A mesh object whose mesh holds one loose vertex per Gaussian; the vertex position is the Gaussian's mean in
  object space, so the object's transform places the splat in the world like any other object.
- Point-domain FLOAT attributes named exactly as the INRIA .ply properties: "opacity" (logit), "scale_0..2"
  (log-scales), "rot_0..3" (quaternion w, x, y, z, stored as read, not normalised), "f_dc_0..2" and
  "f_rest_0..M" (SH, channel-major as in the file: all R coefficients, then G, then B). Blender's own PLY
  importer names the attributes of a 3DGS .ply the same way.
- A FLOAT_COLOR point attribute "exgs_color": the display colour from SH0 (scene-linear), for viewports only.
- The ExGS facts (source, ratio, fitted restoration, .exgs payload) as custom properties on the mesh
  (splat_data.py, shared with the native kind).
- Display: a Geometry Nodes modifier "ExGS Points" (Mesh to Points, radius from the Gaussians' own scales,
  Set Material "ExGS Splat" whose shader reads "exgs_color"). Solid mode shows the points' colours with
  Viewport Shading > Color > Attribute; Material Preview and Rendered with EEVEE/Cycles through the material.
  The modifier only changes the evaluated geometry: the raw Gaussians are always read from the original mesh,
  so nothing of the display set-up can alter them.

This is the splat object of Blender before 5.3 (no native splats), and the one .blend files from those
versions hold. Operators, panels and the engine never call this module directly: they go through splats.py.
Everything is stored in the .blend (no reference to the source file). Arrays move with foreach_set /
foreach_get on flat float32 numpy arrays.
"""

from __future__ import annotations

from typing import Any, Iterator, cast

import bpy
import numpy as np

from exgs_core.scene import CHUNK, GaussianScene, SplitScene, decompose_similarity
from exgs_core.sh import num_sh_bases, sh0_to_rgb

from .compat import output_of_type, set_modifier_input
from .splat_data import PAYLOAD_PROPERTY, facts_info, is_exgs_data, payload_scene, read_facts, write_facts

MODIFIER_NAME = "ExGS Points"
NODE_GROUP_NAME = "ExGS Splat Display"
MATERIAL_NAME = "ExGS Splat"
COLOR_ATTRIBUTE = "exgs_color"
RADIUS_INPUT = "Radius Factor"
RATIO_INPUT = "Display Ratio"
# The viewport shows at most about this many Gaussians (a random subset of larger scenes; the modifier's
# Display Ratio changes it): four triangles each keep 1M-Gaussian scenes quick to import and to orbit.
DISPLAY_BUDGET = 250_000
APPLIED_MODIFIER_HINT = (f"If the {MODIFIER_NAME!r} modifier was applied, the Gaussians are gone (it only draws "
                         "points): undo it (Ctrl+Z) or import the file again; to hide the points, turn the modifier "
                         "off instead of applying it")


def create_splat_object(
    scene: GaussianScene | SplitScene, name: str, collection: bpy.types.Collection | None = None
) -> bpy.types.Object:
    """A new splat object holding `scene`, linked into `collection` (default: the active scene collection)."""
    mesh = bpy.data.meshes.new(name)
    try:
        _fill_mesh(mesh, scene)
        mesh.materials.append(_display_material())
        obj = bpy.data.objects.new(name, mesh)
    except BaseException:
        bpy.data.meshes.remove(mesh)
        raise
    try:
        _add_display_modifier(obj)
        target = collection if collection is not None else bpy.context.scene.collection
        target.objects.link(obj)
    except BaseException:
        bpy.data.objects.remove(obj)
        bpy.data.meshes.remove(mesh)
        raise
    return obj


def is_splat_object(obj: bpy.types.Object | None) -> bool:
    """True for an object created by create_splat_object (also for its evaluated copy)."""
    if obj is None or obj.type != "MESH":
        return False
    data = obj.original.data
    return isinstance(data, bpy.types.Mesh) and is_exgs_data(data)


def scene_from_object(obj: bpy.types.Object, world_space: bool = True) -> GaussianScene:
    """All Gaussians of a splat object with full SH; in world space (obj.matrix_world applied) by default.

    `obj` may be an evaluated object (from a depsgraph): its transform is used, its original mesh is read.
    ValueError when the object is not a splat object or its world transform has non-uniform scale or shear
    (Gaussians under such a transform would need re-fitting; apply or remove the scale first).
    """
    if not is_splat_object(obj):
        raise ValueError(f"object {obj.name!r} is not an ExGS splat object")
    scene = _read_mesh(_mesh_of(obj))
    if not world_space:
        return scene
    matrix = np.array(obj.matrix_world, dtype=np.float64)
    check_transform(obj, matrix)
    return scene.transformed(matrix)


def check_transform(obj: bpy.types.Object, matrix: np.ndarray) -> None:
    """ValueError naming the object and the fix when its Gaussians cannot follow this world matrix."""
    try:
        decompose_similarity(matrix)
    except ValueError as error:
        raise ValueError(
            f"object {obj.name!r}: {error}. Set its Scale X, Y and Z to one value (Sidebar > Item; also check "
            "its parents); Apply Scale does not resize the Gaussians") from None


def splat_problem(obj: bpy.types.Object) -> str | None:
    """One line when a splat object lost its Gaussians (e.g. its display modifier was applied), else None."""
    mesh = _mesh_of(obj)
    if len(mesh.vertices) == 0 and mesh.get(PAYLOAD_PROPERTY) is not None:
        return None  # linked from a .blend that keeps the payload: F12 and export decode it
    missing = [name for name in ("opacity", "scale_0", "rot_0", "f_dc_0") if mesh.attributes.get(name) is None]
    return f"{obj.name!r} has no {', '.join(missing)}. {APPLIED_MODIFIER_HINT}" if missing else None


def replace_splat_data(obj: bpy.types.Object, scene: GaussianScene) -> None:
    """Swap the Gaussians of a splat object in place; the object, its transform, name and materials stay."""
    if not is_splat_object(obj):
        raise ValueError(f"object {obj.name!r} is not an ExGS splat object")
    mesh = _mesh_of(obj)
    mesh.clear_geometry()  # keeps the materials and the custom properties; _fill_mesh rewrites ours
    _fill_mesh(mesh, scene)
    mesh.update()
    _set_display_ratio(obj)
    obj.update_tag()


def splat_info(obj: bpy.types.Object) -> dict[str, Any]:
    """Facts for panels and the render engine: count, sh_degree and splat_data.facts_info's."""
    mesh = _mesh_of(obj)
    return {**facts_info(mesh), "count": len(mesh.vertices), "sh_degree": int(mesh.get("exgs_sh_degree", 0))}


def _mesh_of(obj: bpy.types.Object) -> bpy.types.Mesh:
    mesh = obj.original.data
    if not isinstance(mesh, bpy.types.Mesh):
        raise ValueError(f"object {obj.name!r} is not an ExGS splat object (it has no mesh)")
    return mesh


# --- attributes ---------------------------------------------------------------------------------------------


def attribute_names(sh_degree: int) -> list[str]:
    """The FLOAT attribute names of a splat mesh of this SH degree (INRIA .ply property names)."""
    rest = 3 * (num_sh_bases(sh_degree) - 1)
    return (
        ["f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(rest)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )


def _sh_row(name: str, k: int) -> int:
    """Row of an SH attribute in the (3K, N) transposed SH block (rows ordered coefficient-major, then channel)."""
    if name.startswith("f_dc_"):
        return int(name[5:])
    index = int(name[7:])  # f_rest_i, channel-major in the file: i = channel * (K - 1) + (coefficient - 1)
    channel, coefficient = divmod(index, k - 1)
    return (1 + coefficient) * 3 + channel


def _columns(scene: SplitScene) -> Iterator[tuple[str, np.ndarray]]:
    """Every FLOAT attribute's values as a contiguous row, in attribute_names' order, each made when it is reached
    (a transposed copy per block, not per column): the SH columns are taken from `scene`, so each can go once it
    is written (a 10M SH-3 import held all 1.8 GB of them beside the mesh's)."""
    base = scene.base
    dc_rows = _transposed(base.sh[:, 0, :])
    for channel in range(3):
        yield f"f_dc_{channel}", dc_rows[channel]
    del dc_rows
    for index in range(3 * (num_sh_bases(scene.sh_degree) - 1)):  # f_rest_i, channel-major as in the file
        yield f"f_rest_{index}", scene.take(f"f_rest_{index}")
    yield "opacity", base.opacity_logits
    scale_rows, rot_rows = _transposed(base.log_scales), _transposed(base.quats)
    for i in range(3):
        yield f"scale_{i}", scale_rows[i]
    for i in range(4):
        yield f"rot_{i}", rot_rows[i]


def _transposed(array: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """array.T as a new contiguous float32 array, copied in cache-sized blocks (5x faster than one copy)."""
    out = np.empty((array.shape[1], array.shape[0]), np.float32)
    if array.shape[0] >= array.shape[1]:
        for start in range(0, array.shape[0], chunk):
            out[:, start : start + chunk] = array[start : start + chunk].T
    else:
        for start in range(0, array.shape[1], chunk):
            out[start : start + chunk] = array[:, start : start + chunk].T
    return out


def _fill_mesh(mesh: bpy.types.Mesh, scene: GaussianScene | SplitScene) -> None:
    fill_geometry(mesh, scene)
    write_facts(mesh, scene)


def fill_geometry(mesh: bpy.types.Mesh, scene: GaussianScene | SplitScene) -> None:
    """Add `scene`'s Gaussians to an empty mesh: positions, the splat attributes and the display colour (a
    SplitScene is left without its SH columns).

    Deterministic: the same scene always gives the same bytes (a .blend rebuilds meshes from their payload)."""
    split = SplitScene.of(scene)
    mesh.vertices.add(len(split))
    _position(mesh).data.foreach_set("vector", _flat(split.base.means))
    for name, values in _columns(split):
        attribute = cast(bpy.types.FloatAttribute, mesh.attributes.new(name, "FLOAT", "POINT"))
        attribute.data.foreach_set("value", _flat(values))
        del values  # a column taken from the SplitScene goes here, before the next one is made
    color = cast(bpy.types.FloatColorAttribute, mesh.color_attributes.new(COLOR_ATTRIBUTE, "FLOAT_COLOR", "POINT"))
    color.data.foreach_set("color", _flat(_display_colors(split.base)))
    mesh.color_attributes.active_color_name = COLOR_ATTRIBUTE
    mesh.color_attributes.default_color_name = COLOR_ATTRIBUTE


def _display_colors(scene: GaussianScene) -> np.ndarray:
    """RGBA of the SH0 colours, scene-linear, computed CHUNK Gaussians at a time (its temporaries were 0.7 GB at
    10M Gaussians)."""
    rgba = np.ones((len(scene), 4), np.float32)
    for start in range(0, len(scene), CHUNK):
        srgb = np.clip(sh0_to_rgb(scene.sh[start : start + CHUNK, 0, :]), 0.0, 1.0).astype(np.float32)
        rgba[start : start + CHUNK, :3] = np.where(srgb <= 0.04045, srgb / np.float32(12.92),
                                                   ((srgb + 0.055) / 1.055) ** np.float32(2.4))
    return rgba


def _read_mesh(mesh: bpy.types.Mesh) -> GaussianScene:
    if len(mesh.vertices) == 0 and mesh.get(PAYLOAD_PROPERTY) is not None:
        decoded = payload_scene(mesh)  # a mesh linked from a saved .blend stays as saved: decode it here
        scene = GaussianScene(decoded.means, decoded.quats, decoded.log_scales, decoded.opacity_logits, decoded.sh)
    else:
        scene = _read_attributes(mesh)
    return read_facts(mesh, scene)


def _read_attributes(mesh: bpy.types.Mesh) -> GaussianScene:
    count = len(mesh.vertices)
    degree = int(mesh.get("exgs_sh_degree", 0))
    k = num_sh_bases(degree)
    names = attribute_names(degree)
    sh_rows = np.empty((3 * k, count), np.float32)
    other_rows = np.empty((8, count), np.float32)  # opacity, scale_0..2, rot_0..3
    for name in names:
        row = sh_rows[_sh_row(name, k)] if name.startswith("f_") else other_rows[names.index(name) - 3 * k]
        _read_float(mesh, name, row)
    means = np.empty(count * 3, np.float32)
    _position(mesh).data.foreach_get("vector", means)
    scene = GaussianScene(
        means.reshape(count, 3),
        _transposed(other_rows[4:8]),
        _transposed(other_rows[1:4]),
        other_rows[0],
        _transposed(sh_rows).reshape(count, k, 3),
    )
    return scene


def _read_float(mesh: bpy.types.Mesh, name: str, out: np.ndarray) -> None:
    """Fill `out` (contiguous float32, one value per vertex) with a point FLOAT attribute."""
    attribute = mesh.attributes.get(name)
    if attribute is None or attribute.data_type != "FLOAT" or attribute.domain != "POINT":
        raise ValueError(f"mesh {mesh.name!r}: the splat attribute {name!r} is missing or not a point FLOAT. "
                         f"{APPLIED_MODIFIER_HINT}")
    cast(bpy.types.FloatAttribute, attribute).data.foreach_get("value", out)


def _position(mesh: bpy.types.Mesh) -> bpy.types.FloatVectorAttribute:
    return cast(bpy.types.FloatVectorAttribute, mesh.attributes["position"])


def _flat(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32).reshape(-1)


# --- display (Geometry Nodes points + material) -------------------------------------------------------------


def _add_display_modifier(obj: bpy.types.Object) -> None:
    modifier = cast(bpy.types.NodesModifier, obj.modifiers.new(MODIFIER_NAME, "NODES"))
    modifier.node_group = _display_node_group()
    _set_display_ratio(obj)


def _set_display_ratio(obj: bpy.types.Object) -> None:
    modifier = obj.modifiers.get(MODIFIER_NAME)
    group = _display_node_group()
    socket = next((item for item in group.interface.items_tree if getattr(item, "name", "") == RATIO_INPUT), None)
    if modifier is None or socket is None:
        return
    count = len(_mesh_of(obj).vertices)
    set_modifier_input(modifier, getattr(socket, "identifier"), min(1.0, DISPLAY_BUDGET / max(count, 1)))


def _display_material() -> bpy.types.Material:
    material = bpy.data.materials.get(MATERIAL_NAME)
    if material is not None:
        return material
    material = bpy.data.materials.new(MATERIAL_NAME)
    material.use_nodes = True
    nodes = material.node_tree.nodes
    shader = nodes.get("Principled BSDF")
    attribute = _new(nodes, "ShaderNodeAttribute", attribute_type="GEOMETRY", attribute_name=COLOR_ATTRIBUTE)
    attribute.location = (-300, 300)
    if shader is not None:
        material.node_tree.links.new(attribute.outputs["Color"], shader.inputs["Base Color"])
    return material


def _new(nodes: bpy.types.Nodes, kind: str, **settings: Any) -> bpy.types.Node:
    """A new node of type `kind` with its node-specific properties (operation, data_type...) set."""
    node = nodes.new(kind)
    for name, value in settings.items():
        setattr(node, name, value)
    return node


def _required(tree: bpy.types.NodeTree | None) -> bpy.types.NodeTree:
    if tree is None:
        raise RuntimeError("Blender returned no node tree")
    return tree


def _set_default(socket: bpy.types.NodeSocket, value: Any) -> None:
    # default_value exists on every value socket subclass, not on the NodeSocket base type.
    setattr(socket, "default_value", value)


def _display_node_group() -> bpy.types.NodeTree:
    existing = bpy.data.node_groups.get(NODE_GROUP_NAME)
    if existing is not None:
        return existing
    group = _required(bpy.data.node_groups.new(NODE_GROUP_NAME, "GeometryNodeTree"))
    interface = cast(Any, group.interface)  # fake-bpy-module types socket_type as Literal['DEFAULT'] only
    interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    factor = interface.new_socket(RADIUS_INPUT, in_out="INPUT", socket_type="NodeSocketFloat")
    factor.default_value = 1.0
    factor.min_value = 0.0
    ratio = interface.new_socket(RATIO_INPUT, in_out="INPUT", socket_type="NodeSocketFloat")
    ratio.default_value, ratio.min_value, ratio.max_value = 1.0, 0.0, 1.0
    interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    nodes, links = group.nodes, group.links
    group_in = _new(nodes, "NodeGroupInput")
    group_out = _new(nodes, "NodeGroupOutput")
    to_points = _new(nodes, "GeometryNodeMeshToPoints")
    links.new(group_in.outputs[0], to_points.inputs["Mesh"])
    links.new(_radius_field(group, group_in.outputs[1]), to_points.inputs["Radius"])
    shown = _new(nodes, "FunctionNodeRandomValue", data_type="BOOLEAN")
    links.new(group_in.outputs[2], shown.inputs["Probability"])
    links.new(output_of_type(shown, "BOOLEAN"), to_points.inputs["Selection"])
    geometry = _without_gaussian_attributes(group, to_points.outputs["Points"])
    # Workbench (Solid mode) colours only meshes by attribute, not point clouds: draw each point as a tiny
    # tetrahedron that carries the point's colour.
    tetrahedron = _new(nodes, "GeometryNodeMeshCone")
    _set_default(tetrahedron.inputs["Vertices"], 3)
    _set_default(tetrahedron.inputs["Radius Top"], 0.0)
    _set_default(tetrahedron.inputs["Radius Bottom"], 1.0)
    _set_default(tetrahedron.inputs["Depth"], 1.5)
    instance = _new(nodes, "GeometryNodeInstanceOnPoints")
    radius = _new(nodes, "GeometryNodeInputRadius")
    links.new(geometry, instance.inputs["Points"])
    links.new(tetrahedron.outputs["Mesh"], instance.inputs["Instance"])
    links.new(radius.outputs["Radius"], instance.inputs["Scale"])
    realize = _new(nodes, "GeometryNodeRealizeInstances")
    links.new(instance.outputs["Instances"], realize.inputs["Geometry"])
    # Joined after an emptied copy of the original mesh, the result keeps the mesh's active colour attribute.
    emptied = _new(nodes, "GeometryNodeDeleteGeometry", domain="POINT")
    index = _new(nodes, "GeometryNodeInputIndex")
    links.new(index.outputs["Index"], emptied.inputs["Selection"])  # keeps vertex 0 only
    links.new(group_in.outputs[0], emptied.inputs["Geometry"])
    join = _new(nodes, "GeometryNodeJoinGeometry")
    links.new(realize.outputs["Geometry"], join.inputs["Geometry"])
    links.new(_without_gaussian_attributes(group, emptied.outputs["Geometry"]), join.inputs["Geometry"])
    set_material = _new(nodes, "GeometryNodeSetMaterial")
    _set_default(set_material.inputs["Material"], _display_material())
    links.new(join.outputs["Geometry"], set_material.inputs["Geometry"])
    links.new(set_material.outputs["Geometry"], group_out.inputs[0])
    return group


def _without_gaussian_attributes(group: bpy.types.NodeTree, geometry: bpy.types.NodeSocket) -> bpy.types.NodeSocket:
    """The display geometry keeps only position, radius and colour (the copies would cost memory per vertex)."""
    for pattern in ("f_*", "scale_*", "rot_*", "opacity"):
        remove = _new(group.nodes, "GeometryNodeRemoveAttribute")
        if "Pattern Mode" in remove.inputs:  # a menu socket since Blender 5.0, a node property before
            _set_default(remove.inputs["Pattern Mode"], "Wildcard")
        else:
            setattr(remove, "pattern_mode", "WILDCARD")
        _set_default(remove.inputs["Name"], pattern)
        group.links.new(geometry, remove.inputs["Geometry"])
        geometry = remove.outputs["Geometry"]
    return geometry


def _radius_field(group: bpy.types.NodeTree, factor: bpy.types.NodeSocket) -> bpy.types.NodeSocket:
    """exp(mean of the three log-scales) * factor: each point as large as its Gaussian's geometric-mean sigma."""
    nodes, links = group.nodes, group.links
    scales = []
    for i in range(3):
        named = _new(nodes, "GeometryNodeInputNamedAttribute", data_type="FLOAT")
        _set_default(named.inputs["Name"], f"scale_{i}")
        scales.append(named.outputs["Attribute"])
    total = scales[0]
    for scale in scales[1:]:
        add = _new(nodes, "ShaderNodeMath", operation="ADD")
        links.new(total, add.inputs[0])
        links.new(scale, add.inputs[1])
        total = add.outputs[0]
    mean = _new(nodes, "ShaderNodeMath", operation="MULTIPLY")
    _set_default(mean.inputs[1], 1.0 / 3.0)
    links.new(total, mean.inputs[0])
    exponent = _new(nodes, "ShaderNodeMath", operation="EXPONENT")
    links.new(mean.outputs[0], exponent.inputs[0])
    scaled = _new(nodes, "ShaderNodeMath", operation="MULTIPLY")
    links.new(exponent.outputs[0], scaled.inputs[0])
    links.new(factor, scaled.inputs[1])
    return scaled.outputs[0]
