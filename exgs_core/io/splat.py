"""antimatter15 .splat: 32 bytes per Gaussian, no header, no SH beyond the DC colour.

Record: float32 x y z, float32 linear scales, uint8 R G B A (A = sigmoid(opacity)), uint8 quaternion w x y z
stored as q/|q| * 128 + 128. Records are sorted by descending exp(sum of log-scales) * sigmoid(opacity), as
antimatter15's convert.py sorts them.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from exgs_core.errors import SceneFormatError
from exgs_core.fileio import atomic_write
from exgs_core.io.ply import FormatWarning
from exgs_core.scene import GaussianScene
from exgs_core.sh import rgb_to_sh0, sh0_to_rgb

SPLAT_RECORD = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rotation", "u1", 4)])
TEXT_BYTES = set(b"\t\n\r") | set(range(0x20, 0x7F))


def read_splat(path: str | os.PathLike) -> GaussianScene:
    size = os.path.getsize(path)
    if size == 0:
        raise SceneFormatError(path, "the .splat file is empty (0 Gaussians)")
    if size % SPLAT_RECORD.itemsize:
        raise SceneFormatError(
            path, f"not a .splat file: its size, {size} bytes, is not a multiple of the 32-byte record"
        )
    with open(path, "rb") as handle:
        head = handle.read(256)
    if set(head) <= TEXT_BYTES:
        raise SceneFormatError(path, "not a .splat file: it starts with text, not binary 32-byte records")
    records = np.fromfile(path, dtype=SPLAT_RECORD)
    _check_scales(path, records["scale"])
    scene = _decode(records)
    scene.metadata.update(format="splat", source_bytes=size)
    return scene


def _check_scales(path: str | os.PathLike, scales: np.ndarray) -> None:
    # Linear scales of a real splat are >= 0; negative or NaN ones mean the bytes are not a .splat at all.
    bad = ~(scales >= 0)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise SceneFormatError(
            path,
            f"not a valid .splat file: {len(rows)} records have negative or NaN scales (first at record {rows[0]})",
        )


def _decode(records: np.ndarray) -> GaussianScene:
    with np.errstate(divide="ignore"):
        log_scales = np.log(records["scale"])
    rgba = records["rgba"].astype(np.float32) / 255.0
    alpha = rgba[:, 3].astype(np.float64)
    with np.errstate(divide="ignore"):
        # exact logit: alpha 255 gives +inf and 0 gives -inf, as real files hold them
        opacity = np.log(alpha) - np.log1p(-alpha)
    quats = (records["rotation"].astype(np.float32) - 128.0) / 128.0
    return GaussianScene(
        means=records["position"],
        quats=_normalised(quats),
        log_scales=log_scales,
        opacity_logits=opacity,
        sh=rgb_to_sh0(rgba[:, None, :3]),
    )


def _normalised(quats: np.ndarray) -> np.ndarray:
    """Unit quaternions; a zero quaternion becomes the identity."""
    norms = np.linalg.norm(quats, axis=1, keepdims=True)
    unit = quats / np.maximum(norms, 1e-12)
    unit[norms[:, 0] < 1e-12] = (1.0, 0.0, 0.0, 0.0)
    return unit


def splat_order(scene: GaussianScene) -> np.ndarray:
    """convert.py's order: descending exp(scale_0 + scale_1 + scale_2) / (1 + exp(-opacity)), in float32 as
    convert.py computes it; ties keep the scene order."""
    log_scales, logits = scene.log_scales, scene.opacity_logits
    with np.errstate(over="ignore", invalid="ignore"):
        key = np.exp(log_scales[:, 0] + log_scales[:, 1] + log_scales[:, 2]) / (1 + np.exp(-logits))
    return np.argsort(-key, kind="stable")


def encode_splat(scene: GaussianScene) -> np.ndarray:
    """The 32-byte records of a scene, in file order."""
    order = splat_order(scene)
    records = np.empty(len(scene), SPLAT_RECORD)
    records["position"] = scene.means[order]
    records["scale"] = np.exp(scene.log_scales[order])
    rgba = np.empty((len(scene), 4), np.float32)
    rgba[:, :3] = sh0_to_rgb(scene.sh[order, 0, :])
    rgba[:, 3] = scene.opacities()[order]
    # convert.py truncates; rounding halves the error and makes read -> write reproduce colour and alpha bytes
    records["rgba"] = _to_bytes(rgba * 255.0)
    records["rotation"] = _to_bytes(scene.unit_quats()[order] * 128.0 + 128.0)
    return records


def _to_bytes(values: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.nan_to_num(values, nan=0.0)), 0, 255).astype(np.uint8)


def write_splat(scene: GaussianScene, path: str | os.PathLike) -> None:
    if scene.sh_degree > 0:
        warnings.warn(
            f"{path}: .splat stores no view-dependent colour; SH degree {scene.sh_degree} is dropped to 0",
            FormatWarning,
            stacklevel=3,
        )
    records = encode_splat(scene)
    with atomic_write(Path(path)) as handle:
        handle.write(records.tobytes())
