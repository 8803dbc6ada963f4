"""PlayCanvas / SuperSplat .compressed.ply (the chunked layout of splat-transform).

Splats are Morton-sorted and grouped in chunks of 256. Element `chunk` holds per chunk the float32 min/max of
position, log-scale (clamped to +-20) and colour (0.5 + C0 * f_dc). Element `vertex` holds four uint32 per
splat: position 11-10-11 bits and log-scale 11-10-11 bits (unorm within the chunk range), rotation as 2 bits
for the index of the largest component then three 10-bit components (smallest three, x * sqrt(2)/2 + 0.5),
and colour 8-8-8-8 (RGB within the chunk range, A = sigmoid(opacity)). The optional element `sh` holds uchar
f_rest_i, channel-major as in the INRIA .ply, quantised as trunc((v / 8 + 0.5) * 256).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import numpy as np
from plyfile import PlyData, PlyElement

from exgs_core.errors import SceneFormatError
from exgs_core.fileio import atomic_write
from exgs_core.io.ply import check_body_size, read_ply_elements, read_ply_header
from exgs_core.scene import GaussianScene, SplitScene
from exgs_core.sh import SH_C0, f_rest_name, rgb_to_sh0

CHUNK_SIZE = 256
CHUNK_PROPERTIES = [
    "min_x", "min_y", "min_z", "max_x", "max_y", "max_z",
    "min_scale_x", "min_scale_y", "min_scale_z", "max_scale_x", "max_scale_y", "max_scale_z",
    "min_r", "min_g", "min_b", "max_r", "max_g", "max_b",
]
VERTEX_PROPERTIES = ["packed_position", "packed_rotation", "packed_scale", "packed_color"]
SCALE_LIMIT = 20.0
SQRT1_2 = np.sqrt(0.5)


# --- reading -------------------------------------------------------------------------------------

def read_compressed_ply(path: str | os.PathLike) -> GaussianScene:
    return cast(GaussianScene, _read(path, split=False))


def read_compressed_ply_split(path: str | os.PathLike) -> SplitScene:
    """read_compressed_ply's Gaussians as a SplitScene whose f_rest columns are separate arrays, decoded one at a
    time from the file's SH bytes (no (N, K, 3) block), with the same values."""
    return cast(SplitScene, _read(path, split=True))


