"""PlayCanvas SOG v2 (read only): meta.json plus lossless WebP textures, in a folder or a .sog zip.

Every per-Gaussian texture holds Gaussian i at pixel i in row-major order. means_l/means_u hold the low and high
bytes of 16-bit x, y, z, quantised between meta mins/maxs after sign(x) * ln(|x| + 1). quats holds the three
smallest components of the unit quaternion (w, x, y, z) mapped from [-1/sqrt2, 1/sqrt2] to 0..255, and in alpha
252 + the index of the largest one (taken positive). scales and sh0 hold indices into 256-entry codebooks (sh0
alpha is sigmoid(opacity) * 255). shN_labels holds a 16-bit palette index (R | G << 8); palette entry L is
`coefficients` consecutive pixels at x = (L % 64) * coefficients, y = L // 64 of shN_centroids, whose RGB are
indices into the shN codebook for the R, G and B coefficient.

The WebP images are decoded by Pillow unless the caller passes its own `decode_image` (Blender's own Python
has no Pillow; the Blender extension decodes them with Blender).
"""

from __future__ import annotations

import io
import os
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Callable, cast

import numpy as np

from exgs_core.errors import SceneFormatError
from exgs_core.io.ply import FormatWarning
from exgs_core.scene import GaussianScene, SplitScene
from exgs_core.sh import f_rest_name
from exgs_core.validate import JsonError, is_number, parse_json

SH_COEFFICIENTS_FOR_BANDS = {1: 3, 2: 8, 3: 15}
PALETTE_ROW = 64  # palette entries per row of shN_centroids
MAX_ZIP_RATIO = 1000  # refuse zip members that claim to inflate more than this (zip bombs)
# A count in meta.json beyond this many Gaussians per byte of the scene's images (+ the allowance) is refused
# before any image is decoded: real SOG files take 25 bytes per Gaussian, and a one-colour WebP of 8192^2
# pixels takes a few hundred bytes.
MAX_GAUSSIANS_PER_BYTE = 1
GAUSSIAN_ALLOWANCE = 1 << 18

# Decodes an image file's bytes (the str is its file name) to (height, width, 4) uint8 RGBA, top row first,
# channels as stored (not premultiplied); raises ValueError or OSError when it cannot.
ImageDecoder = Callable[[bytes, str], np.ndarray]


class _SogFiles:
    """The files of a SOG scene, by name: beside meta.json in a folder, or at the root of a .sog zip."""

    def __init__(self, path: Path, decode_image: ImageDecoder | None):
        self.path = path
        self.decode_image = decode_image
        self.bytes_read = 0
        self._zip: zipfile.ZipFile | None = None
        self.folder, self.meta_name = path, "meta.json"
        if path.is_dir():
            if not (path / "meta.json").is_file():
                raise SceneFormatError(path, "the folder has no meta.json, so it is not a SOG scene")
        elif zipfile.is_zipfile(path):
            self._zip = _open_zip(path)
            self.bytes_read = os.path.getsize(path)
        elif path.suffix.lower() == ".sog" or _starts_with(path, b"PK"):
            raise SceneFormatError(path, "not a valid .sog file (a damaged or incomplete zip archive)")
        else:
            self.folder, self.meta_name = path.parent, path.name

    def read(self, name: str) -> bytes:
        if not isinstance(name, str) or "/" in name or "\\" in name or name in ("", ".", ".."):
            raise SceneFormatError(self.path, f"meta.json names the file {name!r}, which is not a plain file name")
        if self._zip is not None:
            return self._read_member(self._zip, name)
        file = self.folder / name
        if not file.is_file():
            raise SceneFormatError(self.path, f"meta.json references {name}, which is missing from {self.folder}")
        data = file.read_bytes()
        self.bytes_read += len(data)
        return data

    def stored_size(self, name: str) -> int:
        """The stored (compressed) size of a referenced file, 0 if it is missing (read() reports that)."""
        if not isinstance(name, str) or "/" in name or "\\" in name or name in ("", ".", ".."):
            return 0
        if self._zip is not None:
            try:
                return self._zip.getinfo(name).compress_size
            except KeyError:
                return 0
        file = self.folder / name
        return file.stat().st_size if file.is_file() else 0

    def _read_member(self, archive: zipfile.ZipFile, name: str) -> bytes:
        try:
            info = archive.getinfo(name)
        except KeyError:
            raise SceneFormatError(self.path, f"the .sog archive has no member {name}") from None
        if info.file_size > MAX_ZIP_RATIO * info.compress_size + (1 << 20):
            raise SceneFormatError(self.path, f"archive member {name} claims an implausible size ({info.file_size} bytes)")
        try:
            return archive.read(info)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as error:
            raise SceneFormatError(self.path, f"archive member {name} is corrupt: {error}") from None

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def _starts_with(path: Path, magic: bytes) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(magic)) == magic


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise SceneFormatError(path, f"not a valid .sog file: {error}") from None


