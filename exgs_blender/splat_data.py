"""The ExGS facts a splat object carries, whatever its kind: custom properties on its data (a Mesh for the
mesh-based splat object, a PointCloud for a native one), so linked duplicates share them.

- "exgs_splat" (SPLAT_VERSION): the data was made by ExGS; "exgs_sh_degree"; "exgs_source_name" and
  "exgs_source_bytes" (the file it came from; a float, as files pass 2 GiB);
- "exgs_inria_ratio" and INPUT_COUNT_PROPERTY: how compressed the Gaussians are (set by .exgs files made by
  compression), so an export keeps the ratio;
- RESTORATION_PROPERTY: the fitted restoration (Restoration.to_text()) of the .exgs file;
- PAYLOAD_PROPERTY (.exgs bytes the Gaussians were decoded from), PAYLOAD_MATRIX_PROPERTY (applied after
  decoding) and FINGERPRINT_PROPERTY (of the data as decoded): a saved .blend keeps the bytes instead of the
  expanded attributes while they are unchanged (blend_payload.py), and Export to .exgs writes them as they are.
No bpy types beyond ID custom properties: both kinds (splat_object.py, native_splats.py) use this module.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from exgs_core.errors import ExgsError
from exgs_core.io.exgs import Restoration, decode_exgs, inria_ratio, read_exgs_header
from exgs_core.scene import GaussianScene, SplitScene

SPLAT_VERSION = 1
MARKER_PROPERTY = "exgs_splat"
RESTORATION_PROPERTY = "exgs_restoration"
INPUT_COUNT_PROPERTY = "exgs_input_count"
RATIO_PROPERTY = "exgs_inria_ratio"
PAYLOAD_PROPERTY = "exgs_payload"
PAYLOAD_MATRIX_PROPERTY = "exgs_payload_matrix"
FINGERPRINT_PROPERTY = "exgs_payload_fingerprint"
PAYLOAD_PROPERTIES = (PAYLOAD_PROPERTY, PAYLOAD_MATRIX_PROPERTY, FINGERPRINT_PROPERTY)


def is_exgs_data(data: Any) -> bool:
    """True for a Mesh or PointCloud made by ExGS (import or Compress)."""
    return data is not None and hasattr(data, "get") and data.get(MARKER_PROPERTY) is not None


def write_facts(data: Any, scene: GaussianScene | SplitScene) -> None:
    """Mark `data` as holding `scene` and store its facts; a payload kept for earlier Gaussians is dropped."""
    data[MARKER_PROPERTY] = SPLAT_VERSION
    data["exgs_sh_degree"] = scene.sh_degree
    for key in (*PAYLOAD_PROPERTIES, RATIO_PROPERTY, INPUT_COUNT_PROPERTY):
        if data.get(key) is not None:
            del data[key]
    ratio = inria_ratio(scene)
    if ratio is not None:
        data[RATIO_PROPERTY] = ratio
        data[INPUT_COUNT_PROPERTY] = int(scene.metadata["exgs"]["compression"]["input_count"])
    if "source_name" in scene.metadata:
        data["exgs_source_name"] = str(scene.metadata["source_name"])
    if "source_bytes" in scene.metadata:
        # A float (exact to 2^53): ID properties' integers are 32-bit, and a 10M-Gaussian .ply passes 2 GiB
        data["exgs_source_bytes"] = float(int(scene.metadata["source_bytes"]))
    restoration = scene.metadata.get("restoration")  # fitted to these Gaussians: kept in the .blend
    if isinstance(restoration, Restoration):
        data[RESTORATION_PROPERTY] = restoration.to_text()
    elif data.get(RESTORATION_PROPERTY) is not None:
        del data[RESTORATION_PROPERTY]


def read_facts(data: Any, scene: GaussianScene) -> GaussianScene:
    """`scene` (read from `data`'s geometry) with the stored facts in its metadata: source, the compression
    entry of the payload's header (so an export keeps the ratio and how it was made) and the restoration."""
    if data.get("exgs_source_name") is not None:
        scene.metadata["source_name"] = str(data["exgs_source_name"])
    if data.get("exgs_source_bytes") is not None:
        scene.metadata["source_bytes"] = int(data["exgs_source_bytes"])
    if data.get(INPUT_COUNT_PROPERTY) is not None:
        compression = payload_compression(data) or {}
        compression["input_count"] = int(data[INPUT_COUNT_PROPERTY])
        scene.metadata["exgs"] = {"compression": compression}
    restoration = stored_restoration(data)
    if restoration is not None:
        scene.metadata["restoration"] = restoration
    return scene


def facts_info(data: Any) -> dict[str, Any]:
    """inria_ratio (None: never compressed), restoration_strength and restoration_gain_db (None without a fitted
    restoration), source_name and source_bytes (0 when unknown)."""
    ratio = data.get(RATIO_PROPERTY)
    restoration = stored_restoration(data)
    validated = restoration.info.get("validated", {}) if restoration is not None else {}
    return {
        "inria_ratio": float(ratio) if ratio is not None else None,
        "restoration_strength": restoration.strength if restoration is not None else None,
        "restoration_gain_db": validated.get("equal_bytes_gain_db", validated.get("gain_db")),
        "source_name": str(data.get("exgs_source_name", "")),
        "source_bytes": int(data.get("exgs_source_bytes", 0)),
    }


def stored_restoration(data: Any) -> Restoration | None:
    """The fitted restoration kept with this data (from its .exgs file), or None."""
    text = data.get(RESTORATION_PROPERTY)
    if text is None:
        return None
    try:
        return Restoration.from_text(str(text))
    except ValueError:
        return None  # a damaged property renders raw rather than failing the render


def payload_bytes(data: Any) -> bytes | None:
    payload = data.get(PAYLOAD_PROPERTY)
    return None if payload is None else bytes(payload)


def payload_matrix(data: Any) -> np.ndarray:
    """The matrix applied to the payload's Gaussians after decoding (identity when none was stored)."""
    matrix = data.get(PAYLOAD_MATRIX_PROPERTY)
    return np.eye(4) if matrix is None else np.array(matrix, dtype=np.float64).reshape(4, 4)


def payload_scene(data: Any) -> GaussianScene:
    """The Gaussians of the .exgs payload kept with the data, in object space (as the kinds' fill takes them)."""
    scene = decode_exgs(bytes(data[PAYLOAD_PROPERTY]))
    return scene if data.get(PAYLOAD_MATRIX_PROPERTY) is None else scene.transformed(payload_matrix(data))


def payload_compression(data: Any) -> dict[str, Any] | None:
    """The `compression` entry of the payload's header (how the file was made), or None without a payload."""
    payload = payload_bytes(data)
    if payload is None:
        return None
    try:
        entry = read_exgs_header(payload).get("compression")
    except (ExgsError, ValueError):
        return None
    return dict(entry) if isinstance(entry, dict) else None
