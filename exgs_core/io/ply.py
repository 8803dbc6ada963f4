"""INRIA 3DGS .ply: read (binary little/big endian and ASCII, SH degree 0-3, with or without normals) and write.

Also holds the PLY header parser shared with the PlayCanvas compressed .ply module (pcply), and FormatWarning.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
from plyfile import PlyData, PlyElement, PlyParseError

from exgs_core.errors import NotGaussianPlyError, SceneFormatError
from exgs_core.fileio import atomic_write
from exgs_core.scene import GaussianScene, SplitScene
from exgs_core.sh import f_rest_name, num_sh_bases


class FormatWarning(UserWarning):
    """A scene file holds something exgs does not use (it is ignored) or cannot store (it is dropped)."""


PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
PLY_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}
MAX_HEADER_BYTES = 1 << 20
# the standard INRIA .ply at SH degree 3, the basis of "100x": x y z, normals, f_dc, 45 f_rest, opacity,
# 3 scales, 4 rotations; float32
INRIA_BYTES_PER_GAUSSIAN = 248

POSITION = ["x", "y", "z"]
NORMALS = ["nx", "ny", "nz"]
F_DC = ["f_dc_0", "f_dc_1", "f_dc_2"]
SCALES = ["scale_0", "scale_1", "scale_2"]
ROTATION = ["rot_0", "rot_1", "rot_2", "rot_3"]
REQUIRED = POSITION + F_DC + ["opacity"] + SCALES + ROTATION


@dataclass
class PlyProperty:
    name: str
    dtype: np.dtype  # value type, in the file's byte order
    list_count_dtype: np.dtype | None = None  # set for `property list`


@dataclass
class PlyElementHeader:
    name: str
    count: int
    properties: list[PlyProperty]

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.properties]

    @property
    def has_lists(self) -> bool:
        return any(p.list_count_dtype is not None for p in self.properties)

    def row_dtype(self) -> np.dtype:
        return np.dtype([(p.name, p.dtype) for p in self.properties])


@dataclass
class PlyHeader:
    format: str  # "ascii", "binary_little_endian" or "binary_big_endian"
    elements: list[PlyElementHeader]
    comments: list[str] = field(default_factory=list)
    data_offset: int = 0  # byte offset of the body

    def element(self, name: str) -> PlyElementHeader | None:
        return next((e for e in self.elements if e.name == name), None)


def read_ply_header(path: str | os.PathLike) -> PlyHeader:
    """Parse the header of a .ply file; SceneFormatError if it is not a well-formed PLY header."""
    with open(path, "rb") as handle:
        head = handle.read(MAX_HEADER_BYTES)
    if not (head.startswith(b"ply\n") or head.startswith(b"ply\r\n")):
        raise SceneFormatError(path, "not a PLY file (it does not start with the line 'ply')")
    end = _find_end_header(head)
    if end is None:
        problem = "truncated PLY header (no 'end_header' line)"
        if len(head) == MAX_HEADER_BYTES:
            problem = f"no 'end_header' line within the first {MAX_HEADER_BYTES} bytes: not a PLY file"
        raise SceneFormatError(path, problem)
    try:
        text = head[:end].decode("ascii")
    except UnicodeDecodeError:
        raise SceneFormatError(path, "the PLY header contains non-ASCII bytes") from None
    header = _parse_header_lines(path, text.splitlines()[1:])
    header.data_offset = end
    return header


def _find_end_header(head: bytes) -> int | None:
    """Byte offset just after the 'end_header' line, or None."""
    for terminator in (b"\nend_header\n", b"\nend_header\r\n"):
        index = head.find(terminator)
        if index >= 0:
            return index + len(terminator)
    return None


def _parse_header_lines(path: str | os.PathLike, lines: list[str]) -> PlyHeader:
    header = PlyHeader(format="", elements=[])
    for number, line in enumerate(lines, start=2):
        words = line.split()
        if not words:
            continue
        keyword = words[0]
        if keyword == "end_header":
            break
        if keyword == "comment":
            header.comments.append(line.strip()[len(keyword):].strip())
        elif keyword == "obj_info":
            continue
        elif keyword == "format":
            if len(words) != 3 or words[1] not in PLY_FORMATS:
                raise SceneFormatError(path, f"PLY header line {number}: unsupported format line '{line.strip()}'")
            header.format = words[1]
        elif keyword == "element":
            if len(words) != 3 or not words[2].isdigit():
                raise SceneFormatError(path, f"PLY header line {number}: malformed element line '{line.strip()}'")
            header.elements.append(PlyElementHeader(words[1], int(words[2]), []))
        elif keyword == "property":
            if not header.elements:
                raise SceneFormatError(path, f"PLY header line {number}: property before any element")
            header.elements[-1].properties.append(_parse_property(path, number, words, header.format))
        else:
            raise SceneFormatError(path, f"PLY header line {number}: unknown keyword '{keyword}'")
    if not header.format:
        raise SceneFormatError(path, "the PLY header has no 'format' line")
    return header


def _parse_property(path: str | os.PathLike, number: int, words: list[str], format: str) -> PlyProperty:
    byte_order = PLY_FORMATS.get(format) or "<"
    if len(words) == 3 and words[1] in PLY_TYPES:
        return PlyProperty(words[2], np.dtype(byte_order + PLY_TYPES[words[1]]))
    if len(words) == 5 and words[1] == "list" and words[2] in PLY_TYPES and words[3] in PLY_TYPES:
        count_dtype = np.dtype(byte_order + PLY_TYPES[words[2]])
        return PlyProperty(words[4], np.dtype(byte_order + PLY_TYPES[words[3]]), count_dtype)
    raise SceneFormatError(path, f"PLY header line {number}: malformed property line '{' '.join(words)}'")


def check_body_size(path: str | os.PathLike, header: PlyHeader, file_size: int) -> None:
    """Refuse a header that declares more rows than the file can hold, before anything is allocated."""
    available = file_size - header.data_offset
    # every ASCII value takes at least one character and one separator (the very last newline may be missing)
    slack = 1 if header.format == "ascii" else 0
    needed = 0
    for element in header.elements:
        if header.format == "ascii":
            row = 2 * len(element.properties)
        else:
            row = sum((p.list_count_dtype or p.dtype).itemsize for p in element.properties)
        needed += element.count * row
        if needed > available + slack:
            kind = "at least " if header.format == "ascii" or element.has_lists else ""
            raise SceneFormatError(
                path,
                f"truncated or inconsistent: the header declares {element.count} rows of element "
                f"'{element.name}', which need {kind}{needed} bytes, but only {available} bytes follow the header",
            )


def read_ply_elements(path: str | os.PathLike, header: PlyHeader, names: list[str]) -> dict[str, np.ndarray]:
    """Structured arrays of the named elements (sizes already checked with check_body_size)."""
    if _needs_plyfile(header):
        return _read_elements_with_plyfile(path, names)
    # Binary bodies without list properties are read with numpy directly: the header is already parsed and
    # checked against the file size, and a read-only memmap costs no copy (the caller copies only the columns
    # it uses), so 1.5M Gaussians read in about a second with ~1x the data in anonymous memory.
    arrays = {}
    offset = header.data_offset
    for element in header.elements:
        dtype = element.row_dtype()
        if element.name in names:
            if element.count == 0:
                arrays[element.name] = np.empty(0, dtype)
            else:
                arrays[element.name] = np.memmap(path, dtype, mode="r", offset=offset, shape=(element.count,))
        offset += element.count * dtype.itemsize
    return arrays


def _read_elements_with_plyfile(path: str | os.PathLike, names: list[str]) -> dict[str, np.ndarray]:
    try:
        ply = PlyData.read(str(path), mmap=False)
    except PlyParseError as error:
        raise SceneFormatError(path, f"malformed PLY body: {error}") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise SceneFormatError(path, f"malformed PLY body: {error}") from None
    return {element.name: element.data for element in ply.elements if element.name in names}


def read_ply(path: str | os.PathLike) -> GaussianScene:
    """Read an INRIA-layout .ply (binary LE/BE or ASCII); raw values are kept unchanged."""
    return cast(GaussianScene, _read(path, split=False))


def read_ply_split(path: str | os.PathLike) -> SplitScene:
    """read_ply's Gaussians as a SplitScene whose f_rest columns are separate arrays, with the same values."""
    return cast(SplitScene, _read(path, split=True))