def _read(path: str | os.PathLike, split: bool) -> GaussianScene | SplitScene:
    header = read_ply_header(path)
    chunk, vertex = header.element("chunk"), header.element("vertex")
    if chunk is None or vertex is None:
        raise SceneFormatError(path, "a compressed .ply needs the elements 'chunk' and 'vertex'")
    for element, required in ((chunk, CHUNK_PROPERTIES[:12]), (vertex, VERTEX_PROPERTIES)):
        missing = [name for name in required if name not in element.names]
        if missing:
            raise SceneFormatError(path, f"element '{element.name}' lacks the properties {', '.join(missing)}")
    if chunk.count != -(-vertex.count // CHUNK_SIZE):
        raise SceneFormatError(
            path, f"{chunk.count} chunks cannot hold {vertex.count} splats in chunks of {CHUNK_SIZE}"
        )
    sh_element = header.element("sh")
    if sh_element is not None:
        expected = [f"f_rest_{i}" for i in range(len(sh_element.names))]
        if sh_element.names != expected or len(expected) not in (9, 24, 45) or sh_element.count != vertex.count:
            raise SceneFormatError(
                path, f"element 'sh' has {len(expected)} properties and {sh_element.count} rows; "
                f"expected f_rest_0.. with 9, 24 or 45 properties and {vertex.count} rows"
            )
    file_size = os.path.getsize(path)
    check_body_size(path, header, file_size)
    data = read_ply_elements(path, header, ["chunk", "vertex", "sh"])
    scene = _decode(data["chunk"], data["vertex"], data.get("sh"), split)
    del data
    scene.metadata.update(format="compressed-ply", source_bytes=file_size)
    return scene


def _decode(chunks: np.ndarray, vertices: np.ndarray, sh_rows: np.ndarray | None,
            split: bool) -> GaussianScene | SplitScene:
    rest = 0 if sh_rows is None else len(sh_rows.dtype.names)
    # the Gaussians at SH 0 first, so that their float64 temporaries are gone before the SH columns are made
    scene, columns = SplitScene.to_fill(_decode_base(chunks, vertices), 1 + rest // 3, split)
    for name, out in columns.items():  # f_rest_i, channel-major as in the INRIA .ply
        q = np.asarray(sh_rows[name], dtype=np.float32)  # type: ignore[index]  # columns only when sh_rows
        n = np.where(q == 0, 0.0, np.where(q == 255, 1.0, (q + 0.5) / 256.0))
        out[:] = (n - 0.5) * 8.0
    return scene


def _decode_base(chunks: np.ndarray, vertices: np.ndarray) -> GaussianScene:
    """The Gaussians with their DC colour only (SH degree 0)."""
    count = len(vertices)
    index = np.arange(count) // CHUNK_SIZE

    def lerp(prefix: str, axes: str, t: np.ndarray) -> np.ndarray:
        lo = np.stack([chunks[f"min_{prefix}{a}"] for a in axes], axis=1).astype(np.float64)[index]
        hi = np.stack([chunks[f"max_{prefix}{a}"] for a in axes], axis=1).astype(np.float64)[index]
        return (lo * (1 - t) + hi * t).astype(np.float32)

    means = lerp("", "xyz", _unpack_111011(vertices["packed_position"]))
    log_scales = lerp("scale_", "xyz", _unpack_111011(vertices["packed_scale"]))
    color = _unpack_8888(vertices["packed_color"])
    rgb = lerp("", "rgb", color[:, :3]) if "min_r" in chunks.dtype.names else color[:, :3].astype(np.float32)
    with np.errstate(divide="ignore"):
        opacity = np.log(color[:, 3]) - np.log1p(-color[:, 3])
    return GaussianScene(means, _unpack_rotation(vertices["packed_rotation"]), log_scales, opacity,
                         rgb_to_sh0(rgb)[:, None, :])


def _unpack_unorm(values: np.ndarray, shift: int, bits: int) -> np.ndarray:
    top = (1 << bits) - 1
    return ((values.astype(np.uint32) >> shift) & top).astype(np.float64) / top


def _unpack_111011(values: np.ndarray) -> np.ndarray:
    return np.stack([_unpack_unorm(values, 21, 11), _unpack_unorm(values, 11, 10), _unpack_unorm(values, 0, 11)], 1)


def _unpack_8888(values: np.ndarray) -> np.ndarray:
    return np.stack([_unpack_unorm(values, shift, 8) for shift in (24, 16, 8, 0)], axis=1)


def _unpack_rotation(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.uint32)
    small = np.stack([_unpack_unorm(values, shift, 10) for shift in (20, 10, 0)], axis=1)
    small = (small - 0.5) / SQRT1_2
    largest = np.sqrt(np.maximum(0.0, 1.0 - (small**2).sum(axis=1)))
    which = (values >> 30).astype(np.int64)
    quats = np.empty((len(values), 4), np.float64)
    for slot in range(4):
        rows = which == slot
        others = [i for i in range(4) if i != slot]
        quats[rows, slot] = largest[rows]
        quats[np.ix_(rows, others)] = small[rows]
    return quats.astype(np.float32)


# --- writing -------------------------------------------------------------------------------------

def morton_order(means: np.ndarray) -> np.ndarray:
    """Stable order of the points along a 3D Morton (Z-order) curve, 10 bits per axis over their bounding box."""
    lo, hi = means.min(axis=0), means.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    cells = np.clip(((means - lo) / span * 1023.0).astype(np.int64), 0, 1023)
    code = np.zeros(len(means), np.int64)
    for bit in range(10):
        for axis in range(3):
            code |= ((cells[:, axis] >> bit) & 1) << (3 * bit + 2 - axis)
    return np.argsort(code, kind="stable")


def encode_compressed_ply(scene: GaussianScene) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The chunk, vertex and (for SH degree > 0) sh rows of a scene, in Morton order."""
    count = len(scene)
    order = morton_order(scene.means)
    padded = np.concatenate([order, np.full(-count % CHUNK_SIZE, order[-1])])  # repeat the last splat

    def chunks_of(array: np.ndarray) -> np.ndarray:
        return array[padded].reshape(-1, CHUNK_SIZE, *array.shape[1:])

    position, position_lo, position_hi = _quantise_in_chunks(chunks_of(scene.means))
    log_scales = chunks_of(scene.log_scales)
    scale_lo = np.clip(log_scales.min(axis=1), -SCALE_LIMIT, SCALE_LIMIT)
    scale_hi = np.clip(log_scales.max(axis=1), -SCALE_LIMIT, SCALE_LIMIT)
    scale = _normalise(log_scales, scale_lo, scale_hi)
    rgb, rgb_lo, rgb_hi = _quantise_in_chunks(chunks_of(scene.sh[:, 0, :] * np.float32(SH_C0) + np.float32(0.5)))
    alpha = chunks_of(scene.opacities().astype(np.float64))

    chunk_rows = np.empty(len(position), [(name, "<f4") for name in CHUNK_PROPERTIES])
    bounds = np.concatenate([position_lo, position_hi, scale_lo, scale_hi, rgb_lo, rgb_hi], axis=1)
    for column, name in enumerate(CHUNK_PROPERTIES):
        chunk_rows[name] = bounds[:, column]

    vertex_rows = np.empty(count, [(name, "<u4") for name in VERTEX_PROPERTIES])
    vertex_rows["packed_position"] = _pack_111011(position.reshape(-1, 3)[:count])
    vertex_rows["packed_scale"] = _pack_111011(scale.reshape(-1, 3)[:count])
    color = np.concatenate([rgb, alpha[..., None]], axis=2).reshape(-1, 4)[:count]
    vertex_rows["packed_color"] = (
        (_pack_unorm(color[:, 0], 8) << 24) | (_pack_unorm(color[:, 1], 8) << 16)
        | (_pack_unorm(color[:, 2], 8) << 8) | _pack_unorm(color[:, 3], 8)
    )
    vertex_rows["packed_rotation"] = _pack_rotation(scene.unit_quats()[order])
    return chunk_rows, vertex_rows, _encode_sh(scene.sh[order])


def _quantise_in_chunks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values (C, 256, 3) normalised within their chunk's float32 min/max, and those bounds."""
    lo, hi = values.min(axis=1).astype(np.float32), values.max(axis=1).astype(np.float32)
    return _normalise(values, lo, hi), lo, hi


def _normalise(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    lo, hi = lo.astype(np.float64)[:, None, :], hi.astype(np.float64)[:, None, :]
    span = hi - lo
    flat = span < 1e-5  # as splat-transform: a (near) constant range decodes to its minimum
    with np.errstate(invalid="ignore"):
        t = (values.astype(np.float64) - lo) / np.where(flat, 1.0, span)
    return np.where(flat, 0.0, np.clip(np.nan_to_num(t, nan=0.0), 0.0, 1.0))


def _pack_unorm(values: np.ndarray, bits: int) -> np.ndarray:
    top = (1 << bits) - 1
    return np.clip(np.floor(values * top + 0.5), 0, top).astype(np.uint32)


def _pack_111011(values: np.ndarray) -> np.ndarray:
    return (_pack_unorm(values[:, 0], 11) << 21) | (_pack_unorm(values[:, 1], 10) << 11) | _pack_unorm(values[:, 2], 11)


def _pack_rotation(unit_quats: np.ndarray) -> np.ndarray:
    quats = unit_quats.astype(np.float64)
    largest = np.argmax(np.abs(quats), axis=1)
    rows = np.arange(len(quats))
    quats *= np.where(quats[rows, largest] < 0, -1.0, 1.0)[:, None]
    packed = largest.astype(np.uint32)
    for slot in range(4):
        others = [i for i in range(4) if i != slot]
        mask = largest == slot
        for column in others:
            packed[mask] = (packed[mask] << 10) | _pack_unorm(quats[mask, column] * SQRT1_2 + 0.5, 10)
    return packed


def _encode_sh(sh: np.ndarray) -> np.ndarray | None:
    k = sh.shape[1]
    if k == 1:
        return None
    rows = np.empty(len(sh), [(f"f_rest_{i}", "u1") for i in range(3 * (k - 1))])
    for channel in range(3):
        for coefficient in range(1, k):
            value = sh[:, coefficient, channel].astype(np.float64) / 8.0 + 0.5
            quantised = np.clip(np.trunc(np.nan_to_num(value * 256.0, nan=128.0)), 0, 255).astype(np.uint8)
            rows[f_rest_name(channel, coefficient, k)] = quantised
    return rows


def write_compressed_ply(scene: GaussianScene, path: str | os.PathLike) -> None:
    chunk_rows, vertex_rows, sh_rows = encode_compressed_ply(scene)
    elements = [PlyElement.describe(chunk_rows, "chunk"), PlyElement.describe(vertex_rows, "vertex")]
    if sh_rows is not None:
        elements.append(PlyElement.describe(sh_rows, "sh"))
    ply = PlyData(elements, byte_order="<", comments=["Generated by exgs (PlayCanvas compressed layout)"])
    with atomic_write(Path(path)) as handle:
        ply.write(handle)
