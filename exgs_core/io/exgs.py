"""The .exgs container: magic, version, JSON header, checksummed compressed sections (docs/format.md).

`encode_container` / `decode_container` handle the container for any JSON header and named byte sections;
`write_exgs` / `read_exgs` store a GaussianScene in it through exgs_core.ugc.pack.

The reader trusts nothing it has not checked: every length is bounded by the bytes left in the file before
anything is allocated, every declared decoded length is checked against what the header's counts call for
before decompression, and decompressors are never allowed to produce more than that. Every problem is a
SceneFormatError naming the file. numpy, zlib, lzma and (for zstd sections) zstandard only: no torch.
"""

from __future__ import annotations

import base64
import json
import lzma
import math
import os
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from exgs_core.errors import SceneFormatError
from exgs_core.fileio import atomic_write
from exgs_core.io.ply import INRIA_BYTES_PER_GAUSSIAN
from exgs_core.scene import GaussianScene, SplitScene
from exgs_core.side_by_side import run_side_by_side
from exgs_core.validate import JsonError, parse_json
from exgs_core.ugc.pack import PackSettings, check_pack_header, expected_section_sizes, pack_scene, unpack_scene

MAGIC = b"EXGS\r\n\x1a\n"
FORMAT_MAJOR = 2  # 2 added the optional "restoration" section; 1.x files read unchanged
FORMAT_MINOR = 0
READABLE_MAJORS = (1, 2)
# magic, major, minor, section count, header length
_PREAMBLE = struct.Struct("<8sHHII")
# codec tag, stored length, decoded length, CRC-32 (after the length-prefixed name)
_RECORD = struct.Struct("<4sQQI")
_CRC = struct.Struct("<I")

CODECS = {"raw": b"raw\0", "zstd": b"zstd", "lzma": b"lzma"}
_CODEC_NAMES = {tag: name for name, tag in CODECS.items()}
_NAME_PATTERN = re.compile(r"[a-z0-9_]{1,32}\Z")
MAX_HEADER_BYTES = 1 << 24
MAX_SECTIONS = 256
ZSTD_LEVEL = 19
DEFAULT_CODEC = "lzma"  # 4% smaller than zstd-19 on our planes, and in every Python's standard library
# The writer's LZMA2 dictionary is at most this large (readers use _lzma_dict, up to 64 MiB, so every reader
# decodes it). Our planes have no long-range matches: on the 20 MB sections of a 5M-Gaussian file 4 MiB gave
# the same bytes (+-0.03%) 10-17% faster than 32 MiB, and the encoder holds about 11x its dictionary.
LZMA_WRITER_DICT = 1 << 22
# Sections are coded side by side (exgs_core.side_by_side) when the file holds at least this many bytes of them.
PARALLEL_ENCODE_ABOVE = 1 << 18
# All sections together may decode to at most this multiple of the file size plus DECODE_ALLOWANCE bytes:
# real files expand 1.7-5.6 times (SH rest planes compress best), and the bound keeps a crafted file from
# making the reader allocate gigabytes: unpacking takes ~10x the decoded bytes.
GENERIC_EXPANSION = 64
DECODE_ALLOWANCE = 1 << 24

# Header keys that pack_scene owns; extra_header may not override them.
_PACK_KEYS = ("count", "sh_degree", "layout", "order", "bounds", "quantisation")


# --- the container -------------------------------------------------------------------------------------------


