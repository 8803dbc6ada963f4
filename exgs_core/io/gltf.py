"""glTF 2.0 (.glb binary or .gltf JSON) with KHR_gaussian_splatting: read and write.

Each Gaussian is a point of a `mode: 0` primitive whose `extensions` hold `KHR_gaussian_splatting`. Attributes, as
splat-transform 3.7.0 writes them: POSITION (float VEC3), COLOR_0 (unsigned byte normalised RGBA, a fallback for
point viewers), KHR_gaussian_splatting:ROTATION (VEC4 x, y, z, w), :SCALE (VEC3), :OPACITY (SCALAR, sigmoid applied)
and :SH_DEGREE_l_COEF_n (VEC3 RGB per coefficient, n = 0..2l). glTF is y-up: the scene is turned 180 degrees about
z on the way in and out (splat-transform's convention between .ply and glTF space), so a .ply written by any tool
and its .glb render the same.

SCALE: splat-transform stores linear scales (exp applied); the Khronos draft says log space. We write linear, as
splat-transform does, and read files from splat-transform or exgs as linear; for other writers, values <= 0 mean log
space. The container is parsed here (a few lines of struct) rather than with pygltflib so that the Blender
extension, whose Python has no extra packages, reads and writes glTF too.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import struct
from pathlib import Path
from typing import Callable, cast

import numpy as np

from exgs_core.errors import SceneFormatError
from exgs_core.fileio import atomic_write
from exgs_core.scene import GaussianScene, SplitScene, quat_to_rotation
from exgs_core.sh import f_rest_name, rgb_to_sh0, sh0_to_rgb, sh_degree_for_bases

EXTENSION = "KHR_gaussian_splatting"
PREFIX = EXTENSION + ":"
GLB_MAGIC, JSON_CHUNK, BIN_CHUNK = b"glTF", 0x4E4F534A, 0x004E4942
COMPONENT_TYPES = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
TYPE_SIZES = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}
KNOWN_REQUIRED = {EXTENSION, "KHR_mesh_quantization"}
LINEAR_SCALE_GENERATORS = ("splat-transform", "exgs")
GENERATOR = "exgs"


def read_gltf(path: str | os.PathLike) -> GaussianScene:
    return cast(GaussianScene, _read(Path(path), split=False))


def read_gltf_split(path: str | os.PathLike) -> SplitScene:
    """read_gltf's Gaussians as a SplitScene. From one untransformed splat primitive (as splat-transform and exgs
    write them) its f_rest columns are separate arrays, decoded one SH coefficient at a time (no (N, K, 3) block);
    from several primitives or transformed nodes, views of read_gltf's scene. The same values either way."""
    return cast(SplitScene, _read(Path(path), split=True))


def _read(path: Path, split: bool) -> GaussianScene | SplitScene:
    document, binary = _load(path)
    _check_required_extensions(path, document)
    found = _splat_primitives(path, document)
    if not found:
        raise SceneFormatError(path, f"the glTF file holds no {EXTENSION} primitive (no Gaussian splats)")
    scene: GaussianScene | SplitScene
    if len(found) == 1 and np.allclose(found[0][1], np.eye(4)):
        base, coefficients = _decode_primitive(path, document, binary, found[0][0])
        scene = _with_sh(path, _turn_about_z(base, inverse=True), coefficients, split, turned=True)
    else:
        parts = []
        for primitive, matrix in found:
            part = cast(GaussianScene, _with_sh(path, *_decode_primitive(path, document, binary, primitive), False))
            if not np.allclose(matrix, np.eye(4)):
                try:
                    part = part.transformed(matrix)
                except ValueError as error:
                    raise SceneFormatError(path, f"a node holding splats has an unsupported transform: {error}") from None
            parts.append(part)
        scene = _turn_about_z(GaussianScene.concatenate(parts), inverse=True)
        if split:
            scene = SplitScene.of(scene)
    scene.metadata.update(format="gltf", source_bytes=path.stat().st_size)
    return scene


def _with_sh(path: Path, base: GaussianScene, coefficients: list[Callable[[], np.ndarray]], split: bool,
             turned: bool = False) -> GaussianScene | SplitScene:
    """`base` with the SH coefficients that `coefficients` decode (1..K-1, each (N, 3)), one at a time into their
    f_rest columns (SplitScene.to_fill); `turned`: as _turn_about_z turns them, for a base it has turned."""
    k = 1 + len(coefficients)
    scene, columns = SplitScene.to_fill(base, k, split)
    signs = _turn_signs(k) if turned else np.ones(k, np.float32)
    for coefficient, decode in enumerate(coefficients, start=1):
        values = decode()
        if len(values) != len(base):
            raise SceneFormatError(path, f"the spherical harmonics attributes do not have {len(base)} values each")
        values = values.astype(np.float32) * signs[coefficient]
        for channel in range(3):
            columns[f_rest_name(channel, coefficient, k)][:] = values[:, channel]
        del values
    return scene