def _read(path: str | os.PathLike, split: bool) -> GaussianScene | SplitScene:
    header, vertex, rest_count = _checked_vertices(path)
    scene, rest = SplitScene.to_fill(_empty_scene(vertex.count), num_sh_bases_for_rest(rest_count), split)
    columns = {**_scene_columns(scene.base if isinstance(scene, SplitScene) else scene), **rest}
    if _needs_plyfile(header):
        data = read_ply_elements(path, header, ["vertex"])["vertex"]
        for name, out in columns.items():
            out[:] = data[name]
    else:
        _read_binary_columns(path, header, vertex, columns)
    scene.metadata.update(format="ply", source_bytes=os.path.getsize(path))
    if header.comments:
        scene.metadata["comments"] = list(header.comments)
    return scene


def _needs_plyfile(header: PlyHeader) -> bool:
    """ASCII bodies and bodies with list properties are read by plyfile; others by numpy directly."""
    return header.format == "ascii" or any(e.has_lists for e in header.elements)


def _checked_vertices(path: str | os.PathLike) -> tuple[PlyHeader, PlyElementHeader, int]:
    """The header, its vertex element and the f_rest count of an INRIA .ply whose body size was checked."""
    header = read_ply_header(path)
    vertex = header.element("vertex")
    if vertex is None:
        raise SceneFormatError(path, "the PLY file has no 'vertex' element, so it holds no Gaussians")
    rest_count = _check_vertex_properties(path, vertex)
    check_body_size(path, header, os.path.getsize(path))
    _warn_about_ignored(path, header, vertex)
    return header, vertex, rest_count


