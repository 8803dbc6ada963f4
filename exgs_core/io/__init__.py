"""Scene file formats: read any supported 3DGS file into a GaussianScene, write one back.

One module per format: ply (INRIA), pcply (PlayCanvas .compressed.ply), splat (antimatter15), sog (PlayCanvas
SOG v2; sog_write writes it), spz (Niantic), gltf (glTF 2.0 with KHR_gaussian_splatting). The format of a file is
chosen by its content first (PLY magic and header, zip, gzip, NGSP, glTF, JSON), then by its extension.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, NamedTuple, TypeVar

import numpy as np

from exgs_core.errors import SceneFormatError
from exgs_core.io.exgs import is_exgs, read_exgs, write_exgs
from exgs_core.io.gltf import read_gltf, read_gltf_split, write_glb, write_gltf
from exgs_core.io.pcply import read_compressed_ply, read_compressed_ply_split, write_compressed_ply
from exgs_core.io.ply import FormatWarning, read_ply, read_ply_header, read_ply_split, write_ply
from exgs_core.io.sog import ImageDecoder, read_sog, read_sog_split
from exgs_core.io.sog_write import ImageEncoder, write_sog
from exgs_core.io.splat import read_splat, write_splat
from exgs_core.io.spz import read_spz, read_spz_split, write_spz
from exgs_core.scene import GaussianScene, SplitScene
from exgs_core.validate import describe_non_finite, drop_non_finite, non_finite_rows


T = TypeVar("T")


class FileFormat(NamedTuple):
    name: str
    extensions: tuple[str, ...]
    description: str


READABLE_FORMATS: list[FileFormat] = [
    FileFormat("ply", (".ply",), "INRIA 3DGS .ply (binary or ASCII, SH degree 0-3)"),
    FileFormat("compressed-ply", (".compressed.ply",), "PlayCanvas / SuperSplat compressed .ply"),
    FileFormat("splat", (".splat",), "antimatter15 .splat (32 bytes per Gaussian, no SH)"),
    FileFormat("sog", (".sog", "meta.json"), "PlayCanvas SOG v2: a .sog zip, a folder with meta.json, or meta.json"),
    FileFormat("spz", (".spz",), "Niantic .spz, versions 2, 3 and 4 (4 needs zstandard), SH degree 0-3"),
    FileFormat("gltf", (".glb", ".gltf"), "glTF 2.0 with KHR_gaussian_splatting (binary .glb or .gltf)"),
    FileFormat("exgs", (".exgs",), "ExGS compressed scene"),
]
WRITABLE_FORMATS: list[FileFormat] = [
    FileFormat("ply", (".ply",), "INRIA 3DGS .ply (float32, binary little endian)"),
    FileFormat("compressed-ply", (".compressed.ply",), "PlayCanvas / SuperSplat compressed .ply"),
    FileFormat("splat", (".splat",), "antimatter15 .splat (SH above degree 0 is dropped)"),
    FileFormat("sog", (".sog", "meta.json"), "PlayCanvas SOG v2: a bundled .sog zip, or meta.json + WebP images"),
    FileFormat("spz", (".spz",), "Niantic .spz version 3 (gzip; the most widely read)"),
    FileFormat("gltf", (".glb", ".gltf"), "glTF 2.0 with KHR_gaussian_splatting, as splat-transform writes it"),
    FileFormat("exgs", (".exgs",), "ExGS container, all Gaussians quantised (use `exgs compress` to prune)"),
]

_READERS: dict[str, Callable[[Path], GaussianScene]] = {
    "ply": read_ply,
    "compressed-ply": read_compressed_ply,
    "splat": read_splat,
    "spz": read_spz,
    "gltf": read_gltf,
    "exgs": read_exgs,
}  # and "sog", read by read_sog, the one reader that takes an image decoder
_SPLIT_READERS: dict[str, Callable[[Path], SplitScene]] = {
    "ply": read_ply_split,
    "compressed-ply": read_compressed_ply_split,
    "spz": read_spz_split,
    "gltf": read_gltf_split,
}  # and "sog", read_sog_split
_WRITERS: dict[str, Callable[[GaussianScene, Path], None]] = {
    "ply": write_ply,
    "compressed-ply": write_compressed_ply,
    "splat": write_splat,
    "spz": write_spz,
    "gltf": lambda scene, path: (write_gltf if Path(path).suffix.lower() == ".gltf" else write_glb)(scene, path),
    "exgs": lambda scene, path: write_exgs(scene, path),
}  # and "sog", written by write_sog, the one writer that takes an image encoder

__all__ = [
    "FileFormat",
    "FormatWarning",
    "ImageDecoder",
    "ImageEncoder",
    "READABLE_FORMATS",
    "WRITABLE_FORMATS",
    "detect_format",
    "read_scene",
    "read_split_scene",
    "write_scene",
]


def detect_format(path: str | os.PathLike) -> str:
    """The format name of a scene file or folder ("ply", "compressed-ply", "splat", "sog", "spz", "gltf" or "exgs")."""
    path = Path(path)
    if not path.exists():
        raise SceneFormatError(path, "no such file or directory")
    if path.is_dir():
        if (path / "meta.json").is_file():
            return "sog"
        raise SceneFormatError(path, "the folder has no meta.json, so it is not a SOG scene")
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as error:
        raise SceneFormatError(path, f"cannot read the file: {error.strerror or error}") from None
    if head.startswith(b"ply\n") or head.startswith(b"ply\r\n"):
        return "compressed-ply" if read_ply_header(path).element("chunk") is not None else "ply"
    if is_exgs(head):
        return "exgs"
    if head.startswith(b"PK\x03\x04"):
        return "sog"
    suffix = path.suffix.lower()
    if head.startswith(b"glTF") or (suffix == ".gltf" and head.lstrip().startswith(b"{")):
        return "gltf"
    if head.startswith(b"NGSP") or (head.startswith(b"\x1f\x8b") and suffix == ".spz"):
        return "spz"
    if path.name.lower().endswith(".json") and head.lstrip().startswith(b"{"):
        return "sog"
    if suffix == ".ply":
        raise SceneFormatError(path, "not a PLY file (it does not start with the line 'ply')")
    if suffix == ".splat":
        return "splat"
    if suffix == ".sog":
        raise SceneFormatError(path, "not a .sog file (it is not a zip archive)")
    if suffix == ".exgs":
        raise SceneFormatError(path, "not an .exgs file (wrong magic bytes)")
    if suffix == ".spz":
        raise SceneFormatError(path, "not an .spz file (neither gzip nor an NGSP header)")
    if suffix in (".glb", ".gltf"):
        raise SceneFormatError(path, f"not a glTF file (no glTF magic or JSON object in this {suffix})")
    known = ", ".join(f"{f.name} ({', '.join(f.extensions)})" for f in READABLE_FORMATS)
    raise SceneFormatError(path, f"unknown scene format; readable formats are {known}")


def read_scene(
    path: str | os.PathLike, decode_image: ImageDecoder | None = None, filter_nan: bool = False
) -> GaussianScene:
    """Read a scene file (format by content and extension); SceneFormatError if it is unreadable or broken.

    decode_image decodes SOG's WebP images (Pillow by default; the Blender extension passes Blender's decoder).
    Gaussians with NaN or infinite values (but +-inf opacity logits and -inf log-scales) are an error, or with
    `filter_nan` are dropped with a FormatWarning saying how many.
    """
    path = Path(path)
    format = detect_format(path)
    scene = _reading(path, lambda: read_sog(path, decode_image) if format == "sog" else _READERS[format](path))
    scene = _check_read_scene(path, scene, filter_nan)
    scene.metadata["source_name"] = _source_name(path)
    return scene


def read_split_scene(path: str | os.PathLike, decode_image: ImageDecoder | None = None) -> SplitScene:
    """read_scene's Gaussians (NaN refused) as a SplitScene, for a caller that copies them elsewhere and lets
    each SH column go once copied: from a binary INRIA .ply, .spz, .compressed.ply, SOG and glTF (one
    untransformed splat primitive) the f_rest columns are separate arrays, decoded one at a time (no (N, K, 3)
    SH block is made); from any other file views of the scene read_scene reads."""
    path = Path(path)
    format = detect_format(path)
    if format == "sog":
        read = _reading(path, lambda: read_sog_split(path, decode_image))
    elif format in _SPLIT_READERS:
        read = _reading(path, lambda: _SPLIT_READERS[format](path))
    else:
        return SplitScene.of(read_scene(path, decode_image))
    scene = _check_read_scene(path, read)
    scene.metadata["source_name"] = _source_name(path)
    return scene


def _reading(path: Path, read: Callable[[], T]) -> T:
    """read(), with what can go wrong while reading `path` as a SceneFormatError naming it."""
    try:
        return read()
    except SceneFormatError:
        raise
    except OSError as error:
        raise SceneFormatError(path, f"cannot read the file: {error.strerror or error}") from None
    except MemoryError:
        raise SceneFormatError(path, "not enough memory to read this scene") from None


def _source_name(path: Path) -> str:
    return path.parent.name if path.name == "meta.json" else path.name


S = TypeVar("S", GaussianScene, SplitScene)


def _check_read_scene(path: Path, scene: S, filter_nan: bool = False) -> S:
    if len(scene) == 0:
        raise SceneFormatError(path, "the scene holds no Gaussians (0 rows)")
    if filter_nan:
        scene, dropped = drop_non_finite(scene)
        if dropped:
            warnings.warn(f"{path}: dropped {dropped} Gaussians with NaN or infinite values or a zero rotation "
                          "(--filter-nan)", FormatWarning, stacklevel=3)
        if len(scene) == 0:
            raise SceneFormatError(path, "no Gaussian is left after dropping those with NaN or infinite values")
        return scene
    found = non_finite_rows(scene)
    if found:
        raise SceneFormatError(path, f"{describe_non_finite(found)}; --filter-nan drops such Gaussians")
    return scene


def write_scene(
    scene: GaussianScene, path: str | os.PathLike, format: str | None = None, encode_image: ImageEncoder | None = None
) -> None:
    """Write a scene; the format is `format` or follows from the extension. The file appears only when complete.

    encode_image encodes SOG's WebP images (Pillow by default; the Blender extension passes Blender's encoder).
    """
    path = Path(path)
    format = format or _format_for_extension(path)
    if format not in _WRITERS and format != "sog":
        raise SceneFormatError(path, f"cannot write format {format!r}; {_writable_list()}")
    _check_scene_to_write(scene, path)
    if format == "sog":
        write_sog(scene, path, encode_image)
    else:
        _WRITERS[format](scene, path)


def _format_for_extension(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".compressed.ply"):
        return "compressed-ply"
    if name.endswith(".ply"):
        return "ply"
    if name.endswith(".splat"):
        return "splat"
    if name.endswith(".exgs"):
        return "exgs"
    if name.endswith(".sog") or name == "meta.json":
        return "sog"
    if name.endswith(".spz"):
        return "spz"
    if name.endswith((".glb", ".gltf")):
        return "gltf"
    raise SceneFormatError(path, f"cannot tell the format from the extension '{path.suffix}'; {_writable_list()}")


def _writable_list() -> str:
    return "writable formats are " + ", ".join(f"{f.name} ({', '.join(f.extensions)})" for f in WRITABLE_FORMATS)


def _check_scene_to_write(scene: GaussianScene, path: Path) -> None:
    """Refuse, before any file is touched, a scene no reader would accept back."""
    # Re-running the constructor re-checks the array shapes, which callers may have replaced since.
    GaussianScene(scene.means, scene.quats, scene.log_scales, scene.opacity_logits, scene.sh)
    if len(scene) == 0:
        raise ValueError(f"{path}: not written: the scene has no Gaussians")
    found = non_finite_rows(scene)
    if found:
        raise ValueError(f"{path}: not written: {describe_non_finite(found)}")
