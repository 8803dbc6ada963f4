"""Broken input gives a SceneFormatError naming the file and the problem; failed writes leave nothing behind."""

from __future__ import annotations

import json
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from exgs_core.errors import SceneFormatError
from exgs_core.io import FormatWarning, read_scene, read_split_scene, write_scene
from tests.conftest import SCENES_DIR, requires_data

pytestmark = requires_data

FOX = SCENES_DIR / "mjw_fox.ply"  # INRIA layout without normals, 50,000 Gaussians, 56 bytes each
PLANT = SCENES_DIR / "splats_plant.splat"
SOG_DIR = SCENES_DIR / "pcengine_playbot_3_0"


def read_error(path: Path, *fragments: str) -> str:
    """read_scene(path) must fail with a SceneFormatError naming the path and every fragment, and
    read_split_scene(path) (Blender's import) with the same error."""
    with pytest.raises(SceneFormatError) as caught:
        read_scene(path)
    message = str(caught.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    with pytest.raises(SceneFormatError) as split:
        read_split_scene(path)
    assert str(split.value) == message
    return message


def fox_vertices(rows: int = 1000) -> np.ndarray:
    return PlyData.read(str(FOX))["vertex"].data[:rows].copy()


def write_vertices(path: Path, data: np.ndarray, text: bool = False) -> Path:
    PlyData([PlyElement.describe(data, "vertex")], text=text).write(str(path))
    return path


def without(data: np.ndarray, *names: str) -> np.ndarray:
    kept = [n for n in data.dtype.names if n not in names]
    out = np.empty(len(data), [(n, data.dtype[n]) for n in kept])
    for n in kept:
        out[n] = data[n]
    return out


def copy_sog(tmp_path: Path) -> Path:
    folder = tmp_path / "sog"
    shutil.copytree(SOG_DIR, folder)
    return folder


# --- paths that are not scenes -------------------------------------------------------------------

def test_missing_path(tmp_path: Path) -> None:
    read_error(tmp_path / "nothing.ply", "no such file")


def test_folder_without_meta_json(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a scene")
    read_error(tmp_path, "no meta.json")


@pytest.mark.parametrize("suffix", [".ply", ".splat", ".xyz", ".sog"])
def test_text_file_with_a_scene_extension(suffix: str, tmp_path: Path) -> None:
    path = tmp_path / f"readme{suffix}"
    path.write_text("This is a text file, not a Gaussian splat scene.\n" * 64)  # 3,136 bytes: 98 records of 32
    expected = {
        ".ply": "not a PLY file",
        ".splat": "not a .splat file: it starts with text",
        ".xyz": "unknown scene format",
        ".sog": "not a .sog file",
    }
    read_error(path, expected[suffix])


@pytest.mark.parametrize("suffix", [".ply", ".splat", ".bin"])
def test_random_bytes_with_a_scene_extension(suffix: str, tmp_path: Path) -> None:
    path = tmp_path / f"noise{suffix}"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 32 * 1000, dtype=np.uint8).tobytes())
    read_error(path, {".ply": "not a PLY file", ".splat": "not a valid .splat", ".bin": "unknown"}[suffix])


def test_splat_whose_size_is_not_a_multiple_of_32(tmp_path: Path) -> None:
    path = tmp_path / "cut.splat"
    path.write_bytes(PLANT.read_bytes()[:32 * 100 + 17])
    read_error(path, "3217 bytes", "multiple of the 32-byte record")


# --- truncated and inconsistent PLY --------------------------------------------------------------