def read_sog(path: str | os.PathLike, decode_image: ImageDecoder | None = None) -> GaussianScene:
    """Read a SOG v2 scene from its folder, its meta.json, or a .sog zip; images decoded by Pillow by default."""
    return cast(GaussianScene, _read(path, decode_image, split=False))


def read_sog_split(path: str | os.PathLike, decode_image: ImageDecoder | None = None) -> SplitScene:
    """read_sog's Gaussians as a SplitScene whose f_rest columns are separate arrays, each looked up from the
    palette by the labels on its own (no (N, K, 3) block), with the same values."""
    return cast(SplitScene, _read(path, decode_image, split=True))


def _read(path: str | os.PathLike, decode_image: ImageDecoder | None, split: bool) -> GaussianScene | SplitScene:
    files = _SogFiles(Path(path), decode_image)
    try:
        meta = _parse_meta(files)
        scene = _decode(files, meta, split)
    finally:
        files.close()
    scene.metadata.update(format="sog", source_bytes=files.bytes_read)
    return scene


def _parse_meta(files: _SogFiles) -> dict:
    try:
        meta = parse_json(files.read(files.meta_name))
    except JsonError as error:
        raise SceneFormatError(files.path, f"meta.json is not valid JSON: {error}") from None
    if not isinstance(meta, dict):
        raise SceneFormatError(files.path, "meta.json does not hold a JSON object")
    if "version" not in meta:
        if "means" in meta:
            raise SceneFormatError(files.path, "meta.json has no 'version': legacy SOG v1 is not supported (only v2)")
        raise SceneFormatError(files.path, f"{files.meta_name} is not a SOG meta.json (it has no 'version' or 'means')")
    if not is_number(meta["version"]) or meta["version"] != 2:
        raise SceneFormatError(files.path, f"SOG version {meta['version']!r} is not supported (only version 2)")
    count = meta.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise SceneFormatError(files.path, f"meta.json 'count' must be a non-negative integer, not {count!r}")
    if count == 0:
        raise SceneFormatError(files.path, "meta.json 'count' is 0: the scene holds no Gaussians")
    _require(files, meta, "means", {"mins": 3, "maxs": 3, "files": 2})
    _require(files, meta, "scales", {"codebook": None, "files": 1})
    _require(files, meta, "quats", {"files": 1})
    _require(files, meta, "sh0", {"codebook": None, "files": 1})
    if "shN" in meta:
        _require(files, meta, "shN", {"codebook": None, "files": 2})
        if not is_number(meta["shN"].get("bands")) or meta["shN"].get("bands") not in SH_COEFFICIENTS_FOR_BANDS:
            raise SceneFormatError(files.path, f"meta.json shN.bands must be 1, 2 or 3, not {meta['shN'].get('bands')!r}")
        palette = meta["shN"].get("count")
        if not isinstance(palette, int) or isinstance(palette, bool) or not 0 < palette <= 1 << 16:
            raise SceneFormatError(files.path, f"meta.json shN.count must be 1..65536, not {palette!r}")
    _check_count_fits(files, meta)
    return meta


def _check_count_fits(files: _SogFiles, meta: dict) -> None:
    """Refuse a count the images cannot plausibly hold (a decompression bomb) before decoding any of them."""
    names = {name for key in ("means", "scales", "quats", "sh0", "shN") for name in meta.get(key, {}).get("files", [])}
    stored = sum(files.stored_size(name) for name in names)
    most = MAX_GAUSSIANS_PER_BYTE * stored + GAUSSIAN_ALLOWANCE
    if meta["count"] > most:
        raise SceneFormatError(
            files.path, f"meta.json declares {meta['count']} Gaussians, but its {stored} bytes of images can hold "
            f"at most {most}: refused as a decompression bomb"
        )


def _require(files: _SogFiles, meta: dict, key: str, lists: dict[str, int | None]) -> None:
    """meta[key] must be an object holding the named lists (of the given length, if any)."""
    section = meta.get(key)
    if not isinstance(section, dict):
        raise SceneFormatError(files.path, f"meta.json has no '{key}' section")
    for name, length in lists.items():
        value = section.get(name)
        kind = str if name == "files" else (int, float)
        if (
            not isinstance(value, list)
            or not value
            or (length is not None and len(value) < length)
            or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value)
        ):
            what = "file names" if name == "files" else "numbers"
            expected = f"a list of {length} {what}" if length else f"a non-empty list of {what}"
            raise SceneFormatError(files.path, f"meta.json {key}.{name} must be {expected}")


