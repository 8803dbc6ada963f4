"""Where Blender's Python API differs between the versions ExGS supports (4.5 LTS to 5.3), decided once, here.

Every branch is on a feature, never on a version number: code elsewhere asks these names, not bpy.app.version.
"""

from __future__ import annotations

from typing import Any

import bpy

def _enum_items(rna: Any, name: str) -> set[str]:
    prop = rna.properties.get(name)
    return {item.identifier for item in prop.enum_items} if prop is not None else set()


# Blender 5.3+: a PointCloud can be a Gaussian splat (`PointCloud.type`), drawn as splats by the viewport, EEVEE
# and Cycles, and sized from Python (`PointCloud.resize`). Before, point clouds are plain points and ExGS keeps
# its mesh-based splat object.
_POINTCLOUD_RNA: Any = bpy.types.PointCloud.bl_rna
NATIVE_SPLATS: bool = "GAUSSIAN_SPLAT" in _enum_items(_POINTCLOUD_RNA, "type") and "resize" in _POINTCLOUD_RNA.functions

# The foreach_get/foreach_set property of each attribute data type a splat may hold (FLOAT4 is new in 5.3:
# native splats keep their DC colour and opacity in one).
ATTRIBUTE_KEYS: dict[str, str] = {
    "FLOAT": "value", "INT": "value", "BOOLEAN": "value", "QUATERNION": "value",
    "FLOAT_VECTOR": "vector", "FLOAT4": "vector", "FLOAT_COLOR": "color", "BYTE_COLOR": "color",
}
ATTRIBUTE_WIDTHS: dict[str, int] = {
    "FLOAT": 1, "INT": 1, "BOOLEAN": 1, "QUATERNION": 4, "FLOAT_VECTOR": 3, "FLOAT4": 4, "FLOAT_COLOR": 4,
    "BYTE_COLOR": 4,
}
# The 4-float attribute type native splats store their base radiance in (FLOAT4 in 5.3; a colour before).
BASE_COLOR_TYPE = "FLOAT4" if "FLOAT4" in _enum_items(bpy.types.Attribute.bl_rna, "data_type") else "FLOAT_COLOR"


def output_of_type(node: bpy.types.Node, socket_type: str) -> Any:
    """The first output socket of `node` of this type ('BOOLEAN', 'VALUE', ...): nodes like Random Value had one
    output per data type before 5.3 and have one that changes type since, so outputs are never found by index."""
    for socket in node.outputs:
        if socket.type == socket_type and socket.enabled:
            return socket
    for socket in node.outputs:
        if socket.type == socket_type:
            return socket
    raise LookupError(f"node {node.bl_idname} has no {socket_type} output")


# Blender 5.3 keeps a Geometry Nodes modifier's input values in `modifier.properties.inputs.<identifier>.value`;
# before, they were ID properties of the modifier (`modifier[identifier]`).
_MODIFIER_INPUTS: bool = "properties" in bpy.types.NodesModifier.bl_rna.properties


def set_modifier_input(modifier: Any, identifier: str, value: Any) -> None:
    if _MODIFIER_INPUTS:
        getattr(modifier.properties.inputs, identifier).value = value
    else:
        modifier[identifier] = value

