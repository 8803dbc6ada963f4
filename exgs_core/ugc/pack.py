"""Quantise a GaussianScene into byte planes for the .exgs container, and back (docs/format.md §3).

Every attribute is quantised uniformly, the Gaussians are put in Morton (Z-order) order of their quantised
positions, and each attribute is stored as separate byte planes (structure of arrays; for values wider than
8 bits the high bytes come before the low bytes), so the container's entropy coder sees long runs of similar
bytes. Positions are stored as differences of consecutive sorted Morton codes; colours in an orthonormal
luma/chroma basis. The header fields returned by `pack_scene` hold every dequantisation parameter.

numpy only: the Blender side reads .exgs files without torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, TypeGuard

import numpy as np

from exgs_core.scene import GaussianScene
from exgs_core.sh import SH_C0, num_sh_bases
from exgs_core.side_by_side import LARGE, run_side_by_side

LAYOUT = "planes-v1"
MAX_SH_DEGREE = 3

# Components of a unit quaternion other than the largest lie in [-1/sqrt(2), 1/sqrt(2)].
_SMALLEST_THREE_RANGE = 1.0 / math.sqrt(2.0)
# The three components kept by smallest-three, for each index of the dropped (largest) component.
_KEPT = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])
# Decoded opacity stays strictly inside (0, 1) so logits are finite (255 of 255 decodes to 1 - 1e-7).
_OPACITY_EPS = 1e-7
# Orthonormal colour basis (rows): luma (R+G+B)/sqrt(3) and two chroma axes. Colours of a Gaussian are
# strongly correlated across channels, so the chroma planes hold small values that entropy-code well, while
# an orthonormal basis keeps the RMS quantisation error of the RGB values unchanged.
COLOR_BASIS = np.array(
    [
        [1.0 / math.sqrt(3.0), 1.0 / math.sqrt(3.0), 1.0 / math.sqrt(3.0)],
        [1.0 / math.sqrt(2.0), 0.0, -1.0 / math.sqrt(2.0)],
        [1.0 / math.sqrt(6.0), -2.0 / math.sqrt(6.0), 1.0 / math.sqrt(6.0)],
    ]
)


@dataclass(frozen=True)
class PackSettings:
    """Bits per value of each attribute; the defaults come from bench/pack.py (see docs/format.md §3.7)."""

    position_bits: int = 14  # per axis, over the (contracted) bounding box of the means
    rotation_bits: int = 7  # per smallest-three component
    scale_bits: int = 7  # per axis, log-scale over its (floored) range
    opacity_bits: int = 8  # sigmoid(logit) over [0, 1]
    color_bits: int = 8  # DC: the step is the largest RGB channel range / (2^bits - 1)
    sh_bits: tuple[int, int, int] = (5, 4, 4)  # SH bands 1, 2, 3 (luma/chroma values within +-absmax)
    # Log-scales more than scale_floor below the median log-scale are raised to it: e^-8 (1/3000) of a
    # typical Gaussian's size does not show at any sensible zoom (real files hold values below -20).
    scale_floor: float = 8.0
    # SH rest values are clipped to this percentile of |value| per band (a few outliers would waste the range).
    sh_percentile: float = 99.9
    # Positions outside the core box (percentiles p..100-p per axis, widened by core_margin times its width on
    # each side) are stored on a logarithmic scale, so far floaters do not coarsen the grid of the scene.
    core_percentile: float = 5.0
    core_margin: float = 0.5
    morton: bool = True  # False keeps the input order (for comparison only: it compresses much worse)

    def __post_init__(self) -> None:
        for name in ("position_bits", "scale_bits", "opacity_bits"):
            _check_bits(name, getattr(self, name), 16)
        _check_bits("rotation_bits", self.rotation_bits, 16, least=2)
        _check_bits("color_bits", self.color_bits, 15)
        if len(self.sh_bits) != 3:
            raise ValueError(f"PackSettings.sh_bits needs 3 values (bands 1, 2, 3), got {self.sh_bits!r}")
        for bits in self.sh_bits:
            _check_bits("sh_bits", bits, 15)
        if not 50.0 <= self.sh_percentile <= 100.0:
            raise ValueError(f"PackSettings.sh_percentile must be in [50, 100], got {self.sh_percentile}")
        if not (0.0 <= self.core_percentile < 50.0 and self.core_margin >= 0.0):
            raise ValueError("PackSettings.core_percentile must be in [0, 50) and core_margin >= 0")
        if not (math.isfinite(self.scale_floor) and self.scale_floor >= 0):
            raise ValueError("PackSettings.scale_floor must be a finite number >= 0")

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["sh_bits"] = list(self.sh_bits)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "PackSettings":
        """Settings from to_dict's output; unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        kwargs = {key: value for key, value in values.items() if key in known}
        if "sh_bits" in kwargs:
            kwargs["sh_bits"] = tuple(kwargs["sh_bits"])
        return cls(**kwargs)