def _decode(files: _SogFiles, meta: dict, split: bool) -> GaussianScene | SplitScene:
    count = meta["count"]
    base = _decode_base(files, meta, count)  # before the SH columns are made, its temporaries gone
    coefficients = SH_COEFFICIENTS_FOR_BANDS[meta["shN"]["bands"]] if "shN" in meta else 0
    scene, columns = SplitScene.to_fill(base, 1 + coefficients, split)
    if not columns:
        return scene
    labels, entries = _decode_shn(files, meta["shN"], count)
    for channel in range(3):
        for coefficient in range(1, 1 + coefficients):
            np.take(entries[:, coefficient - 1, channel], labels, mode="clip",  # labels checked
                    out=columns[f_rest_name(channel, coefficient, 1 + coefficients)])
    return scene


def _decode_base(files: _SogFiles, meta: dict, count: int) -> GaussianScene:
    """The Gaussians with their DC colour only (SH degree 0)."""
    means = _decode_means(files, meta, count)
    quats = _decode_quats(files, meta["quats"]["files"][0], count)
    scales = _pixels(files, meta["scales"]["files"][0], count)[:, :3]
    log_scales = _lookup(files, meta["scales"]["codebook"], scales, "scales")
    sh0 = _pixels(files, meta["sh0"]["files"][0], count)
    alpha = sh0[:, 3].astype(np.float64) / 255.0
    with np.errstate(divide="ignore"):
        opacity = np.log(alpha) - np.log1p(-alpha)  # exact logit, as the .splat reader
    dc = _lookup(files, meta["sh0"]["codebook"], sh0[:, :3], "sh0")[:, None, :]
    return GaussianScene(means, quats, log_scales, opacity, dc)


def _decode_means(files: _SogFiles, meta: dict, count: int) -> np.ndarray:
    low_name, high_name = meta["means"]["files"][:2]
    low = _pixels(files, low_name, count)[:, :3].astype(np.uint32)
    high = _pixels(files, high_name, count)[:, :3].astype(np.uint32)
    mins = np.asarray(meta["means"]["mins"][:3], np.float64)
    maxs = np.asarray(meta["means"]["maxs"][:3], np.float64)
    logged = mins + (maxs - mins) * ((low | (high << 8)) / 65535.0)
    return (np.sign(logged) * np.expm1(np.abs(logged))).astype(np.float32)  # undo sign(x) * ln(|x| + 1)


def _decode_quats(files: _SogFiles, name: str, count: int) -> np.ndarray:
    pixels = _pixels(files, name, count)
    which = pixels[:, 3].astype(np.int64) - 252
    small = (pixels[:, :3].astype(np.float64) / 255.0 * 2.0 - 1.0) / np.sqrt(2.0)
    largest = np.sqrt(np.maximum(0.0, 1.0 - (small**2).sum(axis=1)))
    quats = np.zeros((count, 4), np.float64)
    for slot in range(4):
        rows = which == slot
        quats[rows, slot] = largest[rows]
        quats[np.ix_(rows, [i for i in range(4) if i != slot])] = small[rows]
    invalid = (which < 0) | (which > 3)
    if invalid.any():
        # splat-transform reads these as the identity rotation; do the same, but say so
        quats[invalid] = (1.0, 0.0, 0.0, 0.0)
        warnings.warn(
            f"{files.path}: {int(invalid.sum())} quaternions in {name} have an invalid tag; read as identity",
            FormatWarning,
            stacklevel=5,
        )
    return quats.astype(np.float32)


