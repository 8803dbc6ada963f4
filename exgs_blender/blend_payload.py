"""A saved .blend keeps compressed splat objects as their .exgs bytes, not as expanded float attributes.

A splat mesh made from .exgs bytes (imported from an .exgs file, or the result of Compress) carries those bytes
in the custom property PAYLOAD_PROPERTY (a bytes ID property: stored as is, about the size of the .exgs file),
the matrix applied after decoding (Compress works in world space) and a fingerprint of the mesh as made.
- save_pre: every splat mesh whose fingerprint still matches is emptied (its attributes cost ~250 bytes per
  Gaussian in the file); a mesh edited since (points moved, attributes added, new Gaussians) keeps its
  attributes, and its stale payload is dropped.
- save_post (and save_post_fail): the emptied meshes get back exactly what they held: the session goes on unchanged.
- load_post and blend_import_post (append/link): empty meshes with a payload are decoded again with the same
  code as the import, hence the same bytes. Meshes linked from a library cannot be written; scene_from_object
  decodes their payload when F12 or export read them.
Blender's autosave, quit.blend and memory-file undo write the file without the save handlers: those copies hold
the expanded attributes (and the payload), which a load keeps as they are.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, cast

import bpy
import numpy as np
from bpy.app.handlers import persistent

from .splat_object import (
    FINGERPRINT_PROPERTY, PAYLOAD_MATRIX_PROPERTY, PAYLOAD_PROPERTIES, PAYLOAD_PROPERTY, fill_geometry, payload_scene,
)

# data_type -> (foreach property, values per element, numpy type) of the point attributes a splat mesh may hold.
_LAYOUTS: dict[str, tuple[str, int, Any]] = {
    "FLOAT": ("value", 1, np.float32),
    "FLOAT_VECTOR": ("vector", 3, np.float32),
    "FLOAT_COLOR": ("color", 4, np.float32),
    "BOOLEAN": ("value", 1, bool),
    "INT": ("value", 1, np.int32),
}


def attach_payload(mesh: bpy.types.Mesh, data: bytes, matrix: np.ndarray | None = None) -> None:
    """Keep `data` (the .exgs bytes the mesh was just filled from, transformed by `matrix` when given) with it."""
    mesh[PAYLOAD_PROPERTY] = bytes(data)
    if matrix is not None:
        mesh[PAYLOAD_MATRIX_PROPERTY] = [float(v) for v in np.asarray(matrix, dtype=np.float64).reshape(-1)]
    mesh[FINGERPRINT_PROPERTY] = fingerprint(mesh) or ""


def fingerprint(mesh: bpy.types.Mesh) -> str | None:
    """A hash of every vertex and every non-internal attribute of a points-only mesh; None for anything else
    (edges, faces, shape keys, attribute types a splat mesh never has): such a mesh is never emptied."""
    if len(mesh.edges) or len(mesh.polygons) or len(mesh.loops) or mesh.shape_keys is not None:
        return None
    count = len(mesh.vertices)
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{count}".encode())
    for attribute in sorted(mesh.attributes, key=lambda a: a.name):
        if attribute.name.startswith("."):  # selection and hiding: UI state, not Gaussians
            continue
        values = _read(attribute, count)
        if values is None:
            return None
        digest.update(f"|{attribute.name}|{attribute.domain}|{attribute.data_type}|".encode())
        digest.update(values.tobytes())
    return digest.hexdigest()


def matches_payload(mesh: bpy.types.Mesh) -> bool:
    """True when the mesh holds exactly what its payload decodes to (nothing was edited since)."""
    stored = mesh.get(FINGERPRINT_PROPERTY)
    return mesh.get(PAYLOAD_PROPERTY) is not None and bool(stored) and fingerprint(mesh) == stored


def expand(mesh: bpy.types.Mesh) -> None:
    """Fill an emptied splat mesh from its payload again."""
    fill_geometry(mesh, payload_scene(mesh))
    mesh.update()
    if fingerprint(mesh) != mesh.get(FINGERPRINT_PROPERTY):
        # Only possible when this machine's floating point differs from the one that made the mesh (the
        # payload's transform): the Gaussians are the payload's, within rounding.
        print(f"ExGS: {mesh.name!r} decoded from its payload differs in rounding from the saved session")
        mesh[FINGERPRINT_PROPERTY] = fingerprint(mesh) or ""


# --- the handlers --------------------------------------------------------------------------------------------


@dataclass
class _Stash:
    """What save_pre removed from one mesh, to put back in save_post."""

    attributes: list[tuple[str, str, np.ndarray]]  # (name, data_type, values) in the mesh's order, position first
    active_color: str
    default_color: str


_stashed: dict[str, _Stash] = {}


def _splat_meshes() -> list[bpy.types.Mesh]:
    return [mesh for mesh in bpy.data.meshes if mesh.get("exgs_splat") is not None and mesh.library is None]


@persistent
def _on_save_pre(*_: Any) -> None:
    _stashed.clear()
    for mesh in _splat_meshes():
        if mesh.get(PAYLOAD_PROPERTY) is None or mesh.is_editmode or len(mesh.vertices) == 0:
            continue
        if not matches_payload(mesh):
            for key in PAYLOAD_PROPERTIES:  # edited: the attributes are the truth now
                if mesh.get(key) is not None:
                    del mesh[key]
            continue
        stash = _stash(mesh)
        if stash is not None:
            _stashed[mesh.name_full] = stash
            mesh.clear_geometry()


@persistent
def _on_save_post(*_: Any) -> None:
    for name, stash in _stashed.items():
        mesh = bpy.data.meshes.get(name)
        if mesh is not None and len(mesh.vertices) == 0:
            _restore(mesh, stash)
    _stashed.clear()


@persistent
def _on_load(*_: Any) -> None:
    for mesh in _splat_meshes():
        if len(mesh.vertices) == 0 and mesh.get(PAYLOAD_PROPERTY) is not None:
            try:
                expand(mesh)
            except ValueError as error:  # a damaged payload: say so, keep the (empty) object
                print(f"ExGS: cannot decode the Gaussians of {mesh.name!r} from the .blend: {error}")


def _stash(mesh: bpy.types.Mesh) -> _Stash | None:
    count = len(mesh.vertices)
    attributes: list[tuple[str, str, np.ndarray]] = []
    for attribute in mesh.attributes:
        values = _read(attribute, count)
        if values is None:
            return None
        attributes.append((attribute.name, attribute.data_type, values))
    colors = mesh.color_attributes
    return _Stash(attributes, colors.active_color_name or "", colors.default_color_name or "")


def _restore(mesh: bpy.types.Mesh, stash: _Stash) -> None:
    count = len(stash.attributes[0][2]) // _LAYOUTS[stash.attributes[0][1]][1]
    mesh.vertices.add(count)
    for name, data_type, values in stash.attributes:
        attribute = mesh.attributes.get(name) or mesh.attributes.new(name, data_type, "POINT")  # type: ignore[arg-type]
        cast(Any, attribute).data.foreach_set(_LAYOUTS[data_type][0], values)
    if stash.active_color:
        mesh.color_attributes.active_color_name = stash.active_color
    if stash.default_color:
        mesh.color_attributes.default_color_name = stash.default_color
    mesh.update()


def _read(attribute: bpy.types.Attribute, count: int) -> np.ndarray | None:
    layout = _LAYOUTS.get(attribute.data_type)
    if layout is None or attribute.domain != "POINT":
        return None
    prop, size, dtype = layout
    values = np.empty(count * size, dtype)
    cast(Any, attribute).data.foreach_get(prop, values)
    return values


_HANDLERS = (
    ("save_pre", _on_save_pre), ("save_post", _on_save_post), ("save_post_fail", _on_save_post),
    ("load_post", _on_load), ("blend_import_post", _on_load),
)


def register() -> None:
    for event, handler in _HANDLERS:
        getattr(bpy.app.handlers, event).append(handler)


def unregister() -> None:
    for event, handler in _HANDLERS:
        handlers = getattr(bpy.app.handlers, event)
        if handler in handlers:
            handlers.remove(handler)