# --- container ------------------------------------------------------------------------------------

class _Stored:
    """The bytes of a glTF buffer: in memory (a data URI), or a range of a file (a .glb's binary chunk, a .bin
    beside a .gltf) read a view at a time, so that a large file is never held whole (a 10M-Gaussian SH-3 .glb is
    2.4 GB)."""

    def __init__(self, path: Path, data: bytes | None = None, file: Path | None = None, offset: int = 0,
                 size: int = 0):
        self.path, self.data, self.file, self.offset = path, data, file, offset
        self.size = len(data) if data is not None else size

    def __len__(self) -> int:
        return self.size

    def read(self, start: int, size: int) -> np.ndarray:
        """`size` bytes from `start` (within len(self)) as a uint8 array."""
        if self.data is not None:
            return np.frombuffer(self.data, np.uint8, size, start)
        assert self.file is not None
        with open(self.file, "rb") as handle:
            handle.seek(self.offset + start)
            raw = np.fromfile(handle, np.uint8, size)
        if len(raw) != size:  # the file shrank after it was measured
            raise SceneFormatError(self.path, f"{self.file.name} is truncated (it ends within a buffer)")
        return raw


def _load(path: Path) -> tuple[dict, _Stored | None]:
    """The JSON document and the GLB binary chunk (None for .gltf)."""
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic == GLB_MAGIC:
        return _parse_glb(path)
    data = path.read_bytes()
    try:
        document = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SceneFormatError(path, f"not a glTF file: neither GLB nor JSON ({error})") from None
    if not isinstance(document, dict):
        raise SceneFormatError(path, "not a glTF file: the JSON is not an object")
    _check_asset_version(path, document)
    return document, None