def encode_container(header: dict[str, Any], sections: dict[str, bytes], codec: str = DEFAULT_CODEC) -> bytes:
    """The bytes of a container holding `header` (JSON-serialisable) and `sections` in the given order.

    `codec` is "raw", "zstd", "lzma", or "auto" (per section, the smallest of the three).
    """
    if codec not in CODECS and codec != "auto":
        raise ValueError(f"unknown codec {codec!r}; choose one of raw, zstd, lzma, auto")
    if len(sections) > MAX_SECTIONS:
        raise ValueError(f"at most {MAX_SECTIONS} sections, got {len(sections)}")
    header_bytes = json.dumps(header, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    if len(header_bytes) > MAX_HEADER_BYTES:
        raise ValueError(f"the header is {len(header_bytes)} bytes; at most {MAX_HEADER_BYTES} are allowed")
    preamble = _PREAMBLE.pack(MAGIC, FORMAT_MAJOR, FORMAT_MINOR, len(sections), len(header_bytes))
    parts = [preamble, header_bytes, _CRC.pack(zlib.crc32(preamble[8:] + header_bytes))]
    parts += _encode_sections(sections, codec)
    return b"".join(parts)


def _encode_sections(sections: dict[str, bytes], codec: str) -> list[bytes]:
    """The section records in the given order, those of large files coded side by side.

    lzma and zstd release the GIL, and each section is coded on its own, so the bytes are the same as one
    after the other; lzma at its strongest codes about 1.2 MB/s, and a 10M-Gaussian file spent 170 s in it."""
    largest_first = sorted(sections, key=lambda name: -len(sections[name]))  # the longest jobs start first
    jobs = {name: (lambda name=name: _encode_section(name, bytes(sections[name]), codec)) for name in largest_first}
    parallel = codec != "raw" and sum(len(p) for p in sections.values()) >= PARALLEL_ENCODE_ABOVE
    coded = run_side_by_side(jobs, parallel)
    return [coded[name] for name in sections]


def _encode_section(name: str, payload: bytes, codec: str) -> bytes:
    if not _NAME_PATTERN.match(name):
        raise ValueError(f"section name {name!r} must be 1-32 characters of a-z, 0-9 and _")
    if codec == "auto":
        candidates = [(c, compress(payload, c)) for c in ("zstd", "lzma")]
        codec, stored = min(candidates, key=lambda item: len(item[1]))
        if len(stored) >= len(payload):
            codec, stored = "raw", payload
    else:
        stored = compress(payload, codec)
    record = bytes([len(name)]) + name.encode("ascii")
    record += _RECORD.pack(CODECS[codec], len(stored), len(payload), 0)[:-4]
    return record + _CRC.pack(zlib.crc32(record + stored)) + stored


def compress(payload: bytes, codec: str) -> bytes:
    if codec == "raw":
        return payload
    if codec == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True).compress(payload)
    if codec == "lzma":
        dict_size = min(LZMA_WRITER_DICT, _lzma_dict(len(payload)))
        filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": dict_size}]
        return lzma.compress(payload, format=lzma.FORMAT_RAW, filters=filters)
    raise ValueError(f"unknown codec {codec!r}")


def _lzma_dict(decoded_length: int) -> int:
    """LZMA2 dictionary size: the decoded length rounded up to a power of two, within [4 KiB, 64 MiB]."""
    return min(1 << 26, max(1 << 12, 1 << max(0, decoded_length - 1).bit_length()))