def _check_bits(name: str, bits: Any, most: int, least: int = 1) -> None:
    if not _is_int(bits) or not least <= bits <= most:
        raise ValueError(f"PackSettings.{name} must be an integer number of bits in {least}..{most}, got {bits!r}")


# --- public API ----------------------------------------------------------------------------------------------


def pack_scene(
    scene: GaussianScene, sh_degree: int | None = None, settings: PackSettings | None = None
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Quantise `scene` into (header fields, raw sections); SH bands above `sh_degree` are dropped.

    `sh_degree=None` keeps the scene's degree; a degree above the scene's is capped (no zero bands are stored).
    The Gaussians come back from unpack_scene in the order `packing_order` gives.
    Raises ValueError for an empty scene or NaN / infinite means, rotations or SH (nothing sensible to store).
    """
    settings = settings or PackSettings()
    degree = _output_degree(scene, sh_degree)
    _check_finite(scene, degree)
    grid = _position_grid(scene, settings)
    order = _order(grid, settings)

    packers: dict[str, tuple[str, Callable[[], tuple[Any, bytes]]]] = {  # section: (quantisation key, packer)
        "means": ("means", lambda: (grid["entry"], delta_planes(grid["codes"][order], 3 * settings.position_bits))),
        "quats": ("quats", lambda: _pack_rotations(scene.quats[order], settings.rotation_bits)),
        "scales": ("log_scales", lambda: _pack_scales(scene.log_scales[order], settings)),
        "opacity": ("opacity", lambda: _pack_opacity(scene.opacities()[order], settings.opacity_bits)),
        "sh_dc": ("sh_dc", lambda: _pack_dc(scene.sh[order, 0, :], degree, settings.color_bits)),
    }
    if degree > 0:
        packers["sh_rest"] = ("sh_rest", lambda: _pack_sh_rest(scene.sh[order], degree, settings))
    # numpy releases the GIL in its array loops and the sections do not depend on one another: the same bytes
    packed = run_side_by_side({name: packer for name, (_, packer) in packers.items()},
                              len(scene) >= LARGE)
    quant = {key: packed[name][0] for name, (key, _) in packers.items()}
    sections = {name: packed[name][1] for name in packers}

    lo, hi = scene.bounds()
    header = {
        "count": len(scene),
        "sh_degree": degree,
        "layout": LAYOUT,
        "order": "morton" if settings.morton else "input",
        "bounds": {"min": _floats(lo), "max": _floats(hi)},
        "quantisation": quant,
    }
    return header, sections


def packing_order(scene: GaussianScene, settings: PackSettings | None = None) -> np.ndarray:
    """The permutation pack_scene applies: Gaussian i of the unpacked scene is Gaussian order[i] of `scene`."""
    settings = settings or PackSettings()
    return _order(_position_grid(scene, settings), settings)


def unpack_scene(header: dict[str, Any], sections: dict[str, bytes]) -> GaussianScene:
    """The scene held by pack_scene's output; ValueError if the fields and sections do not fit together."""
    check_pack_header(header)
    for name, size in expected_section_sizes(header).items():
        if len(sections.get(name, b"")) != size:
            raise ValueError(f"section {name!r} holds {len(sections.get(name, b''))} bytes, expected {size}")
    count, degree, quant = header["count"], header["sh_degree"], header["quantisation"]
    means = _unpack_means(sections["means"], count, quant["means"])
    quats = _unpack_rotations(sections["quats"], count, quant["quats"]["bits"])
    log_scales = _unpack_range(sections["scales"], count, quant["log_scales"])
    logits = _unpack_opacity(sections["opacity"], count, quant["opacity"]["bits"])
    sh = np.zeros((count, num_sh_bases(degree), 3), np.float32)
    sh[:, 0, :] = _unpack_dc(sections["sh_dc"], count, quant["sh_dc"])
    if degree > 0:
        sh[:, 1:, :] = _unpack_sh_rest(sections["sh_rest"], count, degree, quant["sh_rest"])
    return GaussianScene(means, quats, log_scales, logits, sh, {"format": "exgs"})


# --- header checks (the reader runs them before it decodes anything) ----------------------------------------


def check_pack_header(header: dict[str, Any]) -> None:
    """ValueError naming the first field of the header that unpack_scene could not use."""
    count = header.get("count")
    if not _is_int(count) or count < 1:
        raise ValueError(f"'count' must be a positive integer, got {_show(count)}")
    degree = header.get("sh_degree")
    if not _is_int(degree) or not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"'sh_degree' must be an integer in 0..{MAX_SH_DEGREE}, got {_show(degree)}")
    if header.get("layout") != LAYOUT:
        raise ValueError(f"unknown layout {_show(header.get('layout'))}; this reader knows {LAYOUT!r}")
    quant = header.get("quantisation")
    if not isinstance(quant, dict):
        raise ValueError("'quantisation' must be an object")
    _check_entry(quant, "means", {"min": 3, "max": 3, "center": 3, "radius": 3})
    if any(value < 0 for value in quant["means"]["radius"]):
        raise ValueError("'quantisation.means.radius' must not be negative")
    _check_entry(quant, "quats", {}, least_bits=2)
    _check_entry(quant, "log_scales", {"min": 3, "max": 3})
    _check_entry(quant, "opacity", {})
    _check_entry(quant, "sh_dc", {"min": 3, "step": None}, most_bits=15)
    if quant["sh_dc"]["step"] < 0:
        raise ValueError("'quantisation.sh_dc.step' must not be negative")
    for name in ("means", "log_scales"):
        if any(a > b for a, b in zip(quant[name]["min"], quant[name]["max"])):
            raise ValueError(f"'quantisation.{name}': a minimum is above its maximum")
    if degree > 0:
        entry = quant.get("sh_rest")
        if not isinstance(entry, dict):
            raise ValueError("'quantisation.sh_rest' must be an object")
        bits, absmax = entry.get("bits"), entry.get("absmax")
        if not (isinstance(bits, list) and len(bits) == degree and all(_is_int(b) and 1 <= b <= 15 for b in bits)):
            raise ValueError(f"'quantisation.sh_rest.bits' must list {degree} bit counts in 1..15")
        if not (isinstance(absmax, list) and len(absmax) == degree and all(_is_finite(v) and v >= 0 for v in absmax)):
            raise ValueError(f"'quantisation.sh_rest.absmax' must list {degree} finite non-negative numbers")


