"""Checks shared by every reader of untrusted input: JSON documents, non-finite values, and the sizes a user
may ask for (image size, frame count) with their environment overrides.

numpy only (Blender's own Python imports it).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import numpy as np

from exgs_core.scene import SplitScene

# A JSON input (meta.json, transforms.json, a weights config) is read whole: refuse absurd sizes first.
MAX_JSON_BYTES = 256 << 20
# Image sides and frame counts a transforms.json may ask for; raised with these environment variables.
MAX_IMAGE_SIDE = 16384
MAX_IMAGE_PIXELS = 8192 * 8192
MAX_FRAMES = 10_000
ENV_MAX_IMAGE_SIDE = "EXGS_MAX_IMAGE_SIDE"
ENV_MAX_IMAGE_PIXELS = "EXGS_MAX_IMAGE_PIXELS"
ENV_MAX_FRAMES = "EXGS_MAX_FRAMES"

# Attributes that may hold one kind of infinity (as splat-transform's --filter-nan allows): opacity logits
# (alpha 0 or 1 in a .splat) and -inf log-scales (flat splats). Everything else must be finite.
_ALLOWED_INFINITY = {"opacity_logits": (True, True), "log_scales": (True, False)}  # (-inf ok, +inf ok)
SCENE_ATTRIBUTES = {
    "means": "positions", "quats": "rotations", "log_scales": "scales", "opacity_logits": "opacities",
    "sh": "colours (SH coefficients)",
}


class JsonError(ValueError):
    """A JSON document is malformed; the message says what and where (callers prefix "X is not valid JSON: ")."""


def parse_json(data: bytes | str, allow_constants: bool = False) -> Any:
    """A JSON document, refusing what Python's json accepts but no other reader does: NaN/Infinity constants
    (unless `allow_constants`: Python tools write them in transforms.json), duplicate object keys, nesting too
    deep for the parser; JsonError with a one-line reason."""
    if len(data) > MAX_JSON_BYTES:
        raise JsonError(f"{len(data)} bytes of JSON, more than the {MAX_JSON_BYTES} allowed")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise JsonError(f"it is not UTF-8 text ({error})") from None

    def reject_constant(name: str) -> None:
        raise JsonError(f"{name} is not a JSON number")

    try:
        constant = float if allow_constants else reject_constant
        return json.loads(data, parse_constant=constant, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as error:
        raise JsonError(f"{error.msg} at line {error.lineno}, column {error.colno}") from None
    except RecursionError:
        raise JsonError("nested too deeply") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise JsonError(f"the key {key!r} appears twice in one object")
        result[key] = value
    return result


def is_number(value: Any) -> bool:
    """A JSON number (int or float, not bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --- non-finite values ---------------------------------------------------------------------------------------


def non_finite_rows(scene: Any) -> dict[str, np.ndarray]:
    """For each attribute with values outside the allowed set, the boolean mask of its offending rows (a
    SplitScene's f_rest columns count as its "sh")."""
    if isinstance(scene, SplitScene):
        found = non_finite_rows(scene.base)
        for column in scene.rest.values():
            rows = _non_finite_values("sh", column.reshape(-1, 1))
            if rows is not None:
                found["sh"] = found["sh"] | rows if "sh" in found else rows
        return found
    found = {}
    for name in SCENE_ATTRIBUTES:
        rows = _non_finite_values(name, getattr(scene, name).reshape(len(scene), -1))
        if rows is not None:
            found[name] = rows
    return found


def _non_finite_values(name: str, values: np.ndarray) -> np.ndarray | None:
    """The mask of the rows of `values` (N, M), values of the scene attribute `name`, holding a value outside the
    allowed set, or None when there is none."""
    # Fast path: one NaN or inf anywhere makes the sum non-finite (an overflow only sends us the exact way).
    with np.errstate(invalid="ignore", over="ignore"):
        total = values.sum()
    if np.isfinite(total):
        return None
    bad = ~np.isfinite(values)
    if name in _ALLOWED_INFINITY and bad.any():
        negative_ok, positive_ok = _ALLOWED_INFINITY[name]
        bad &= ~((values == -np.inf) & negative_ok | (values == np.inf) & positive_ok)
    rows = bad.any(axis=1)
    return rows if rows.any() else None


def describe_non_finite(found: dict[str, np.ndarray]) -> str:
    """'12 Gaussians have NaN or infinite log_scales (the first at index 3), ...' for non_finite_rows' result."""
    parts = []
    for name, rows in found.items():
        index = np.flatnonzero(rows)
        counted = "1 Gaussian has" if len(index) == 1 else f"{len(index)} Gaussians have"
        parts.append(f"{counted} NaN or infinite {SCENE_ATTRIBUTES[name]} (the first at index {index[0]})")
    return "; ".join(parts)


def drop_non_finite(scene: Any) -> tuple[Any, int]:
    """(the scene without Gaussians holding NaN/forbidden infinities or a zero rotation, how many went)."""
    keep = np.ones(len(scene), bool)
    for rows in non_finite_rows(scene).values():
        keep &= ~rows
    keep &= np.any(scene.quats != 0, axis=1)
    dropped = int(len(scene) - keep.sum())
    return (scene.subset(keep) if dropped else scene), dropped


# --- limits on what a file may ask for -----------------------------------------------------------------------


def limit(default: int, variable: str) -> int:
    """`default`, or the positive integer in environment variable `variable` (ValueError if it is not one)."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"environment variable {variable}={text!r} must be a positive whole number")
    return value


def check_image_size(width: int, height: int, fail: Callable[[str], Exception]) -> None:
    """Raise fail(reason) for an image larger than the limits (each names its override)."""
    side = limit(MAX_IMAGE_SIDE, ENV_MAX_IMAGE_SIDE)
    if width > side or height > side:
        raise fail(f"image size {width}x{height} exceeds {side} pixels per side (set {ENV_MAX_IMAGE_SIDE} to allow more)")
    pixels = limit(MAX_IMAGE_PIXELS, ENV_MAX_IMAGE_PIXELS)
    if width * height > pixels:
        raise fail(
            f"image size {width}x{height} exceeds {pixels} pixels (set {ENV_MAX_IMAGE_PIXELS} to allow more)"
        )


def check_frame_count(count: int, fail: Callable[[str], Exception]) -> None:
    frames = limit(MAX_FRAMES, ENV_MAX_FRAMES)
    if count > frames:
        raise fail(f"{count} frames exceed the limit of {frames} (set {ENV_MAX_FRAMES} to allow more)")
