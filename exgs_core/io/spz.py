"""Niantic .spz (versions 2, 3 and 4): read and write, in numpy.

Layout (github.com/nianticlabs/spz, README "File Format"): a 16-byte header (magic "NGSP", version, count, SH degree,
fractional bits, flags, reserved) and the attribute blocks one after the other: positions (3 x signed 24-bit fixed
point), alphas (sigmoid(opacity) * 255), colours (DC * 0.15 * 255 + 127.5), scales ((log-scale + 10) * 16),
rotations, SH (coefficient-major, channel inner, byte = value * 128 + 128). Versions 2 and 3 gzip all of it; version
2 stores quaternion x, y, z (w >= 0 implied) as bytes, version 3 packs the smallest three components in 10 bits each
with the index of the largest in the top 2 bits. Version 4 keeps the header plain (32 bytes) and compresses each
block separately with zstd (needs the `zstandard` package). Coordinates are stored raw, as splat-transform reads and
writes them (no axis conversion).

No PyPI package was used: `spz` on PyPI is 0.0.1 with no wheels (a C++ source build).
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import cast

import numpy as np

from exgs_core.errors import SceneFormatError
from exgs_core.fileio import atomic_write
from exgs_core.scene import GaussianScene, SplitScene
from exgs_core.sh import f_rest_name, num_sh_bases

MAGIC = 0x5053474E  # "NGSP" little-endian
READ_VERSIONS = (2, 3, 4)
WRITE_VERSIONS = (2, 3, 4)
DEFAULT_WRITE_VERSION = 3  # gzip: read by every SPZ reader, including ones without zstd
COLOR_SCALE = 0.15
SH1_BITS, SH_REST_BITS = 5, 4  # Niantic's default SH quantisation (bucket centres), kept for compatible sizes
FLAG_ANTIALIASED = 0x1
MAX_FRACTIONAL_BITS = 12  # Niantic's choice (~0.25 mm); fewer only when the scene is too large for 24 bits


def read_spz(path: str | os.PathLike) -> GaussianScene:
    return cast(GaussianScene, _read(Path(path), split=False))


def read_spz_split(path: str | os.PathLike) -> SplitScene:
    """read_spz's Gaussians as a SplitScene whose f_rest columns are separate arrays, decoded one at a time from
    the file's SH bytes (no (N, K, 3) block), with the same values."""
    return cast(SplitScene, _read(Path(path), split=True))


def _read(path: Path, split: bool) -> GaussianScene | SplitScene:
    data = path.read_bytes()
    source_bytes = len(data)
    if data[:2] == b"\x1f\x8b":
        header, body = _inflate_legacy(path, data)
    elif data[:4] == b"NGSP":
        header, body = _decompress_v4(path, data)
    else:
        raise SceneFormatError(path, "not an .spz file (neither gzip nor an NGSP header)")
    del data  # the file's bytes, once inflated
    scene = _decode(path, header, body, split)
    scene.metadata.update(format="spz", source_bytes=source_bytes, spz_version=header["version"])
    return scene


def _parse_header(path: Path, head: bytes) -> dict:
    if len(head) < 16:
        raise SceneFormatError(path, "the .spz file is truncated (header shorter than 16 bytes)")
    magic, version, count, degree, fractional_bits, flags = struct.unpack_from("<IIIBBB", head)
    if magic != MAGIC:
        raise SceneFormatError(path, "not an .spz file (wrong magic, expected NGSP)")
    if version not in READ_VERSIONS:
        raise SceneFormatError(path, f"SPZ version {version} is not supported (readable: 2, 3 and 4)")
    if degree > 3:
        raise SceneFormatError(path, f"SPZ version {version} with SH degree {degree}: exgs supports degrees 0-3")
    if count == 0:
        raise SceneFormatError(path, "the .spz file holds no Gaussians (count 0)")
    if fractional_bits > 23:
        raise SceneFormatError(path, f"SPZ header has {fractional_bits} fractional bits; at most 23 fit 24 bits")
    return {"version": version, "count": count, "degree": degree, "fractional_bits": fractional_bits, "flags": flags}


def _block_sizes(header: dict) -> list[int]:
    n, rest = header["count"], num_sh_bases(header["degree"]) - 1
    rotation = 3 if header["version"] == 2 else 4
    return [9 * n, n, 3 * n, 3 * n, rotation * n, 3 * rest * n]