def expected_section_sizes(header: dict[str, Any]) -> dict[str, int]:
    """Decoded byte length of every section a header (checked by check_pack_header) calls for."""
    count, quant = header["count"], header["quantisation"]
    sizes = {
        "means": count * _code_bytes(3 * quant["means"]["bits"]),
        "quats": count * (1 + 3 * _value_bytes(quant["quats"]["bits"])),
        "scales": count * 3 * _value_bytes(quant["log_scales"]["bits"]),
        "opacity": count * _value_bytes(quant["opacity"]["bits"]),
        "sh_dc": count * 3 * _value_bytes(quant["sh_dc"]["bits"] + 1),
    }
    if header["sh_degree"] > 0:
        bits = quant["sh_rest"]["bits"]
        sizes["sh_rest"] = sum(count * 3 * (2 * band + 1) * _value_bytes(b + 1) for band, b in enumerate(bits, start=1))
    return sizes


def _check_entry(
    quant: dict, name: str, lists: dict[str, int | None], most_bits: int = 16, least_bits: int = 1
) -> None:
    """quant[name] is an object with integer 'bits' and finite numbers (lists of the given lengths)."""
    entry = quant.get(name)
    if not isinstance(entry, dict):
        raise ValueError(f"'quantisation.{name}' must be an object")
    bits = entry.get("bits")
    if not _is_int(bits) or not least_bits <= bits <= most_bits:
        raise ValueError(
            f"'quantisation.{name}.bits' must be an integer in {least_bits}..{most_bits}, got {_show(bits)}"
        )
    for key, length in lists.items():
        value = entry.get(key)
        if length is None:
            if not _is_finite(value):
                raise ValueError(f"'quantisation.{name}.{key}' must be a finite number")
        elif not (isinstance(value, list) and len(value) == length and all(_is_finite(v) for v in value)):
            raise ValueError(f"'quantisation.{name}.{key}' must list {length} finite numbers")