def _parse_glb(path: Path) -> tuple[dict, _Stored | None]:
    """The JSON chunk, read, and the binary chunk, a range of the file read when an accessor needs it."""
    file_size = path.stat().st_size
    if file_size < 20:
        raise SceneFormatError(path, "the .glb file is truncated (shorter than its 20-byte header)")
    with open(path, "rb") as handle:
        version, length = struct.unpack("<II", handle.read(12)[4:])
        if version != 2:
            raise SceneFormatError(path, f"GLB container version {version} is not supported (only glTF 2.0)")
        if length > file_size:
            raise SceneFormatError(path, f"the .glb file is truncated ({file_size} of {length} bytes)")
        chunks, offset = {}, 12
        while offset + 8 <= length:
            handle.seek(offset)
            size, kind = struct.unpack("<II", handle.read(8))
            if offset + 8 + size > length:
                raise SceneFormatError(path, f"a GLB chunk runs past the end of the file (at byte {offset})")
            chunks.setdefault(kind, (offset + 8, size))
            offset += 8 + ((size + 3) & ~3)
        if JSON_CHUNK not in chunks:
            raise SceneFormatError(path, "the .glb file has no JSON chunk")
        handle.seek(chunks[JSON_CHUNK][0])
        text = handle.read(chunks[JSON_CHUNK][1])
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SceneFormatError(path, f"the .glb JSON chunk is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise SceneFormatError(path, "the .glb JSON chunk is not an object")
    _check_asset_version(path, document)
    if BIN_CHUNK not in chunks:
        return document, None
    return document, _Stored(path, file=path, offset=chunks[BIN_CHUNK][0], size=chunks[BIN_CHUNK][1])


def _check_asset_version(path: Path, document: dict) -> None:
    version = str(document.get("asset", {}).get("version", ""))
    if not version.startswith("2."):
        raise SceneFormatError(path, f"glTF version {version or '(missing)'!s} is not supported (only glTF 2.0)")


def _check_required_extensions(path: Path, document: dict) -> None:
    unknown = sorted(set(document.get("extensionsRequired", [])) - KNOWN_REQUIRED)
    if unknown:
        raise SceneFormatError(path, f"the glTF file requires extensions exgs does not read: {', '.join(unknown)}")


def _buffer(path: Path, document: dict, binary: _Stored | None, index: int) -> _Stored:
    buffers = document.get("buffers", [])
    if not 0 <= index < len(buffers):
        raise SceneFormatError(path, f"glTF buffer {index} does not exist")
    uri = buffers[index].get("uri")
    if uri is None:
        if binary is None:
            raise SceneFormatError(path, f"glTF buffer {index} has no uri and the file has no GLB binary chunk")
        return binary
    if uri.startswith("data:"):
        try:
            return _Stored(path, base64.b64decode(uri.split(",", 1)[1], validate=True))
        except (IndexError, ValueError):
            raise SceneFormatError(path, f"glTF buffer {index} has a malformed data URI") from None
    file = (path.parent / uri).resolve()
    if path.parent.resolve() not in file.parents or not file.is_file():
        raise SceneFormatError(path, f"glTF buffer {index} refers to {uri!r}, which is not a file beside the .gltf")
    return _Stored(path, file=file, size=file.stat().st_size)


def _accessor(path: Path, document: dict, binary: _Stored | None, index: int, name: str) -> np.ndarray:
    """An accessor's values (count, components) as float64, normalised integers mapped to [0, 1] or [-1, 1]."""
    accessors = document.get("accessors", [])
    if not isinstance(index, int) or not 0 <= index < len(accessors):
        raise SceneFormatError(path, f"attribute {name} refers to accessor {index!r}, which does not exist")
    acc = accessors[index]
    if "sparse" in acc:
        raise SceneFormatError(path, f"attribute {name} uses a sparse accessor, which exgs does not read")
    dtype = COMPONENT_TYPES.get(acc.get("componentType"))
    width = TYPE_SIZES.get(acc.get("type"))
    count = acc.get("count")
    if dtype is None or width is None or not isinstance(count, int) or count < 0:
        raise SceneFormatError(path, f"attribute {name} has an invalid accessor (type, componentType or count)")
    dtype = np.dtype(dtype).newbyteorder("<")
    if "bufferView" not in acc:
        values = np.zeros((count, width), dtype)
    else:
        values = _read_view(path, document, binary, acc, dtype, width, count, name)
    out = values.astype(np.float64)
    if acc.get("normalized") and dtype.kind in "iu":
        limit = float(np.iinfo(dtype).max)
        out = np.maximum(out / limit, -1.0)
    return out


def _read_view(path, document, binary, acc, dtype, width, count, name) -> np.ndarray:
    views = document.get("bufferViews", [])
    view_index = acc["bufferView"]
    if not isinstance(view_index, int) or not 0 <= view_index < len(views):
        raise SceneFormatError(path, f"attribute {name} refers to bufferView {view_index!r}, which does not exist")
    view = views[view_index]
    data = _buffer(path, document, binary, view.get("buffer", 0))
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    element = dtype.itemsize * width
    stride = view.get("byteStride") or element
    end_view = view.get("byteOffset", 0) + view.get("byteLength", 0)
    needed = start + stride * (count - 1) + element if count else start
    if needed > min(end_view, len(data)) or stride < element:
        raise SceneFormatError(path, f"attribute {name} reads past the end of its buffer ({count} values)")
    if count == 0:
        return np.zeros((0, width), dtype)
    raw = data.read(start, needed - start)
    rows = np.lib.stride_tricks.as_strided(raw, (count, element), (stride, 1))
    return np.ascontiguousarray(rows).view(dtype).reshape(count, width)


# --- scene graph ------------------------------------------------------------------------------------

def _splat_primitives(path: Path, document: dict) -> list[tuple[dict, np.ndarray]]:
    """Every splat primitive with the world matrix of the node that holds it."""
    meshes, nodes = document.get("meshes", []), document.get("nodes", [])
    found = []
    for node_index, matrix in _node_matrices(path, document):
        mesh_index = nodes[node_index].get("mesh")
        if mesh_index is None:
            continue
        if not isinstance(mesh_index, int) or not 0 <= mesh_index < len(meshes):
            raise SceneFormatError(path, f"node {node_index} refers to mesh {mesh_index!r}, which does not exist")
        for primitive in meshes[mesh_index].get("primitives", []):
            attributes = primitive.get("attributes", {})
            if EXTENSION in primitive.get("extensions", {}) or PREFIX + "ROTATION" in attributes:
                found.append((primitive, matrix))
    return found


def _node_matrices(path: Path, document: dict) -> list[tuple[int, np.ndarray]]:
    nodes = document.get("nodes", [])
    scenes = document.get("scenes", [])
    if scenes:
        index = document.get("scene", 0)
        if not isinstance(index, int) or not 0 <= index < len(scenes):
            raise SceneFormatError(path, f"the glTF default scene {index!r} does not exist")
        roots = scenes[index].get("nodes", [])
    else:
        children = {c for node in nodes for c in node.get("children", [])}
        roots = [i for i in range(len(nodes)) if i not in children]
    out, stack, seen = [], [(r, np.eye(4)) for r in roots], set()
    while stack:
        index, parent = stack.pop()
        if not isinstance(index, int) or not 0 <= index < len(nodes) or index in seen:
            raise SceneFormatError(path, f"the glTF node hierarchy is invalid at node {index!r}")
        seen.add(index)
        matrix = parent @ _local_matrix(nodes[index])
        out.append((index, matrix))
        stack.extend((child, matrix) for child in nodes[index].get("children", []))
    return out


def _local_matrix(node: dict) -> np.ndarray:
    if "matrix" in node:
        return np.asarray(node["matrix"], np.float64).reshape(4, 4).T  # column-major in glTF
    matrix = np.eye(4)
    x, y, z, w = node.get("rotation", (0.0, 0.0, 0.0, 1.0))
    matrix[:3, :3] = quat_to_rotation(np.array([w, x, y, z], np.float64)) * np.asarray(node.get("scale", (1, 1, 1)))
    matrix[:3, 3] = node.get("translation", (0.0, 0.0, 0.0))
    return matrix


# --- attributes -------------------------------------------------------------------------------------

def _decode_primitive(path: Path, document: dict, binary: _Stored | None,
                      primitive: dict) -> tuple[GaussianScene, list[Callable[[], np.ndarray]]]:
    """The primitive's Gaussians with their DC term only, and for each higher SH coefficient (1..K-1) a function
    that decodes its (N, 3) values, for the caller to decode one at a time."""
    attributes = primitive.get("attributes", {})

    def get(name: str, width: int) -> np.ndarray:
        if name not in attributes:
            raise SceneFormatError(path, f"a {EXTENSION} primitive has no {name} attribute")
        values = _accessor(path, document, binary, attributes[name], name)
        if values.shape[1] != width:
            raise SceneFormatError(path, f"attribute {name} has {values.shape[1]} components, expected {width}")
        return values

    means = get("POSITION", 3)
    n = len(means)
    xyzw = get(PREFIX + "ROTATION", 4)
    scales = get(PREFIX + "SCALE", 3)
    opacity = get(PREFIX + "OPACITY", 1)[:, 0]
    if PREFIX + "SH_DEGREE_0_COEF_0" in attributes:
        dc = get(PREFIX + "SH_DEGREE_0_COEF_0", 3)
    else:
        dc = rgb_to_sh0(get("COLOR_0", 4)[:, :3])
    coefficients = _higher_sh(path, attributes, get)
    for name, values in (("ROTATION", xyzw), ("SCALE", scales), ("OPACITY", opacity)):
        if len(values) != n:
            raise SceneFormatError(path, f"attribute {PREFIX}{name} has {len(values)} values for {n} positions")
    if len(dc) != n:
        raise SceneFormatError(path, f"the spherical harmonics attributes do not have {n} values each")
    with np.errstate(divide="ignore", invalid="ignore"):
        log_scales = np.log(scales) if _linear_scales(document, scales) else scales
        alpha = np.clip(opacity, 0.0, 1.0)
        logits = np.log(alpha) - np.log1p(-alpha)
    quats = xyzw[:, [3, 0, 1, 2]]
    return GaussianScene(means, quats, log_scales, logits, dc[:, None, :]), coefficients


def _higher_sh(path: Path, attributes: dict, get) -> list[Callable[[], np.ndarray]]:
    out: list[Callable[[], np.ndarray]] = []
    for degree in (1, 2, 3):
        names = [f"{PREFIX}SH_DEGREE_{degree}_COEF_{n}" for n in range(2 * degree + 1)]
        present = [name in attributes for name in names]
        if not any(present):
            break
        if not all(present):
            raise SceneFormatError(path, f"spherical harmonics degree {degree} is only partly defined")
        out += [functools.partial(get, name, 3) for name in names]
    return out


def _linear_scales(document: dict, scales: np.ndarray) -> bool:
    generator = str(document.get("asset", {}).get("generator", ""))
    if generator.startswith(LINEAR_SCALE_GENERATORS):
        return True
    return bool((scales > 0).all())


def _turn_about_z(scene: GaussianScene, inverse: bool = False) -> GaussianScene:
    """The scene turned 180 degrees about z, exactly: x, y negated, SH with odd m negated, quaternion (0,0,0,1) * q
    (its inverse (0,0,0,-1) * q when reading, so that writing then reading gives back q, not -q)."""
    means = scene.means * np.array([-1.0, -1.0, 1.0], np.float32)
    w, x, y, z = scene.quats.T
    quats = np.stack([z, y, -x, -w] if inverse else [-z, -y, x, w], axis=1)
    sh = scene.sh * _turn_signs(scene.sh.shape[1])[None, :, None]
    return GaussianScene(means, quats, scene.log_scales, scene.opacity_logits, sh, dict(scene.metadata))


def _turn_signs(num_bases: int) -> np.ndarray:
    """Per SH coefficient, its factor under a turn of 180 degrees about z: -1 where m is odd."""
    sign = np.ones(num_bases, np.float32)
    for degree in range(1, sh_degree_for_bases(num_bases) + 1):
        for m in range(-degree, degree + 1):
            sign[degree * degree + m + degree] = -1.0 if m % 2 else 1.0
    return sign


# --- writing ----------------------------------------------------------------------------------------

def encode_gltf(scene: GaussianScene) -> tuple[dict, bytes]:
    """The glTF document and its binary buffer (splat-transform's layout, in glTF's y-up space)."""
    turned = _turn_about_z(scene)
    n = len(turned)
    rgba = np.empty((n, 4), np.float64)
    rgba[:, :3] = sh0_to_rgb(turned.sh[:, 0, :].astype(np.float64))
    rgba[:, 3] = turned.opacities()
    w, x, y, z = turned.quats.T
    segments: list[tuple[str, np.ndarray, int, str, bool]] = [
        ("POSITION", turned.means, 5126, "VEC3", False),
        ("COLOR_0", np.clip(np.round(rgba * 255.0), 0, 255).astype(np.uint8), 5121, "VEC4", True),
        (PREFIX + "ROTATION", np.stack([x, y, z, w], axis=1), 5126, "VEC4", False),
        (PREFIX + "SCALE", np.exp(turned.log_scales), 5126, "VEC3", False),
        (PREFIX + "OPACITY", turned.opacities()[:, None], 5126, "SCALAR", False),
    ]
    for degree in range(turned.sh_degree + 1):
        for n_coef in range(2 * degree + 1):
            k = degree * degree + n_coef
            segments.append((f"{PREFIX}SH_DEGREE_{degree}_COEF_{n_coef}", turned.sh[:, k, :], 5126, "VEC3", False))
    views, accessors, attributes, chunks, offset = [], [], {}, [], 0
    for index, (name, values, component, kind, normalized) in enumerate(segments):
        data = np.asarray(values).astype(np.dtype(COMPONENT_TYPES[component]).newbyteorder("<")).tobytes()
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(data), "target": 34962})
        accessor = {"bufferView": index, "byteOffset": 0, "componentType": component, "count": n, "type": kind}
        if normalized:
            accessor["normalized"] = True
        if name == "POSITION":
            accessor["min"] = [float(v) for v in turned.means.min(axis=0)]
            accessor["max"] = [float(v) for v in turned.means.max(axis=0)]
        accessors.append(accessor)
        attributes[name] = index
        padded = data + b"\0" * (-len(data) % 4)
        chunks.append(padded)
        offset += len(padded)
    binary = b"".join(chunks)
    document = {
        "asset": {"version": "2.0", "generator": GENERATOR},
        "extensionsUsed": [EXTENSION],
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "buffers": [{"byteLength": len(binary)}],
        "bufferViews": views,
        "accessors": accessors,
        "meshes": [{"primitives": [{
            "attributes": attributes,
            "mode": 0,
            "extensions": {EXTENSION: {
                "kernel": "ellipse", "colorSpace": "srgb_rec709_display",
                "sortingMethod": "cameraDistance", "projection": "perspective",
            }},
        }]}],
    }
    return document, binary


def write_glb(scene: GaussianScene, path: str | os.PathLike) -> None:
    document, binary = encode_gltf(scene)
    text = json.dumps(document, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)
    total = 12 + 8 + len(text) + 8 + len(binary)
    with atomic_write(Path(path)) as handle:
        handle.write(struct.pack("<4sII", GLB_MAGIC, 2, total))
        handle.write(struct.pack("<II", len(text), JSON_CHUNK) + text)
        handle.write(struct.pack("<II", len(binary), BIN_CHUNK) + binary)


def write_gltf(scene: GaussianScene, path: str | os.PathLike) -> None:
    """A single self-contained .gltf: the binary buffer is embedded as a base64 data URI."""
    document, binary = encode_gltf(scene)
    document["buffers"][0]["uri"] = "data:application/octet-stream;base64," + base64.b64encode(binary).decode("ascii")
    with atomic_write(Path(path)) as handle:
        handle.write(json.dumps(document, separators=(",", ":")).encode("utf-8"))

