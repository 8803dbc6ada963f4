"""A saved .blend keeps compressed splat objects as their .exgs bytes, not as expanded float attributes.

Splat data (a Mesh or a native PointCloud) made from .exgs bytes (imported from an .exgs file, or the result of
Compress) carries those bytes in the custom property PAYLOAD_PROPERTY (a bytes ID property: stored as is, about
the size of the .exgs file), the matrix applied after decoding (Compress works in world space) and a
fingerprint of the data as made (splat_data.py).
- save_pre: all splat data whose fingerprint still matches is emptied (its attributes cost ~250 bytes per
  Gaussian in the file); data edited since (points moved, attributes added, new Gaussians) keeps its
  attributes, and its stale payload is dropped.
- save_post (and save_post_fail): the emptied data is decoded again, which gives back exactly what it held: the
  session goes on unchanged.
- load_post and blend_import_post (append/link): empty data with a payload is decoded again with the same
  code as the import, hence the same bytes. Data linked from a library cannot be written; splats.scene_of
  decodes its payload when F12 or export read it.
Blender's autosave, quit.blend and memory-file undo write the file without the save handlers: those copies hold
the expanded attributes (and the payload), which a load keeps as they are.
"""

from __future__ import annotations

import hashlib
from typing import Any, cast

import bpy
import numpy as np
from bpy.app.handlers import persistent

from .compat import ATTRIBUTE_KEYS, ATTRIBUTE_WIDTHS
from .splat_data import (
    FINGERPRINT_PROPERTY, MARKER_PROPERTY, PAYLOAD_MATRIX_PROPERTY, PAYLOAD_PROPERTIES, PAYLOAD_PROPERTY,
    payload_matrix, payload_scene,
)
from .splats import fill_data, point_count

_DTYPES: dict[str, Any] = {"BOOLEAN": bool, "INT": np.int32}  # numpy type of the attribute types not float32


def attach_payload(mesh: Any, data: bytes, matrix: np.ndarray | None = None) -> None:
    """Keep `data` (the .exgs bytes the splat data `mesh` was just filled from, transformed by `matrix` when
    given) with it."""
    mesh[PAYLOAD_PROPERTY] = bytes(data)
    if matrix is not None:
        mesh[PAYLOAD_MATRIX_PROPERTY] = [float(v) for v in np.asarray(matrix, dtype=np.float64).reshape(-1)]
    mesh[FINGERPRINT_PROPERTY] = fingerprint(mesh) or ""


def fingerprint(mesh: Any) -> str | None:
    """A hash of every point and every non-internal attribute of splat data (a points-only mesh or a point
    cloud); None for anything else (edges, faces, shape keys, attribute types splat data never has): such data
    is never emptied."""
    if isinstance(mesh, bpy.types.Mesh) and (
            len(mesh.edges) or len(mesh.polygons) or len(mesh.loops) or mesh.shape_keys is not None):
        return None
    count = point_count(mesh)
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


def matches_payload(mesh: Any) -> bool:
    """True when the mesh holds exactly what its payload decodes to (nothing was edited since)."""
    stored = mesh.get(FINGERPRINT_PROPERTY)
    return mesh.get(PAYLOAD_PROPERTY) is not None and bool(stored) and fingerprint(mesh) == stored


def unchanged_payload(obj: bpy.types.Object, to_file: np.ndarray) -> bytes | None:
    """The .exgs bytes kept with a splat object when they still describe it in the file coordinates `to_file`
    maps world space to (same Gaussians, and the object placed where its payload puts them); else None."""
    data: Any = obj.original.data
    if data.get(PAYLOAD_PROPERTY) is None or not (matches_payload(data) or data.library is not None):
        return None
    placed = to_file @ np.array(obj.matrix_world, dtype=np.float64) @ payload_matrix(data)
    return bytes(data[PAYLOAD_PROPERTY]) if np.allclose(placed, np.eye(4), atol=1e-6) else None


def expand(mesh: Any) -> None:
    """Fill emptied splat data from its payload again."""
    fill_data(mesh, payload_scene(mesh))
    if fingerprint(mesh) != mesh.get(FINGERPRINT_PROPERTY):
        # Only possible when this machine's floating point differs from the one that made the mesh (the
        # payload's transform): the Gaussians are the payload's, within rounding.
        print(f"ExGS: {mesh.name!r} decoded from its payload differs in rounding from the saved session")
        mesh[FINGERPRINT_PROPERTY] = fingerprint(mesh) or ""


# --- the handlers --------------------------------------------------------------------------------------------


_emptied: list[str] = []  # (Mesh or PointCloud) name_full of the data save_pre emptied


def _splat_data() -> list[Any]:
    """Every local splat Mesh and PointCloud ExGS made."""
    found: list[Any] = [*bpy.data.meshes, *bpy.data.pointclouds]
    return [data for data in found if data.get(MARKER_PROPERTY) is not None and data.library is None]


@persistent
def _on_save_pre(*_: Any) -> None:
    _emptied.clear()
    for mesh in _splat_data():
        if mesh.get(PAYLOAD_PROPERTY) is None or getattr(mesh, "is_editmode", False) or point_count(mesh) == 0:
            continue
        if not matches_payload(mesh):
            for key in PAYLOAD_PROPERTIES:  # edited: the attributes are the truth now
                if mesh.get(key) is not None:
                    del mesh[key]
            continue
        if isinstance(mesh, bpy.types.PointCloud):
            mesh.resize(0)
        else:
            mesh.clear_geometry()  # keeps the materials and the custom properties
        _emptied.append(mesh.name_full)


@persistent
def _on_save_post(*_: Any) -> None:
    for name in _emptied:  # decoded again: the same bytes as before the save, so the session goes on unchanged
        data = bpy.data.meshes.get(name) or bpy.data.pointclouds.get(name)
        if data is not None and point_count(data) == 0:
            expand(data)
    _emptied.clear()


@persistent
def _on_load(*_: Any) -> None:
    for mesh in _splat_data():
        if point_count(mesh) == 0 and mesh.get(PAYLOAD_PROPERTY) is not None:
            try:
                expand(mesh)
            except ValueError as error:  # a damaged payload: say so, keep the (empty) object
                print(f"ExGS: cannot decode the Gaussians of {mesh.name!r} from the .blend: {error}")


def _read(attribute: bpy.types.Attribute, count: int) -> np.ndarray | None:
    kind = attribute.data_type
    if kind not in ATTRIBUTE_KEYS or attribute.domain != "POINT":
        return None
    values = np.empty(count * ATTRIBUTE_WIDTHS[kind], _DTYPES.get(kind, np.float32))
    cast(Any, attribute).data.foreach_get(ATTRIBUTE_KEYS[kind], values)
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