def _show(value: Any) -> str:
    """repr of a header value for an error message, shortened."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    if _is_int(value):
        return abs(value) < 1e300
    return isinstance(value, float) and math.isfinite(value)


# --- quantisation primitives ---------------------------------------------------------------------------------


def quantise(values: np.ndarray, lo: Any, hi: Any, bits: int) -> np.ndarray:
    """Round (N, C) values clipped to [lo, hi] (per column) onto 2^bits evenly spaced levels -> uint16."""
    levels = (1 << bits) - 1
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    span = hi - lo
    factor = np.divide(levels, span, out=np.zeros_like(span), where=span > 0)
    scaled = (np.clip(values, lo, hi) - lo) * factor
    return np.clip(np.rint(scaled), 0, levels).astype(np.uint16)


def dequantise(q: np.ndarray, lo: Any, hi: Any, bits: int) -> np.ndarray:
    """Inverse of quantise, as float64."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    return lo + q.astype(np.float64) * ((hi - lo) / ((1 << bits) - 1))


def to_planes(q: np.ndarray, bits: int) -> bytes:
    """(N, C) integers of `bits` bits as byte planes: column by column, high byte first."""
    q = q.reshape(q.shape[0], -1)
    planes = []
    for column in range(q.shape[1]):
        for shift in range(8 * (_value_bytes(bits) - 1), -1, -8):
            planes.append(((q[:, column] >> shift) & 0xFF).astype(np.uint8))
    return np.concatenate(planes).tobytes() if planes else b""


def from_planes(data: bytes, count: int, columns: int, bits: int) -> np.ndarray:
    """Inverse of to_planes: (count, columns) uint16; values above 2^bits - 1 are clipped to it."""
    nbytes = _value_bytes(bits)
    planes = np.frombuffer(data, np.uint8, count * columns * nbytes).reshape(columns, nbytes, count)
    out = np.zeros((count, columns), np.uint32)
    for byte in range(nbytes):
        out = (out << np.uint32(8)) | planes[:, byte, :].T.astype(np.uint32)
    return np.minimum(out, (1 << bits) - 1).astype(np.uint16)


def _value_bytes(bits: int) -> int:
    return 1 if bits <= 8 else 2


def _code_bytes(bits: int) -> int:
    return (bits + 7) // 8


def _floats(values: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(values, np.float64).reshape(-1)]


# --- positions -----------------------------------------------------------------------------------------------