def _inflate_legacy(path: Path, data: bytes) -> tuple[dict, bytes]:
    """Header and body of a gzip (v2/v3) file, inflating no more than the header says the body holds."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        head = inflater.decompress(data, 16)
        header = _parse_header(path, head)
        if header["version"] == 4:
            raise SceneFormatError(path, "SPZ version 4 inside gzip: version 4 files have a plain NGSP header")
        needed = sum(_block_sizes(header))
        body = inflater.decompress(inflater.unconsumed_tail, needed)
    except zlib.error as error:
        raise SceneFormatError(path, f"the .spz gzip stream is corrupt: {error}") from None
    if len(body) < needed:
        raise SceneFormatError(
            path, f"SPZ version {header['version']} body is truncated: {len(body)} of {needed} bytes for "
            f"{header['count']} Gaussians"
        )
    return header, body


def _decompress_v4(path: Path, data: bytes) -> tuple[dict, bytes]:
    header = _parse_header(path, data[:32])
    if len(data) < 32:
        raise SceneFormatError(path, "SPZ version 4 header is truncated (shorter than 32 bytes)")
    streams, toc_offset = data[15], struct.unpack_from("<I", data, 16)[0]
    sizes = _block_sizes(header)
    if header["degree"] == 0:
        sizes = sizes[:5]
    if streams != len(sizes) or toc_offset < 32 or toc_offset + 16 * streams > len(data):
        raise SceneFormatError(path, f"SPZ version 4 table of contents is invalid ({streams} streams at {toc_offset})")
    try:
        import zstandard
    except ImportError:
        problem = "reading SPZ version 4 needs the zstandard package (pip install zstandard)"
        raise SceneFormatError(path, problem) from None
    decompressor = zstandard.ZstdDecompressor()
    offset, blocks = toc_offset + 16 * streams, []
    for index, expected in enumerate(sizes):
        packed_size, unpacked_size = struct.unpack_from("<QQ", data, toc_offset + 16 * index)
        if unpacked_size != expected or offset + packed_size > len(data):
            raise SceneFormatError(path, f"SPZ version 4 stream {index} has sizes that do not match the header")
        try:
            block = decompressor.decompress(data[offset:offset + packed_size], max_output_size=expected)
        except zstandard.ZstdError as error:
            raise SceneFormatError(path, f"SPZ version 4 stream {index} is corrupt: {error}") from None
        if len(block) != expected:
            raise SceneFormatError(path, f"SPZ version 4 stream {index} is truncated")
        blocks.append(block)
        offset += packed_size
    return header, b"".join(blocks)


def _decode(path: Path, header: dict, body: bytes, split: bool) -> GaussianScene | SplitScene:
    n = header["count"]
    sizes = _block_sizes(header)
    blocks, start = [], 0
    for size in sizes:
        blocks.append(np.frombuffer(body, np.uint8, size, start))
        start += size
    k = num_sh_bases(header["degree"])
    # the Gaussians at SH 0 first, so that their float64 temporaries are gone before the SH columns are made
    scene, columns = SplitScene.to_fill(_decode_base(header, *blocks[:5]), k, split)
    stored = blocks[5].reshape(n, k - 1, 3)  # coefficient-major, channel inner
    for channel in range(3):
        for coefficient in range(1, k):
            column = stored[:, coefficient - 1, channel].astype(np.float64)
            columns[f_rest_name(channel, coefficient, k)][:] = (column - 128.0) / 128.0
    return scene


def _decode_base(header: dict, positions: np.ndarray, alphas: np.ndarray, colors: np.ndarray, scales: np.ndarray,
                 rotations: np.ndarray) -> GaussianScene:
    """The Gaussians with their DC colour only (SH degree 0)."""
    n = header["count"]
    fixed = positions.reshape(n, 3, 3).astype(np.int32)
    fixed = fixed[..., 0] | (fixed[..., 1] << 8) | (fixed[..., 2] << 16)
    fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed)
    means = fixed.astype(np.float64) / (1 << header["fractional_bits"])
    alpha = alphas.astype(np.float64) / 255.0
    with np.errstate(divide="ignore"):
        opacity = np.log(alpha) - np.log1p(-alpha)  # exact logit: 255 is +inf, as the .splat reader keeps it
    dc = (colors.reshape(n, 3).astype(np.float64) / 255.0 - 0.5) / COLOR_SCALE
    log_scales = scales.reshape(n, 3).astype(np.float64) / 16.0 - 10.0
    if header["version"] == 2:
        quats = _unpack_first_three(rotations.reshape(n, 3))
    else:
        quats = _unpack_smallest_three(rotations.view("<u4"))
    return GaussianScene(means, quats, log_scales, opacity, dc[:, None, :])


def _unpack_first_three(packed: np.ndarray) -> np.ndarray:
    xyz = packed.astype(np.float64) / 127.5 - 1.0
    w = np.sqrt(np.maximum(0.0, 1.0 - (xyz**2).sum(axis=1)))
    return np.concatenate([w[:, None], xyz], axis=1)


def _unpack_smallest_three(packed: np.ndarray) -> np.ndarray:
    """(N, 4) w, x, y, z from uint32 words; components are stored in x, y, z, w order."""
    packed = packed.astype(np.uint32)
    largest = (packed >> 30).astype(np.int64)
    xyzw = np.zeros((len(packed), 4), np.float64)
    for component in (3, 2, 1, 0):  # the last-stored component sits in the lowest bits
        rows = largest != component
        magnitude = (packed & 511).astype(np.float64) * (np.sqrt(0.5) / 511.0)
        negative = ((packed >> 9) & 1).astype(bool)
        xyzw[rows, component] = np.where(negative, -magnitude, magnitude)[rows]
        packed = np.where(rows, packed >> 10, packed)
    squares = (xyzw**2).sum(axis=1)
    xyzw[np.arange(len(packed)), largest] = np.sqrt(np.maximum(0.0, 1.0 - squares))
    return xyzw[:, [3, 0, 1, 2]]


# --- writing --------------------------------------------------------------------------------------

def encode_spz(scene: GaussianScene, version: int = DEFAULT_WRITE_VERSION) -> bytes:
    """The bytes of an .spz file holding the scene (version 2, 3 or 4)."""
    if version not in WRITE_VERSIONS:
        raise ValueError(f"cannot write SPZ version {version}; writable versions are 2, 3 and 4")
    n, degree = len(scene), scene.sh_degree
    fractional_bits = _fractional_bits(scene.means)
    fixed = np.round(scene.means.astype(np.float64) * (1 << fractional_bits)).astype(np.int64)
    positions = np.stack([fixed & 0xFF, (fixed >> 8) & 0xFF, (fixed >> 16) & 0xFF], axis=-1).astype(np.uint8)
    alphas = _to_bytes(scene.opacities().astype(np.float64) * 255.0)
    colors = _to_bytes(scene.sh[:, 0, :].astype(np.float64) * (COLOR_SCALE * 255.0) + 127.5)
    scales = _to_bytes((np.nan_to_num(scene.log_scales.astype(np.float64), neginf=-10.0) + 10.0) * 16.0)
    unit = scene.unit_quats().astype(np.float64)
    rotations = _pack_first_three(unit) if version == 2 else _pack_smallest_three(unit).view(np.uint8)
    sh = _quantise_sh(scene.sh[:, 1:, :].astype(np.float64))
    blocks = [positions, alphas, colors, scales, rotations, sh]
    blocks = [np.ascontiguousarray(b).tobytes() for b in blocks]
    if version == 4:
        return _v4_container(n, degree, fractional_bits, blocks if degree > 0 else blocks[:5])
    header = struct.pack("<IIIBBBB", MAGIC, version, n, degree, fractional_bits, 0, 0)
    return gzip.compress(header + b"".join(blocks), compresslevel=9, mtime=0)


def _fractional_bits(means: np.ndarray) -> int:
    """Most fractional bits (at most 12) whose 24-bit fixed point holds every coordinate."""
    extent = float(np.abs(means).max()) if len(means) else 0.0
    for bits in range(MAX_FRACTIONAL_BITS, -1, -1):
        if extent * (1 << bits) < (1 << 23) - 1:
            return bits
    raise ValueError(f"positions reach {extent:g}, beyond what SPZ's 24-bit fixed point can hold")


def _to_bytes(values: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.nan_to_num(values, nan=0.0)), 0, 255).astype(np.uint8)


def _pack_first_three(unit: np.ndarray) -> np.ndarray:
    flipped = np.where(unit[:, :1] < 0, -unit, unit)
    return _to_bytes(flipped[:, 1:] * 127.5 + 127.5)


def _pack_smallest_three(unit: np.ndarray) -> np.ndarray:
    """uint32 words: index of the largest |component| (x, y, z, w order) and the other three in 10 bits each."""
    xyzw = unit[:, [1, 2, 3, 0]]
    largest = np.argmax(np.abs(xyzw), axis=1)
    sign = np.where(xyzw[np.arange(len(xyzw)), largest] < 0, -1.0, 1.0)
    xyzw = xyzw * sign[:, None]
    words = largest.astype(np.uint32)
    for component in range(4):
        rows = largest != component
        value = xyzw[:, component]
        magnitude = np.minimum(np.floor(511.0 * np.abs(value) / np.sqrt(0.5) + 0.5), 511).astype(np.uint32)
        bits = ((value < 0).astype(np.uint32) << 9) | magnitude
        words = np.where(rows, (words << 10) | bits, words)
    return words.astype("<u4")


def _quantise_sh(rest: np.ndarray) -> np.ndarray:
    """Bytes value * 128 + 128 rounded to the centres of SH1_BITS (band 1) / SH_REST_BITS (higher) buckets."""
    q = np.round(np.nan_to_num(rest) * 128.0) + 128.0
    bucket = np.full(rest.shape[1], 1 << (8 - SH_REST_BITS), np.float64)
    bucket[:3] = 1 << (8 - SH1_BITS)
    bucket = bucket[None, :, None]
    q = np.floor((q + np.floor(bucket / 2)) / bucket) * bucket
    return np.clip(q, 0, 255).astype(np.uint8)


def _v4_container(n: int, degree: int, fractional_bits: int, blocks: list[bytes]) -> bytes:
    import zstandard

    compressor = zstandard.ZstdCompressor(level=12)
    packed = [compressor.compress(block) for block in blocks]
    header = struct.pack("<IIIBBBBI12x", MAGIC, 4, n, degree, fractional_bits, 0, len(blocks), 32)
    toc = b"".join(struct.pack("<QQ", len(p), len(b)) for p, b in zip(packed, blocks))
    return header + toc + b"".join(packed)


def write_spz(scene: GaussianScene, path: str | os.PathLike, version: int = DEFAULT_WRITE_VERSION) -> None:
    data = encode_spz(scene, version)
    with atomic_write(Path(path)) as handle:
        handle.write(data)