def _decode_shn(files: _SogFiles, section: dict, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Each Gaussian's palette entry (count,), and the SH coefficients of every entry (palette, coefficients, rgb):
    a Gaussian's SH coefficients are those of its entry, looked up one column at a time by the caller."""
    coefficients = SH_COEFFICIENTS_FOR_BANDS[section["bands"]]
    palette = section["count"]
    centroids_name, labels_name = section["files"][:2]
    rows = -(-palette // PALETTE_ROW)
    centroids, width = _palette_pixels(files, centroids_name, PALETTE_ROW * coefficients, rows)
    label_pixels = _pixels(files, labels_name, count)
    labels = label_pixels[:, 0].astype(np.int64) | (label_pixels[:, 1].astype(np.int64) << 8)
    if labels.max() >= palette:
        raise SceneFormatError(files.path, f"{labels_name} holds palette index {labels.max()}, beyond {palette} entries")
    used = np.flatnonzero(np.bincount(labels, minlength=palette))  # only these are checked against the codebook
    first = (used // PALETTE_ROW) * width + (used % PALETTE_ROW) * coefficients
    indices = centroids[first[:, None] + np.arange(coefficients)[None, :], :3]  # (used, coefficients, rgb)
    entries = np.zeros((palette, coefficients, 3), np.float32)
    entries[used] = _lookup(files, section["codebook"], indices, "shN")
    return labels, entries


def _lookup(files: _SogFiles, codebook: list, indices: np.ndarray, what: str) -> np.ndarray:
    try:
        table = np.asarray(codebook, np.float32)
    except (TypeError, ValueError):
        raise SceneFormatError(files.path, f"meta.json {what}.codebook holds non-numbers") from None
    if table.ndim != 1 or indices.max() >= len(table):
        raise SceneFormatError(files.path, f"{what} indices reach {indices.max()}, beyond its {len(table)}-entry codebook")
    return table[indices]


def _webp_size(files: _SogFiles, name: str, data: bytes) -> tuple[int, int]:
    """Width and height from the WebP header, so a lying header is refused before anything is decoded."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise SceneFormatError(files.path, f"{name} is not a WebP image")
    declared = 8 + int.from_bytes(data[4:8], "little")
    if len(data) < declared:
        # Blender's decoder logs an error and returns an image anyway: refuse truncated files here.
        raise SceneFormatError(files.path, f"{name} is truncated ({len(data)} of {declared} bytes)")
    head = data[:30].ljust(30, b"\0")
    chunk = head[12:16]
    if chunk == b"VP8L" and head[20] == 0x2F:  # lossless: 14-bit width - 1, 14-bit height - 1
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit canvas width - 1, height - 1
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":  # lossy key frame
        return int.from_bytes(head[26:28], "little") & 0x3FFF, int.from_bytes(head[28:30], "little") & 0x3FFF
    raise SceneFormatError(files.path, f"{name} has an unrecognised WebP header")


def _decode_with_pillow(data: bytes, name: str) -> np.ndarray:
    from PIL import Image

    try:
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))
    except Image.DecompressionBombError as error:
        raise ValueError(str(error)) from None


def _pillow_decoder(path: Path) -> ImageDecoder:
    # Pillow is imported here, not at module level: Blender's own Python lacks it and must still import exgs_core.io.
    try:
        import PIL.Image  # noqa: F401
    except ImportError:
        raise SceneFormatError(
            path, "reading SOG needs Pillow (WebP images), which this Python lacks; `pip install pillow`"
        ) from None
    return _decode_with_pillow


def _rgba(files: _SogFiles, name: str, data: bytes, size: tuple[int, int]) -> np.ndarray:
    """All pixels (width * height, 4) of an image whose header says `size`, row-major from the top."""
    decode = files.decode_image or _pillow_decoder(files.path)
    try:
        rgba = decode(data, name)
    except (ValueError, OSError) as error:
        raise SceneFormatError(files.path, f"{name} cannot be decoded: {error}") from None
    width, height = size
    if rgba.shape != (height, width, 4) or rgba.dtype != np.uint8:
        raise SceneFormatError(
            files.path, f"{name} decoded to a {rgba.dtype} array of shape {rgba.shape}, not {height}x{width} RGBA bytes"
        )
    return rgba.reshape(-1, 4)


def _pixels(files: _SogFiles, name: str, count: int) -> np.ndarray:
    """The first `count` RGBA pixels (count, 4) of a per-Gaussian texture."""
    data = files.read(name)
    width, height = _webp_size(files, name, data)
    # The writer makes textures about sqrt(count) square; check before decoding so a lying header cannot
    # make us allocate a huge image.
    if width * height < count or width * height > 2 * count + 65536:
        raise SceneFormatError(
            files.path, f"{name} is {width}x{height} pixels, which does not fit the {count} Gaussians of meta.json"
        )
    return _rgba(files, name, data, (width, height))[:count]


def _palette_pixels(files: _SogFiles, name: str, width: int, rows: int) -> tuple[np.ndarray, int]:
    data = files.read(name)
    size = _webp_size(files, name, data)
    if size[0] != width or not rows <= size[1] <= rows + 1:
        raise SceneFormatError(files.path, f"{name} is {size[0]}x{size[1]} pixels; the palette needs {width}x{rows}")
    return _rgba(files, name, data, size), width