def _position_grid(scene: GaussianScene, settings: PackSettings) -> dict[str, Any]:
    """Header entry, core box and Morton codes (input order) of the quantised positions."""
    means = scene.means.astype(np.float64)
    center, radius = core_box(means, settings.core_percentile, settings.core_margin)
    contracted = contract(means, center, radius)
    lo, hi = contracted.min(axis=0), contracted.max(axis=0)
    codes = morton_codes(quantise(contracted, lo, hi, settings.position_bits))
    entry = {
        "bits": settings.position_bits,
        "encoding": "morton-delta",
        "center": _floats(center),
        "radius": _floats(radius),
        "min": _floats(lo),
        "max": _floats(hi),
    }
    return {"entry": entry, "codes": codes}


def _order(grid: dict[str, Any], settings: PackSettings) -> np.ndarray:
    codes = grid["codes"]
    return np.argsort(codes, kind="stable") if settings.morton else np.arange(codes.shape[0])


def _unpack_means(data: bytes, count: int, entry: dict[str, Any]) -> np.ndarray:
    bits = entry["bits"]
    q = np.minimum(morton_decode(undelta_planes(data, count, 3 * bits)), (1 << bits) - 1)
    with np.errstate(over="ignore", invalid="ignore"):
        means = expand(dequantise(q, entry["min"], entry["max"], bits), entry["center"], entry["radius"])
        means = means.astype(np.float32)
    if not np.all(np.isfinite(means)):
        raise ValueError("the position range in 'quantisation.means' decodes to non-finite positions")
    return means