def test_truncated_ply_body(tmp_path: Path) -> None:
    path = tmp_path / "truncated.ply"
    path.write_bytes(FOX.read_bytes()[: FOX.stat().st_size // 2])
    read_error(path, "truncated", "50000 rows of element 'vertex'", "2800000 bytes")


@requires_data
def test_ply_body_that_shrinks_while_it_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    """The body is read in chunks after its size was checked: a file cut short in between (another process
    writing it) fails with the row where it ends, and `exgs compress` writes nothing."""
    import os

    from exgs_core import cli
    from exgs_core.io import ply

    path = tmp_path / "shrinking.ply"
    path.write_bytes(FOX.read_bytes())
    full_size = path.stat().st_size
    monkeypatch.setattr(ply, "READ_CHUNK_ROWS", 4096)
    real_getsize = os.path.getsize
    monkeypatch.setattr(ply.os.path, "getsize", lambda p: full_size if Path(p) == path else real_getsize(p))
    with open(path, "r+b") as handle:  # cut after the size check: the header still promises 50,000 rows
        handle.truncate(full_size - 56 * 30_000)
    read_error(path, "truncated: the body ends after 20000 of 50000 rows")
    out = tmp_path / "out.exgs"
    assert cli.main(["compress", str(path), "-o", str(out), "--ratio", "100"]) == 1
    assert "truncated: the body ends after 20000 of 50000 rows" in capsys.readouterr().err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["shrinking.ply"]


def test_truncated_ply_header(tmp_path: Path) -> None:
    path = tmp_path / "header.ply"
    path.write_bytes(FOX.read_bytes()[:150])
    read_error(path, "truncated PLY header")


@pytest.mark.parametrize("text", [False, True])
def test_header_declaring_more_vertices_than_the_file_holds(text: bool, tmp_path: Path) -> None:
    source = write_vertices(tmp_path / "small.ply", fox_vertices(100), text=text)
    path = tmp_path / "lying.ply"
    path.write_bytes(source.read_bytes().replace(b"element vertex 100\n", b"element vertex 1000000000000\n", 1))
    # 10^12 rows would need terabytes: the size check must come before any allocation
    read_error(path, "1000000000000 rows", "only")


def test_malformed_ascii_value(tmp_path: Path) -> None:
    path = write_vertices(tmp_path / "ascii.ply", fox_vertices(50), text=True)
    lines = path.read_bytes().split(b"\n")
    header_end = lines.index(b"end_header")
    lines[header_end + 3] = b"0.1 oops " + lines[header_end + 3].split(b" ", 2)[2]
    path.write_bytes(b"\n".join(lines))
    read_error(path, "malformed PLY body")


def test_compressed_ply_whose_chunks_do_not_match_its_splats(tmp_path: Path) -> None:
    path = tmp_path / "fox.compressed.ply"
    write_scene(read_scene(FOX), path)
    raw = path.read_bytes()
    path.write_bytes(raw.replace(b"element chunk 196\n", b"element chunk 195\n", 1))
    read_error(path, "195 chunks cannot hold 50000 splats")


# --- PLY with the wrong properties ---------------------------------------------------------------

@pytest.mark.parametrize(
    "dropped",
    [("y",), ("opacity",), ("scale_1",), ("rot_0", "rot_1", "rot_2", "rot_3"), ("f_dc_2",)],
    ids=lambda names: names[0],
)
def test_missing_gaussian_properties_are_named(dropped: tuple[str, ...], tmp_path: Path) -> None:
    path = write_vertices(tmp_path / "missing.ply", without(fox_vertices(), *dropped))
    read_error(path, "element 'vertex' lacks", ", ".join(dropped))


def test_f_rest_count_that_is_no_sh_degree(tmp_path: Path) -> None:
    data = fox_vertices()
    rest = np.empty(len(data), data.dtype.descr + [(f"f_rest_{i}", "<f4") for i in range(10)])
    for name in data.dtype.names:
        rest[name] = data[name]
    read_error(write_vertices(tmp_path / "rest.ply", rest), "10 f_rest properties")


def test_ply_without_a_vertex_element(tmp_path: Path) -> None:
    path = tmp_path / "points.ply"
    PlyData([PlyElement.describe(fox_vertices(10), "point")]).write(str(path))
    read_error(path, "no 'vertex' element")


def test_unknown_properties_and_elements_are_ignored_with_a_warning_naming_them(tmp_path: Path) -> None:
    data = fox_vertices()
    extra = np.empty(len(data), data.dtype.descr + [("red", "u1"), ("confidence", "<f4")])
    for name in data.dtype.names:
        extra[name] = data[name]
    extra["red"], extra["confidence"] = 7, 0.5
    path = tmp_path / "extra.ply"
    cameras = np.zeros(2, [("fx", "<f4")])
    PlyData([PlyElement.describe(extra, "vertex"), PlyElement.describe(cameras, "camera")]).write(str(path))
    with pytest.warns(FormatWarning) as caught:
        scene = read_scene(path)
    messages = " | ".join(str(w.message) for w in caught)
    assert "red, confidence" in messages and "camera" in messages and str(path) in messages
    plain = read_scene(write_vertices(tmp_path / "plain.ply", data))
    assert np.array_equal(scene.means, plain.means) and np.array_equal(scene.sh, plain.sh)


# --- empty scenes and NaN positions ----------------------------------------------------------------

def test_empty_files_and_scenes(tmp_path: Path) -> None:
    (tmp_path / "empty.splat").write_bytes(b"")
    read_error(tmp_path / "empty.splat", "empty")
    (tmp_path / "empty.ply").write_bytes(b"")
    read_error(tmp_path / "empty.ply", "not a PLY file")
    read_error(write_vertices(tmp_path / "zero.ply", fox_vertices(0)), "no Gaussians")
    folder = copy_sog(tmp_path)
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "count": 0}))
    read_error(folder, "'count' is 0")


def test_nan_positions(tmp_path: Path) -> None:
    data = fox_vertices()
    data["z"][[3, 500]] = np.nan
    read_error(write_vertices(tmp_path / "nan.ply", data), "2 Gaussians have NaN", "index 3")
    records = np.frombuffer(PLANT.read_bytes()[: 32 * 100], np.uint8).copy()
    records[32 * 7: 32 * 7 + 4] = np.frombuffer(np.float32(np.nan).tobytes(), np.uint8)
    (tmp_path / "nan.splat").write_bytes(records.tobytes())
    read_error(tmp_path / "nan.splat", "1 Gaussian has NaN or infinite positions", "index 7")


# --- SOG ---------------------------------------------------------------------------------------------