def _check_vertex_properties(path: str | os.PathLike, vertex: PlyElementHeader) -> int:
    """Check the Gaussian properties exist and are scalars; return the number of f_rest properties."""
    names = vertex.names
    missing = [name for name in REQUIRED if name not in names]
    if missing and all(name in names for name in POSITION) and not any(name in names for name in F_DC + ["opacity"]):
        raise NotGaussianPlyError(
            path, "is a mesh or point-cloud PLY (its vertices have positions but none of the Gaussian properties "
                  "f_dc_0, opacity, scale_0, rot_0), not a Gaussian splat scene")
    if missing:
        raise SceneFormatError(
            path, f"element 'vertex' lacks the Gaussian propert{'y' if len(missing) == 1 else 'ies'} {', '.join(missing)}"
        )
    rest = sorted(int(n[len("f_rest_"):]) for n in names if n.startswith("f_rest_") and n[7:].isdigit())
    if rest != list(range(len(rest))) or len(rest) not in (0, 9, 24, 45):
        raise SceneFormatError(
            path, f"element 'vertex' has {len(rest)} f_rest properties; expected f_rest_0.. with 0, 9, 24 or 45 of them"
        )
    lists = [p.name for p in vertex.properties if p.list_count_dtype is not None and p.name in REQUIRED]
    if lists:
        raise SceneFormatError(path, f"element 'vertex' property {lists[0]} is a list, expected a scalar")
    return len(rest)


def _warn_about_ignored(path: str | os.PathLike, header: PlyHeader, vertex: PlyElementHeader) -> None:
    known = set(REQUIRED + NORMALS) | {f"f_rest_{i}" for i in range(45)}
    unknown = [name for name in vertex.names if name not in known]
    if unknown:
        warnings.warn(
            f"{path}: ignoring unknown properties of element 'vertex': {', '.join(unknown)}", FormatWarning,
            stacklevel=8,  # the caller of read_scene
        )
    others = [e.name for e in header.elements if e is not vertex]
    if others:
        warnings.warn(f"{path}: ignoring PLY elements {', '.join(others)}", FormatWarning, stacklevel=8)


# Rows decoded per read of a binary body: 16k rows of an SH-3 .ply are 4 MB, small next to any scene that
# needs chunking, large enough that the per-chunk overhead does not show (10M Gaussians read in ~20 s).
READ_CHUNK_ROWS = 1 << 14