def core_box(means: np.ndarray, percentile: float, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """(center, half-width) per axis of the box outside which positions are stored logarithmically.

    The box spans the percentiles [p, 100 - p] widened by `margin` times its width on each side, clipped to
    the bounding box; a scene without far outliers gets its whole bounding box (no contraction at all).
    """
    lo, hi = means.min(axis=0), means.max(axis=0)
    p_lo, p_hi = np.percentile(means, [percentile, 100.0 - percentile], axis=0)
    width = p_hi - p_lo
    core_lo = np.maximum(p_lo - margin * width, lo)
    core_hi = np.minimum(p_hi + margin * width, hi)
    return 0.5 * (core_lo + core_hi), 0.5 * (core_hi - core_lo)


def contract(x: np.ndarray, center: Any, radius: Any) -> np.ndarray:
    """Per axis: x - center within `radius`, beyond it sign * r * (1 + ln(|d| / r)), so the step grows with |d|."""
    d: np.ndarray = x - np.asarray(center, np.float64)
    r = np.broadcast_to(np.asarray(radius, np.float64), d.shape)
    a = np.abs(d)
    outside = (a > r) & (r > 0)
    # The logarithm only where it is used: the core box holds nearly all points (2 s a pack at 5M Gaussians).
    d[outside] = np.sign(d[outside]) * r[outside] * (1.0 + np.log(a[outside] / r[outside]))
    return d


def expand(y: np.ndarray, center: Any, radius: Any) -> np.ndarray:
    """Inverse of contract."""
    r = np.asarray(radius, np.float64)
    a = np.abs(y)
    outside = (a > r) & (r > 0)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        far = np.sign(y) * r * np.exp(a / r - 1.0)
    return np.asarray(center, np.float64) + np.where(outside, far, y)


def morton_codes(q: np.ndarray) -> np.ndarray:
    """Morton (Z-order) codes (uint64) of (N, 3) integers of up to 16 bits; x has the top bit of each triple."""
    code = np.zeros(q.shape[0], np.uint64)
    for axis in range(3):
        code |= _spread_bits(q[:, axis].astype(np.uint64)) << np.uint64(2 - axis)
    return code


def morton_decode(codes: np.ndarray) -> np.ndarray:
    """(N, 3) uint16 from Morton codes (inverse of morton_codes)."""
    out = np.empty((codes.shape[0], 3), np.uint16)
    for axis in range(3):
        out[:, axis] = _compact_bits(codes >> np.uint64(2 - axis))
    return out


def _spread_bits(v: np.ndarray) -> np.ndarray:
    """Insert two zero bits between the low 16 bits of each value (bit i moves to bit 3i)."""
    v = v & np.uint64(0xFFFF)
    v = (v | (v << np.uint64(16))) & np.uint64(0x0000FF0000FF)
    v = (v | (v << np.uint64(8))) & np.uint64(0x00F00F00F00F)
    v = (v | (v << np.uint64(4))) & np.uint64(0x0C30C30C30C3)
    v = (v | (v << np.uint64(2))) & np.uint64(0x249249249249)
    return v


def _compact_bits(v: np.ndarray) -> np.ndarray:
    """Inverse of _spread_bits: bits 0, 3, 6, ... gathered into 16 bits."""
    v = v & np.uint64(0x249249249249)
    v = (v | (v >> np.uint64(2))) & np.uint64(0x0C30C30C30C3)
    v = (v | (v >> np.uint64(4))) & np.uint64(0x00F00F00F00F)
    v = (v | (v >> np.uint64(8))) & np.uint64(0x0000FF0000FF)
    v = (v | (v >> np.uint64(16))) & np.uint64(0xFFFF)
    return v.astype(np.uint16)


def delta_planes(codes: np.ndarray, bits: int) -> bytes:
    """Differences of consecutive codes (modulo 2^64; small once sorted), as byte planes of `bits` bits."""
    deltas = np.diff(codes, prepend=np.uint64(0))
    shifts = range(8 * (_code_bytes(bits) - 1), -1, -8)
    return b"".join(((deltas >> np.uint64(s)) & np.uint64(0xFF)).astype(np.uint8).tobytes() for s in shifts)


def undelta_planes(data: bytes, count: int, bits: int) -> np.ndarray:
    """Inverse of delta_planes: the codes (uint64), by a wrapping cumulative sum."""
    nbytes = _code_bytes(bits)
    planes = np.frombuffer(data, np.uint8, count * nbytes).reshape(nbytes, count)
    deltas = np.zeros(count, np.uint64)
    for plane in planes:
        deltas = (deltas << np.uint64(8)) | plane.astype(np.uint64)
    return np.cumsum(deltas, dtype=np.uint64) & np.uint64((1 << bits) - 1)


# --- rotations -----------------------------------------------------------------------------------------------


def _pack_rotations(quats: np.ndarray, bits: int) -> tuple[dict[str, Any], bytes]:
    index, kept = encode_rotations(quats, bits)
    return {"bits": bits, "encoding": "smallest-three"}, index.tobytes() + to_planes(kept, bits)


def _unpack_rotations(data: bytes, count: int, bits: int) -> np.ndarray:
    index = np.frombuffer(data, np.uint8, count)
    return decode_rotations(index, from_planes(data[count:], count, 3, bits), bits)


def encode_rotations(quats: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Smallest-three: index of the largest |component| (uint8) and the other three quantised (N, 3).

    The quaternion is normalised and its sign flipped so the dropped component is positive (q and -q are the
    same rotation); a zero quaternion is the identity.
    """
    q = quats.astype(np.float64)
    norms = np.linalg.norm(q, axis=1, keepdims=True)
    q = np.where(norms > 1e-12, q / np.maximum(norms, 1e-300), np.array([1.0, 0.0, 0.0, 0.0]))
    index = np.argmax(np.abs(q), axis=1)
    q = np.where(np.take_along_axis(q, index[:, None], axis=1) < 0, -q, q)
    kept = np.take_along_axis(q, _KEPT[index], axis=1)
    half = (1 << (bits - 1)) - 1
    return index.astype(np.uint8), (np.rint(kept / rotation_step(bits)) + half).astype(np.uint16)


def rotation_step(bits: int) -> float:
    """Smallest-three step: 2^bits - 1 levels over [-1/sqrt(2), 1/sqrt(2)], with 0 exactly on a level.

    (Code 2^bits - 1 is unused: an even number of intervals puts a level at 0, where identity and
    axis-aligned rotations have their components.)
    """
    return 2.0 * _SMALLEST_THREE_RANGE / ((1 << bits) - 2)


def decode_rotations(index: np.ndarray, kept_q: np.ndarray, bits: int) -> np.ndarray:
    """Unit quaternions (N, 4) w, x, y, z from smallest-three; an index above 3 is read modulo 4."""
    half = (1 << (bits - 1)) - 1
    kept = np.clip((kept_q.astype(np.float64) - half) * rotation_step(bits), -1.0, 1.0)
    largest = np.sqrt(np.maximum(0.0, 1.0 - np.sum(kept * kept, axis=1)))
    index = index.astype(np.int64) % 4
    q = np.empty((index.shape[0], 4))
    np.put_along_axis(q, index[:, None], largest[:, None], axis=1)
    np.put_along_axis(q, _KEPT[index], kept, axis=1)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


# --- scales, opacity -----------------------------------------------------------------------------------------


def _pack_scales(log_scales: np.ndarray, settings: PackSettings) -> tuple[dict[str, Any], bytes]:
    lo, hi = scale_range(log_scales, settings.scale_floor)
    q = quantise(log_scales.astype(np.float64), lo, hi, settings.scale_bits)  # +-inf are clipped to the range
    return {"bits": settings.scale_bits, "min": _floats(lo), "max": _floats(hi)}, to_planes(q, settings.scale_bits)


def scale_range(log_scales: np.ndarray, floor_below_median: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis [lo, hi] of the finite log-scales, lo raised to median - floor_below_median (not above hi)."""
    values = log_scales.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(3), np.zeros(3)
    floor = float(np.median(values[finite])) - floor_below_median
    lo = np.where(finite, values, np.inf).min(axis=0)
    hi = np.where(finite, values, -np.inf).max(axis=0)
    lo = np.where(np.isfinite(lo), lo, floor)
    hi = np.where(np.isfinite(hi), hi, floor)
    return np.minimum(np.maximum(lo, floor), hi), hi


def _unpack_range(data: bytes, count: int, entry: dict[str, Any]) -> np.ndarray:
    bits = entry["bits"]
    return dequantise(from_planes(data, count, 3, bits), entry["min"], entry["max"], bits).astype(np.float32)


def _pack_opacity(alpha: np.ndarray, bits: int) -> tuple[dict[str, Any], bytes]:
    q = quantise(alpha.astype(np.float64)[:, None], [0.0], [1.0], bits)
    return {"bits": bits, "encoding": "sigmoid"}, to_planes(q, bits)


def _unpack_opacity(data: bytes, count: int, bits: int) -> np.ndarray:
    alpha = dequantise(from_planes(data, count, 1, bits), [0.0], [1.0], bits)[:, 0]
    alpha = np.clip(alpha, _OPACITY_EPS, 1.0 - _OPACITY_EPS)
    return (np.log(alpha) - np.log1p(-alpha)).astype(np.float32)


# --- colours -------------------------------------------------------------------------------------------------


def _pack_dc(dc: np.ndarray, degree: int, bits: int) -> tuple[dict[str, Any], bytes]:
    """DC in the orthonormal basis, one step for all three: the largest RGB channel range / (2^bits - 1).

    With no higher bands, colours below black render as black, so they are raised to it first. Values need
    up to bits + 1 bits (the luma axis spans up to sqrt(3) times a channel's range).
    """
    rgb = dc.astype(np.float64)
    if degree == 0:
        rgb = np.maximum(rgb, -0.5 / SH_C0)
    step = float(np.max(rgb.max(axis=0) - rgb.min(axis=0))) / ((1 << bits) - 1)
    t = rgb @ COLOR_BASIS.T
    lo = t.min(axis=0)
    q = np.rint((t - lo) / step) if step > 0 else np.zeros_like(t)
    q = np.clip(q, 0, (1 << (bits + 1)) - 1).astype(np.uint16)
    return {"bits": bits, "encoding": "orthonormal-luma-chroma", "min": _floats(lo), "step": step}, to_planes(
        q, bits + 1
    )


def _unpack_dc(data: bytes, count: int, entry: dict[str, Any]) -> np.ndarray:
    q = from_planes(data, count, 3, entry["bits"] + 1)
    t = np.asarray(entry["min"], np.float64) + q.astype(np.float64) * entry["step"]
    with np.errstate(over="ignore", invalid="ignore"):
        return (t @ COLOR_BASIS).astype(np.float32)


def _pack_sh_rest(sh: np.ndarray, degree: int, settings: PackSettings) -> tuple[dict[str, Any], bytes]:
    """Per band: RGB clipped to +-absmax, turned into the orthonormal basis, with step 2 absmax / (2^bits - 1).

    absmax is a percentile of |RGB value| in the band. Basis values lie within +-sqrt(3) absmax, so they are
    stored as q = round(value / step) + offset with offset = (2^bits - 1) * sqrt(3) / 2 rounded up, in bits + 1
    bits.
    """
    bits_list, absmax_list, planes = [], [], []
    for band in range(1, degree + 1):
        rgb = sh[:, num_sh_bases(band - 1) : num_sh_bases(band), :].astype(np.float64)
        absmax = float(np.percentile(np.abs(rgb), settings.sh_percentile))
        bits = settings.sh_bits[band - 1]
        values = (np.clip(rgb, -absmax, absmax) @ COLOR_BASIS.T).reshape(sh.shape[0], -1)
        step = 2.0 * absmax / ((1 << bits) - 1)
        q = np.rint(values / step) if step > 0 else np.zeros_like(values)
        q = np.clip(q + _sh_offset(bits), 0, (1 << (bits + 1)) - 1).astype(np.uint16)
        planes.append(to_planes(q, bits + 1))
        bits_list.append(bits)
        absmax_list.append(absmax)
    return {"bits": bits_list, "absmax": absmax_list, "encoding": "orthonormal-luma-chroma"}, b"".join(planes)


def _sh_offset(bits: int) -> int:
    return math.ceil(((1 << bits) - 1) * math.sqrt(3.0) / 2.0)


def _unpack_sh_rest(data: bytes, count: int, degree: int, entry: dict[str, Any]) -> np.ndarray:
    out = np.zeros((count, num_sh_bases(degree) - 1, 3), np.float32)
    offset = 0
    for band in range(1, degree + 1):
        width = 2 * band + 1
        bits, absmax = entry["bits"][band - 1], entry["absmax"][band - 1]
        size = count * 3 * width * _value_bytes(bits + 1)
        q = from_planes(data[offset : offset + size], count, 3 * width, bits + 1).astype(np.float64)
        values = (q - _sh_offset(bits)) * (2.0 * absmax / ((1 << bits) - 1))
        with np.errstate(over="ignore", invalid="ignore"):
            rgb = values.reshape(count, width, 3) @ COLOR_BASIS
        out[:, num_sh_bases(band - 1) - 1 : num_sh_bases(band) - 1, :] = rgb
        offset += size
    return out


# --- checks --------------------------------------------------------------------------------------------------


def _output_degree(scene: GaussianScene, sh_degree: int | None) -> int:
    if sh_degree is None:
        return scene.sh_degree
    if not _is_int(sh_degree) or sh_degree < 0:
        raise ValueError(f"sh_degree must be a non-negative integer, got {sh_degree!r}")
    return min(sh_degree, scene.sh_degree)


def _check_finite(scene: GaussianScene, degree: int) -> None:
    if len(scene) == 0:
        raise ValueError("cannot pack an empty scene (0 Gaussians)")
    checks = {"means": scene.means, "quats": scene.quats, "SH coefficients": scene.sh[:, : num_sh_bases(degree), :]}
    for name, values in checks.items():
        bad = ~np.isfinite(values).reshape(len(scene), -1).all(axis=1)
        if bad.any():
            first = int(np.argmax(bad))
            raise ValueError(f"{int(bad.sum())} Gaussians have NaN or infinite {name} (the first: #{first})")
    if np.isnan(scene.log_scales).any() or np.isnan(scene.opacity_logits).any():
        raise ValueError("the scene has NaN log-scales or opacity logits")