def test_sog_meta_json_referencing_a_missing_webp(tmp_path: Path) -> None:
    folder = copy_sog(tmp_path)
    (folder / "quats.webp").unlink()
    read_error(folder, "quats.webp", "missing")
    read_error(folder / "meta.json", "quats.webp", "missing")


def test_sog_zip_without_meta_json_or_member(tmp_path: Path) -> None:
    bundle = tmp_path / "scene.sog"
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.write(SOG_DIR / "means_l.webp", "means_l.webp")
    read_error(bundle, "no member meta.json")
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.write(SOG_DIR / "meta.json", "meta.json")
    read_error(bundle, "no member means_l.webp")


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda meta: meta.pop("version"), "legacy SOG v1"),
        (lambda meta: meta.update(version=3), "version 3"),
        (lambda meta: meta.pop("quats"), "no 'quats' section"),
        (lambda meta: meta["means"].update(mins=[0, 0]), "means.mins"),
        (lambda meta: meta.update(count=10**9), "declares 1000000000 Gaussians"),
        (lambda meta: meta["scales"].update(codebook=[0.0] * 10), "beyond its 10-entry codebook"),
        (lambda meta: meta["shN"].update(bands=5), "shN.bands"),
        (lambda meta: meta["sh0"].update(files=["../secret.webp"]), "not a plain file name"),
    ],
    ids=["no-version", "version-3", "no-quats", "short-mins", "huge-count", "short-codebook", "bands", "path"],
)
def test_sog_meta_json_that_is_inconsistent(change, fragment: str, tmp_path: Path) -> None:
    folder = copy_sog(tmp_path)
    meta = json.loads((folder / "meta.json").read_text())
    change(meta)
    (folder / "meta.json").write_text(json.dumps(meta))
    read_error(folder, fragment)


def test_damaged_sog_zip_and_foreign_json(tmp_path: Path) -> None:
    bundle = tmp_path / "scene.sog"
    with zipfile.ZipFile(bundle, "w") as archive:
        for path in SOG_DIR.glob("*.webp"):
            archive.write(path, path.name)
        archive.write(SOG_DIR / "meta.json", "meta.json")
    bundle.write_bytes(bundle.read_bytes()[:-300])  # the central directory at the end is cut
    read_error(bundle, "not a valid .sog file")
    other = tmp_path / "package.json"
    other.write_text('{"name": "not-a-scene"}')
    read_error(other, "not a SOG meta.json")


def test_sog_with_broken_json_or_webp(tmp_path: Path) -> None:
    folder = copy_sog(tmp_path)
    (folder / "sh0.webp").write_bytes((SOG_DIR / "sh0.webp").read_bytes()[:500])
    read_error(folder, "sh0.webp")
    (folder / "meta.json").write_text("{not json")
    read_error(folder, "not valid JSON")


# --- writers -------------------------------------------------------------------------------------------

def temp_files(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("suffix", [".ply", ".splat", ".compressed.ply"])
def test_failed_write_keeps_the_original_file(suffix: str, tmp_path: Path) -> None:
    target = tmp_path / f"scene{suffix}"
    target.write_bytes(b"the user's original bytes")
    scene = read_scene(FOX)
    scene.sh = np.zeros((10, 1, 3), np.float32)  # no longer matches the 50,000 Gaussians
    with pytest.raises(ValueError, match="sh has shape"):
        write_scene(scene, target)
    assert target.read_bytes() == b"the user's original bytes"
    assert temp_files(tmp_path) == []


def test_write_that_fails_after_the_data_is_written_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "scene.ply"
    target.mkdir()  # the final rename onto an existing folder fails once the temporary file is complete
    (target / "keep.txt").write_text("keep")
    with pytest.raises(OSError):
        write_scene(read_scene(FOX), target)
    assert temp_files(tmp_path) == [] and [p.name for p in target.iterdir()] == ["keep.txt"]
    assert (target / "keep.txt").read_text() == "keep"


def test_writers_refuse_scenes_no_reader_would_accept(tmp_path: Path) -> None:
    scene = read_scene(FOX)
    with pytest.raises(ValueError, match="no Gaussians"):
        write_scene(scene.subset(slice(0, 0)), tmp_path / "empty.ply")
    scene.means[5, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_scene(scene, tmp_path / "nan.splat")
    assert list(tmp_path.iterdir()) == []


def test_unknown_or_unwritable_output_formats(tmp_path: Path) -> None:
    scene = read_scene(FOX)
    with pytest.raises(SceneFormatError, match=r"'\.xyz'.*writable formats are ply"):
        write_scene(scene, tmp_path / "scene.xyz")
    with pytest.raises(SceneFormatError, match="cannot write format 'ksplat'"):
        write_scene(scene, tmp_path / "scene.ksplat", format="ksplat")
    assert list(tmp_path.iterdir()) == []


def test_splat_writer_warns_when_it_drops_sh(tmp_path: Path) -> None:
    scene = read_scene(SCENES_DIR / "gs3d_lod1_tile_0_0.5x.ply")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(FormatWarning, match="SH degree 3 is dropped"):
            write_scene(scene, tmp_path / "tile.splat")
    assert temp_files(tmp_path) == []