def _empty_scene(count: int) -> GaussianScene:
    """Room for `count` Gaussians at SH degree 0 (the f_rest columns come from SplitScene.to_fill)."""
    return GaussianScene(np.empty((count, 3), np.float32), np.empty((count, 4), np.float32),
                         np.empty((count, 3), np.float32), np.empty(count, np.float32),
                         np.empty((count, 1, 3), np.float32))


def _scene_columns(scene: GaussianScene) -> dict[str, np.ndarray]:
    """The .ply property of each column of the scene's arrays but f_rest, as views of them."""
    columns = {name: scene.means[:, index] for index, name in enumerate(POSITION)}
    columns.update({name: scene.quats[:, index] for index, name in enumerate(ROTATION)})
    columns.update({name: scene.log_scales[:, index] for index, name in enumerate(SCALES)})
    columns["opacity"] = scene.opacity_logits
    columns.update({name: scene.sh[:, 0, channel] for channel, name in enumerate(F_DC)})
    return columns


def _read_binary_columns(path: str | os.PathLike, header: PlyHeader, vertex: PlyElementHeader,
                         columns: dict[str, np.ndarray]) -> None:
    """Fill each of `columns` (property name: a float32 (N,) array or a view of one) from a binary body, read in
    chunks of READ_CHUNK_ROWS rows.

    Only the destination arrays grow with the file: neither the file's bytes (a memmap's pages count as the
    process's memory while they are mapped: a 10M-Gaussian SH-3 file is 2.5 GB) nor a structured copy of them
    is held beside them. Values are converted to float32 as those of a plyfile body are (`_read`).
    """
    offset = header.data_offset
    for element in header.elements:
        if element is vertex:
            break
        offset += element.count * element.row_dtype().itemsize
    dtype = vertex.row_dtype()
    count = vertex.count
    with open(path, "rb") as handle:
        handle.seek(offset)
        for start in range(0, count, READ_CHUNK_ROWS):
            rows = min(READ_CHUNK_ROWS, count - start)
            data = np.fromfile(handle, dtype, rows)
            if len(data) != rows:  # the file shrank after its size was checked
                raise SceneFormatError(path, f"truncated: the body ends after {start + len(data)} of {count} rows")
            for name, out in columns.items():
                out[start : start + rows] = data[name]
            del data  # before the next chunk is read


def num_sh_bases_for_rest(rest_count: int) -> int:
    """SH coefficients per channel (1, 4, 9, 16) for 0, 9, 24 or 45 f_rest values."""
    return 1 + rest_count // 3


def inria_property_names(sh_degree: int) -> list[str]:
    rest = 3 * (num_sh_bases(sh_degree) - 1)
    return POSITION + NORMALS + F_DC + [f"f_rest_{i}" for i in range(rest)] + ["opacity"] + SCALES + ROTATION


def write_ply(scene: GaussianScene, path: str | os.PathLike) -> None:
    """Write the INRIA layout: float32 binary little endian, zero normals, f_rest channel-major."""
    rows = inria_rows(scene)
    ply = PlyData([PlyElement.describe(rows, "vertex")], byte_order="<", comments=_header_comments(scene))
    with atomic_write(Path(path)) as handle:
        ply.write(handle)


def inria_rows(scene: GaussianScene) -> np.ndarray:
    """The scene as the INRIA .ply's vertex rows: a structured little-endian float32 array, zero normals."""
    names = inria_property_names(scene.sh_degree)
    rows = np.zeros(len(scene), dtype=[(name, "<f4") for name in names])
    for index, name in enumerate(POSITION):
        rows[name] = scene.means[:, index]
    k = scene.sh.shape[1]
    for channel in range(3):
        rows[F_DC[channel]] = scene.sh[:, 0, channel]
        for coefficient in range(1, k):
            rows[f_rest_name(channel, coefficient, k)] = scene.sh[:, coefficient, channel]
    rows["opacity"] = scene.opacity_logits
    for index, name in enumerate(SCALES):
        rows[name] = scene.log_scales[:, index]
    for index, name in enumerate(ROTATION):
        rows[name] = scene.quats[:, index]
    return rows


def _header_comments(scene: GaussianScene) -> list[str]:
    """The comments read from the source (credits, licences), where they are still valid header lines."""
    comments = scene.metadata.get("comments") or []
    return [c for c in comments if isinstance(c, str) and c.isascii() and "\n" not in c and "\r" not in c]