def decode_container(
    data: bytes,
    path: str | os.PathLike | None = None,
    expected_sizes: Callable[[dict[str, Any]], dict[str, int]] | None = None,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(header, decoded sections) of a container; SceneFormatError (naming `path`) for anything wrong.

    With `expected_sizes` (header -> {section name: decoded length}, raising ValueError for a header it
    cannot use), exactly those sections are required and decoded, each to exactly that length; other
    sections (from a newer minor version) are skipped without decoding. Without it, every section is
    decoded. Either way all sections together decode to at most GENERIC_EXPANSION times the file size
    plus DECODE_ALLOWANCE bytes.
    """
    view = memoryview(data).toreadonly()
    header, section_count, offset = _read_header(view, path)
    expected = None
    if expected_sizes is not None:
        try:
            expected = expected_sizes(header)
        except (ValueError, KeyError, TypeError) as error:
            raise SceneFormatError(path, f"the .exgs header is inconsistent: {error}") from None
    budget = GENERIC_EXPANSION * len(data) + DECODE_ALLOWANCE
    sections: dict[str, bytes] = {}
    for index in range(section_count):
        name, codec, stored, decoded_length, offset = _read_record(view, offset, index, path)
        if name in sections:
            raise SceneFormatError(path, f".exgs section {name!r} appears twice")
        if expected is not None:
            if name not in expected:
                sections[name] = b""  # unknown to this reader: skipped, but duplicates still caught
                continue
            if decoded_length != expected[name]:
                raise SceneFormatError(
                    path,
                    f".exgs section {name!r} declares {decoded_length} decoded bytes, but the header's counts "
                    f"call for {expected[name]}",
                )
        if decoded_length > budget:
            raise SceneFormatError(
                path, f".exgs section {name!r} declares {decoded_length} decoded bytes, implausibly many for a "
                f"{len(data)}-byte file",
            )
        budget -= decoded_length
        sections[name] = _decompress(stored, codec, decoded_length, name, path)
    if offset != len(data):
        raise SceneFormatError(path, f"{len(data) - offset} unexpected bytes after the last .exgs section")
    if expected is not None:
        missing = [name for name in expected if name not in sections]
        if missing:
            raise SceneFormatError(path, f"the .exgs file lacks the required section(s) {', '.join(missing)}")
        sections = {name: sections[name] for name in expected}
    return header, sections


def _read_header(data: memoryview, path: Any) -> tuple[dict[str, Any], int, int]:
    start = bytes(data[: len(MAGIC)])
    if start != MAGIC:
        if start.startswith(MAGIC[:4]) and len(data) >= len(MAGIC):
            raise SceneFormatError(
                path, "damaged .exgs file: the bytes after 'EXGS' were altered, as a text-mode copy that converts "
                "line endings does",
            )
        raise SceneFormatError(path, "not an .exgs file: wrong magic bytes")
    if len(data) < _PREAMBLE.size:
        raise SceneFormatError(path, "truncated .exgs file: the preamble is incomplete")
    _, major, minor, section_count, header_length = _PREAMBLE.unpack_from(data, 0)
    if major not in READABLE_MAJORS:
        raise SceneFormatError(
            path, f".exgs format version {major}.{minor} is not supported (this reader reads "
            f"{' and '.join(f'{m}.x' for m in READABLE_MAJORS)})"
        )
    if section_count > MAX_SECTIONS:
        raise SceneFormatError(
            path, f".exgs file declares {section_count} sections; at most {MAX_SECTIONS} are allowed"
        )
    end = _PREAMBLE.size + header_length
    if header_length > MAX_HEADER_BYTES:
        raise SceneFormatError(
            path, f".exgs file declares a {header_length}-byte header; at most {MAX_HEADER_BYTES} are allowed"
        )
    if end + _CRC.size > len(data):
        raise SceneFormatError(path, f"truncated .exgs file: the {header_length}-byte header does not fit in the file")
    (crc,) = _CRC.unpack_from(data, end)
    if zlib.crc32(data[8:end]) != crc:
        raise SceneFormatError(path, ".exgs header checksum mismatch: the file is corrupt")
    header = _parse_json(data[_PREAMBLE.size : end], path)
    return header, section_count, end + _CRC.size


def _parse_json(raw: memoryview, path: Any) -> dict[str, Any]:
    try:
        header = parse_json(bytes(raw))
    except JsonError as error:
        raise SceneFormatError(path, f"the .exgs header is not valid JSON: {error}") from None
    if not isinstance(header, dict):
        raise SceneFormatError(path, "the .exgs header must be a JSON object")
    return header


def _read_record(data: memoryview, offset: int, index: int, path: Any) -> tuple[str, str, memoryview, int, int]:
    where = f".exgs section #{index + 1}"
    if offset >= len(data):
        raise SceneFormatError(path, f"truncated .exgs file: {where} is missing")
    name_length = data[offset]
    fixed_end = offset + 1 + name_length + _RECORD.size
    if fixed_end > len(data):
        raise SceneFormatError(path, f"truncated .exgs file: {where} record is incomplete")
    raw_name = bytes(data[offset + 1 : offset + 1 + name_length])
    name = raw_name.decode("ascii", errors="replace")
    if not _NAME_PATTERN.match(name):
        raise SceneFormatError(path, f"{where} has an invalid name {raw_name!r}")
    tag, stored_length, decoded_length, crc = _RECORD.unpack_from(data, offset + 1 + name_length)
    if stored_length > len(data) - fixed_end:
        raise SceneFormatError(
            path,
            f"truncated .exgs file: section {name!r} declares {stored_length} bytes, {len(data) - fixed_end} remain",
        )
    stored = data[fixed_end : fixed_end + stored_length]
    if zlib.crc32(stored, zlib.crc32(data[offset : fixed_end - _CRC.size])) != crc:
        raise SceneFormatError(path, f".exgs section {name!r} checksum mismatch: the file is corrupt")
    codec = _CODEC_NAMES.get(tag)
    if codec is None:
        raise SceneFormatError(path, f".exgs section {name!r} uses an unknown codec {tag!r}")
    return name, codec, stored, decoded_length, fixed_end + stored_length


def _decompress(stored: memoryview, codec: str, decoded_length: int, name: str, path: Any) -> bytes:
    """The decoded section, which must be exactly `decoded_length` bytes; never allocates more than that."""
    try:
        if codec == "raw":
            out = bytes(stored)
        elif codec == "zstd":
            out = _zstd_decompress(stored, decoded_length)
        else:
            out = _lzma_decompress(stored, decoded_length)
    except (lzma.LZMAError, ValueError, EOFError, MemoryError) as error:
        raise SceneFormatError(path, f".exgs section {name!r} does not decompress ({codec}): {error}") from None
    except ImportError:
        raise SceneFormatError(
            path, f".exgs section {name!r} is zstd-compressed and the 'zstandard' module is not installed"
        ) from None
    if len(out) != decoded_length:
        raise SceneFormatError(
            path, f".exgs section {name!r} decodes to {len(out)} bytes, but declares {decoded_length}"
        )
    return out


def _zstd_decompress(stored: memoryview, decoded_length: int) -> bytes:
    import zstandard

    try:
        params = zstandard.get_frame_parameters(stored)
        if params.content_size != decoded_length:
            raise ValueError(f"its frame holds {params.content_size} bytes, not the declared {decoded_length}")
        if params.window_size > max(1 << 10, 2 * decoded_length):
            raise ValueError(f"its frame asks for a {params.window_size}-byte window")
        return zstandard.ZstdDecompressor().decompress(stored, max_output_size=decoded_length)
    except zstandard.ZstdError as error:
        raise ValueError(str(error)) from None


def _lzma_decompress(stored: memoryview, decoded_length: int) -> bytes:
    filters = [{"id": lzma.FILTER_LZMA2, "dict_size": _lzma_dict(decoded_length)}]
    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=filters)
    out = decompressor.decompress(bytes(stored), max_length=decoded_length)
    if not decompressor.eof and len(out) == decoded_length and not decompressor.needs_input:
        if decompressor.decompress(b"", max_length=1):
            raise ValueError(f"it holds more than the declared {decoded_length} bytes")
    if not decompressor.eof:
        raise ValueError("the stream is truncated")
    if decompressor.unused_data:
        raise ValueError(f"{len(decompressor.unused_data)} bytes follow the end of the stream")
    return out


# --- scenes --------------------------------------------------------------------------------------------------


def encode_exgs(
    scene: GaussianScene,
    settings: PackSettings | None = None,
    extra_header: dict[str, Any] | None = None,
    sh_degree: int | None = None,
    codec: str = DEFAULT_CODEC,
    packed: tuple[dict[str, Any], dict[str, bytes]] | None = None,
) -> bytes:
    """The .exgs file bytes of `scene` (see write_exgs); `packed`: pack_scene's output for these arguments,
    when the caller has it already (compress's size estimates pack the same Gaussians)."""
    header = build_header(scene, settings, extra_header)
    pack_fields, sections = packed or pack_scene(scene, sh_degree=sh_degree, settings=settings)
    header.update(pack_fields)
    return encode_container(header, sections, codec=codec)


def write_exgs(
    scene: GaussianScene,
    path: str | os.PathLike,
    settings: PackSettings | None = None,
    extra_header: dict[str, Any] | None = None,
    sh_degree: int | None = None,
    codec: str = DEFAULT_CODEC,
) -> int:
    """Pack `scene` and write it atomically to `path`; returns the number of bytes written.

    A fitted restoration and the compression record (how many Gaussians they were compressed from, hence the
    ratio) in the scene's metadata (read from an .exgs file) are written along: they describe these Gaussians. `extra_header` adds or replaces top-level header entries (source, compression, painter, anything new),
    but not the ones pack_scene writes. SH bands above `sh_degree` are dropped. `codec` is "lzma" (the
    default: standard library, smallest), "zstd", "raw" or "auto". Raises ValueError for a scene that cannot
    be packed, before the file is touched.
    """
    compression = (scene.metadata.get("exgs") or {}).get("compression")
    if isinstance(compression, dict) and "compression" not in (extra_header or {}):
        extra_header = {**(extra_header or {}), "compression": compression}  # keeps what it was compressed from
    data = encode_exgs(scene, settings, extra_header, sh_degree, codec)
    restoration = scene.metadata.get("restoration")
    if isinstance(restoration, Restoration):
        data = with_restoration(data, restoration)
    with atomic_write(path) as handle:
        handle.write(data)
    return len(data)


def build_header(
    scene: GaussianScene, settings: PackSettings | None = None, extra_header: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The descriptive header entries (everything but pack_scene's fields), with extra_header applied."""
    from exgs_core import __version__

    metadata = scene.metadata
    source: dict[str, Any] = {
        "name": metadata.get("source_name"),
        "bytes": metadata.get("source_bytes"),
        "format": metadata.get("format"),
        "count": len(scene),
        # compress packs Gaussians whose SH bands above what it keeps were cut early (to save memory)
        "sh_degree": metadata.get("source_sh_degree", scene.sh_degree),
    }
    if metadata.get("comments"):
        source["comments"] = [str(c) for c in metadata["comments"]]
    header: dict[str, Any] = {
        "created_by": f"exgs {__version__}",
        "source": source,
        "compression": {},
        "pack": (settings or PackSettings()).to_dict(),
        "painter": {"model_id": None},
    }
    for key, value in (extra_header or {}).items():
        if key in _PACK_KEYS:
            raise ValueError(f"extra_header may not set {key!r}: pack_scene writes it")
        header[key] = value
    return header


def read_exgs(path: str | os.PathLike) -> GaussianScene:
    """The scene stored in an .exgs file; SceneFormatError for anything malformed (OSError if unreadable).

    The scene's metadata holds format="exgs", source_bytes (this file's size), the source's comments, and
    the whole header under "exgs".
    """
    with open(path, "rb") as handle:
        data = handle.read()
    return decode_exgs(data, path)


def inria_ratio(scene: GaussianScene | SplitScene) -> float | None:
    """How many times smaller this scene's .exgs file is than the INRIA .ply of the Gaussians it was compressed
    from (248 bytes each), or None when the scene was not read from an .exgs file made by compression."""
    compression = (scene.metadata.get("exgs") or {}).get("compression") or {}
    count, size = compression.get("input_count"), scene.metadata.get("source_bytes")
    if not isinstance(count, int) or not isinstance(size, int) or size <= 0:
        return None
    return INRIA_BYTES_PER_GAUSSIAN * count / size

def read_exgs_header(data: bytes, path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The JSON header of .exgs bytes (checksum verified), without decoding any section."""
    return _read_header(memoryview(data), path)[0]


def decode_exgs(data: bytes, path: str | os.PathLike | None = None) -> GaussianScene:
    """The scene stored in .exgs bytes (see read_exgs); errors name `path` when given."""
    header, sections = decode_container(data, path, expected_sizes=scene_section_sizes)
    try:
        scene = unpack_scene(header, sections)
    except ValueError as error:
        raise SceneFormatError(path, f"the .exgs content is inconsistent: {error}") from None
    scene.metadata.update(format="exgs", source_bytes=len(data), exgs=header)
    if RESTORATION_SECTION in sections:
        scene.metadata["restoration"] = Restoration(header["restoration"], sections[RESTORATION_SECTION])
    source = header.get("source")
    if isinstance(source, dict) and isinstance(source.get("comments"), list):
        scene.metadata["comments"] = [c for c in source["comments"] if isinstance(c, str)]
    return scene


def scene_section_sizes(header: dict[str, Any]) -> dict[str, int]:
    """The sections a scene header calls for and their decoded lengths; ValueError if it is unusable."""
    check_pack_header(header)
    sizes = expected_section_sizes(header)
    if "restoration" in header:
        sizes[RESTORATION_SECTION] = restoration_payload_size(header["restoration"])
    return sizes


# --- the per-scene restoration (format 2) ---------------------------------------------------------------------

RESTORATION_SECTION = "restoration"
RESTORATION_KINDS = ("residual_cnn",)
RESTORATION_DTYPES = {"float16": np.dtype("<f2"), "int8": np.dtype("i1")}  # int8: times info["scales"][i]
MAX_RESTORATION_VALUES = 1 << 22


@dataclass(frozen=True)
class Restoration:
    """A restoration fitted to one scene while compressing it: what the header's "restoration" entry says
    (kind, config, tensor names and shapes, dtype, strength, validation) and the section's bytes (the tensors
    one after another, little-endian). exgs_core.painter.fit turns it into a torch module."""

    info: dict[str, Any]
    payload: bytes

    def __post_init__(self) -> None:
        expected = restoration_payload_size(self.info)
        if len(self.payload) != expected:
            raise ValueError(f"restoration payload holds {len(self.payload)} bytes; its tensors need {expected}")

    @property
    def strength(self) -> float:
        return float(self.info["strength"])

    @property
    def kind(self) -> str:
        return str(self.info["kind"])

    def arrays(self) -> dict[str, np.ndarray]:
        """The tensors by name: read-only views of the payload for float16, float32 values (int8 x the tensor's
        scale) for int8."""
        dtype = RESTORATION_DTYPES[self.info["dtype"]]
        scales = self.info.get("scales")
        out, offset = {}, 0
        for index, (name, shape) in enumerate(self.info["tensors"]):
            count = int(np.prod(shape, dtype=np.int64))
            out[name] = np.frombuffer(self.payload, dtype, count, offset).reshape(shape)
            if scales is not None:
                out[name] = out[name].astype(np.float32) * np.float32(scales[index])
            offset += count * dtype.itemsize
        return out

    def to_text(self) -> str:
        """One JSON string (payload in base64): how Blender keeps it as a custom property of the splat mesh."""
        return json.dumps({"info": self.info, "payload": base64.b64encode(self.payload).decode("ascii")})

    @classmethod
    def from_text(cls, text: str) -> "Restoration":
        """The restoration to_text() wrote; ValueError when the text is not one."""
        try:
            value = json.loads(text)
            info, payload = value["info"], base64.b64decode(value["payload"], validate=True)
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"not a stored restoration ({error})") from None
        return cls(info, payload)

    @classmethod
    def from_arrays(cls, kind: str, config: dict[str, Any], arrays: dict[str, np.ndarray], strength: float,
                    validated: dict[str, Any] | None = None, dtype: str = "float16") -> "Restoration":
        """`dtype` "int8" stores each tensor symmetrically quantised to int8 with its own scale (max |value| / 127,
        3 significant digits) in info["scales"]: half the bytes of float16."""
        if dtype == "int8":
            # 3 significant digits keep the header entry short; values beyond 127 x scale are clipped (< 0.5%)
            scales = [float(f"{np.abs(np.asarray(value, np.float32)).max() / 127:.3g}") or 1.0
                      for value in arrays.values()]
            stored = {name: np.ascontiguousarray(np.clip(np.rint(np.asarray(value, np.float32) / np.float32(scale)),
                                                         -127, 127), np.int8)
                      for (name, value), scale in zip(arrays.items(), scales)}
        else:
            stored = {name: np.ascontiguousarray(value, RESTORATION_DTYPES[dtype]) for name, value in arrays.items()}
        info = {"kind": kind, "config": dict(config), "dtype": dtype, "strength": round(float(strength), 4),
                "tensors": [[name, list(value.shape)] for name, value in stored.items()],
                "validated": dict(validated or {})}
        if dtype == "int8":
            info["scales"] = scales
        return cls(info, b"".join(value.tobytes() for value in stored.values()))


def restoration_payload_size(info: Any) -> int:
    """Bytes of the restoration section a header's "restoration" entry calls for; ValueError if unusable."""
    if not isinstance(info, dict):
        raise ValueError("'restoration' must be an object")
    if info.get("kind") not in RESTORATION_KINDS:
        raise ValueError(f"unknown restoration kind {info.get('kind')!r}; this reader knows "
                         f"{', '.join(RESTORATION_KINDS)}")
    if info.get("dtype") not in RESTORATION_DTYPES:
        raise ValueError(f"unknown restoration dtype {info.get('dtype')!r}")
    tensors = info.get("tensors")
    if info["dtype"] == "int8":
        scales = info.get("scales")
        if (not isinstance(scales, list) or not isinstance(tensors, list) or len(scales) != len(tensors)
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                           for v in scales)):
            raise ValueError("an int8 restoration needs 'scales': one positive number per tensor")
    strength = info.get("strength")
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
        raise ValueError(f"restoration strength must be a number in [0, 1], got {strength!r}")
    if not isinstance(info.get("config"), dict):
        raise ValueError("'restoration.config' must be an object")
    if not isinstance(tensors, list) or not tensors:
        raise ValueError("'restoration.tensors' must be a non-empty list of [name, shape]")
    total = 0
    for entry in tensors:
        if (not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[0], str)
                or not isinstance(entry[1], list)
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= MAX_RESTORATION_VALUES
                           for d in entry[1])):
            raise ValueError(f"'restoration.tensors' entry {str(entry)[:60]} is not [name, [positive sizes]]")
        total += int(np.prod(entry[1], dtype=np.int64))
        if total > MAX_RESTORATION_VALUES:
            raise ValueError(f"the restoration declares more than {MAX_RESTORATION_VALUES} values")
    return total * RESTORATION_DTYPES[info["dtype"]].itemsize


def read_restoration(path: str | os.PathLike) -> Restoration | None:
    """The restoration stored in an .exgs file, or None when it has none (or is another format)."""
    with open(path, "rb") as handle:
        if not is_exgs(handle.read(len(MAGIC))):
            return None
    return read_exgs(path).metadata.get("restoration")


def with_restoration(data: bytes, restoration: Restoration, path: str | os.PathLike | None = None,
                     header_updates: dict[str, Any] | None = None) -> bytes:
    """The .exgs bytes `data` with `restoration` added (header entry + section); the scene's sections are
    copied byte for byte. `header_updates` replaces top-level descriptive header entries (not pack_scene's).
    ValueError when `data` already holds a restoration."""
    view = memoryview(data).toreadonly()
    header, section_count, offset = _read_header(view, path)
    if "restoration" in header:
        raise ValueError("the .exgs data already holds a restoration")
    for key in header_updates or {}:
        if key in _PACK_KEYS or key == "restoration":
            raise ValueError(f"header_updates may not set {key!r}")
    header = {**header, **(header_updates or {}), "restoration": restoration.info}
    header_bytes = json.dumps(header, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    preamble = _PREAMBLE.pack(MAGIC, FORMAT_MAJOR, FORMAT_MINOR, section_count + 1, len(header_bytes))
    return b"".join([preamble, header_bytes, _CRC.pack(zlib.crc32(preamble[8:] + header_bytes)),
                     bytes(view[offset:]), _encode_section(RESTORATION_SECTION, restoration.payload, "auto")])


def is_exgs(data_start: bytes) -> bool:
    """True when `data_start` (the first bytes of a file) begins with the .exgs magic."""
    return data_start[: len(MAGIC)] == MAGIC


__all__ = [
    "MAGIC", "FORMAT_MAJOR", "FORMAT_MINOR", "CODECS", "encode_container", "decode_container", "encode_exgs",
    "decode_exgs", "read_exgs", "write_exgs", "build_header", "scene_section_sizes", "is_exgs", "compress",
    "Restoration", "RESTORATION_SECTION", "read_restoration", "with_restoration", "restoration_payload_size",
]
