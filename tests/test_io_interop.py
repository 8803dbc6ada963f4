"""The ecosystem's formats (SPZ, glTF, SOG, compressed .ply) against files written by splat-transform 3.7.0.

tests/data holds small real scenes, splat-transform's outputs for them and splat-transform's own .ply decode of each
output (tests/data/README.md has the commands), so these tests need neither splat-transform nor shared/data.
"""

from __future__ import annotations

import gzip
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from exgs_core.camera import orbit_cameras
from exgs_core.cli import main
from exgs_core.errors import SceneFormatError
from exgs_core.io import (READABLE_FORMATS, WRITABLE_FORMATS, detect_format, read_scene, read_split_scene,
                          write_scene)
from exgs_core.io.gltf import read_gltf, write_glb, write_gltf
from exgs_core.io.sog_write import distinct_rows, encode_sog, quantize_1d, sh_palette
from exgs_core.io.spz import encode_spz, read_spz
from exgs_core.metrics import psnr
from exgs_core.render import render
from exgs_core.scene import GaussianScene

DATA = Path(__file__).parent / "data"
SOURCES = ["playbot_400", "fox_300"]  # SH degree 2 and 0
# (splat-transform output, splat-transform's .ply decode of it)
DECODED = [(f"{s}{suffix}", f"{s}{decoded}") for s in SOURCES for suffix, decoded in [
    (".v2.spz", ".v2.spz.st.ply"), (".v3.spz", ".v3.spz.st.ply"), (".v4.spz", ".v4.spz.st.ply"),
    (".sog", ".sog.st.ply"), (".compressed.ply", ".compressed.st.ply")]]
WRITE_EXTENSIONS = [".ply", ".compressed.ply", ".splat", ".sog", ".spz", ".glb", ".gltf", ".exgs"]


def source(name: str) -> GaussianScene:
    return read_scene(DATA / f"{name}.ply")


def render_psnr(a: GaussianScene, b: GaussianScene, views: int = 3, size: int = 64) -> float:
    """Lowest PSNR over a few orbit views of the two scenes (framed on a)."""
    cameras = orbit_cameras(a.means, views, size, size, up="+z", opacities=a.opacities())
    values = [float(psnr(render(a, c, backend="torch").rgb, render(b, c, backend="torch").rgb)) for c in cameras]
    return min(values)


def rotation_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.minimum(np.abs(a - b).max(axis=1), np.abs(a + b).max(axis=1)).max())


# --- splat-transform's files read as splat-transform reads them -----------------------------------------

@pytest.mark.parametrize("name, decoded", DECODED, ids=[d[0] for d in DECODED])
def test_splat_transform_file_reads_like_its_own_ply_decode(name: str, decoded: str) -> None:
    ours, theirs = read_scene(DATA / name), read_scene(DATA / decoded)
    assert len(ours) == len(theirs) == int(name.split("_")[1].split(".")[0])
    assert ours.sh_degree == theirs.sh_degree
    order = np.lexsort(ours.means.T), np.lexsort(theirs.means.T)  # SOG stores Gaussians in Morton order
    assert np.abs(ours.means[order[0]] - theirs.means[order[1]]).max() < 1e-5
    assert np.abs(ours.sh[order[0]] - theirs.sh[order[1]]).max() < 1e-5
    assert np.abs(ours.opacities()[order[0]] - theirs.opacities()[order[1]]).max() < 1e-5
    assert render_psnr(ours, theirs) > 40.0


def test_spz_versions_are_detected_and_recorded() -> None:
    for version in (2, 3, 4):
        scene = read_scene(DATA / f"playbot_400.v{version}.spz")
        assert detect_format(DATA / f"playbot_400.v{version}.spz") == "spz"
        assert scene.metadata["format"] == "spz" and scene.metadata["spz_version"] == version


@pytest.mark.parametrize("name", SOURCES)
def test_splat_transform_glb_holds_the_ply_it_was_written_from(name: str) -> None:
    """splat-transform cannot read .glb; its .glb must give back the source .ply (float32, turned about z)."""
    ours, original = read_scene(DATA / f"{name}.glb"), source(name)
    assert ours.metadata["format"] == "gltf" == detect_format(DATA / f"{name}.glb")
    assert len(ours) == len(original)
    assert np.array_equal(ours.means, original.means)
    assert np.array_equal(ours.sh, original.sh)
    assert np.abs(ours.log_scales - original.log_scales).max() < 1e-6
    assert rotation_error(ours.unit_quats(), original.unit_quats()) < 1e-6
    assert np.abs(ours.opacities() - original.opacities()).max() < 1e-6


# --- our writers against the reference ------------------------------------------------------------------

@pytest.mark.parametrize("name", SOURCES)
def test_spz_v3_writer_matches_splat_transform_byte_for_byte(name: str) -> None:
    reference = np.frombuffer(gzip.decompress((DATA / f"{name}.v3.spz").read_bytes()), np.uint8)
    ours = np.frombuffer(gzip.decompress(encode_spz(source(name), 3)), np.uint8)
    assert len(ours) == len(reference)
    # Niantic packs quaternions in float32: a component on a rounding edge may land one step away
    assert np.count_nonzero(ours != reference) <= 1


@pytest.mark.parametrize("name", SOURCES)
def test_spz_v2_writer_matches_niantic_library(name: str) -> None:
    decoded = read_spz(DATA / f"{name}.v3.spz")
    reference = gzip.decompress((DATA / f"{name}.v2.spz").read_bytes())
    assert gzip.decompress(encode_spz(decoded, 2)) == reference


@pytest.mark.parametrize("version", [2, 3, 4])
def test_spz_round_trip_stays_within_its_quantisation(version: int, tmp_path: Path) -> None:
    scene = source("playbot_400")
    write_scene(scene, tmp_path / "x.spz") if version == 3 else (tmp_path / "x.spz").write_bytes(
        encode_spz(scene, version))
    again = read_scene(tmp_path / "x.spz")
    assert again.metadata["spz_version"] == version
    assert np.abs(again.means - scene.means).max() <= 0.5 / 4096 + 1e-6  # 12 fractional bits
    assert np.abs(again.log_scales - scene.log_scales).max() <= 1 / 32 + 1e-6
    # version 2 derives w from x, y, z: poor when w is small (why version 3 exists)
    assert rotation_error(again.unit_quats(), scene.unit_quats()) < (0.1 if version == 2 else 0.002)
    assert np.abs(again.opacities() - scene.opacities()).max() <= 0.5 / 255 + 1e-6
    assert render_psnr(scene, again) > 35.0


def test_spz_keeps_large_coordinates_with_fewer_fractional_bits(tmp_path: Path) -> None:
    scene = source("fox_300")
    scene.means[0] = (5000.0, -3000.0, 1.0)  # beyond 2048, the 24-bit range at 12 fractional bits
    write_scene(scene, tmp_path / "far.spz")
    again = read_scene(tmp_path / "far.spz")
    assert np.abs(again.means - scene.means).max() < 1e-2


@pytest.mark.parametrize("extension", [".glb", ".gltf"])
def test_gltf_round_trip_is_exact_but_for_exp_log(extension: str, tmp_path: Path) -> None:
    scene = source("playbot_400")
    write_scene(scene, tmp_path / f"x{extension}")
    again = read_scene(tmp_path / f"x{extension}")
    assert again.metadata["format"] == "gltf"
    for name in ("means", "quats", "sh"):
        assert np.array_equal(getattr(again, name), getattr(scene, name)), name
    assert np.abs(again.log_scales - scene.log_scales).max() < 1e-6


def test_glb_writer_uses_splat_transforms_layout() -> None:
    ours = json.loads(_glb_json(_written(write_glb)))
    theirs = json.loads(_glb_json((DATA / "playbot_400.glb").read_bytes()))
    attributes = lambda doc: doc["meshes"][0]["primitives"][0]["attributes"]  # noqa: E731
    assert list(attributes(ours)) == list(attributes(theirs))
    for a, b in zip(ours["accessors"], theirs["accessors"]):
        assert {k: v for k, v in a.items() if k != "min" and k != "max"} == {
            k: v for k, v in b.items() if k != "min" and k != "max"}
    assert ours["meshes"][0]["primitives"][0]["extensions"] == theirs["meshes"][0]["primitives"][0]["extensions"]


def _written(writer, name: str = "playbot_400") -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.glb"
        writer(source(name), path)
        return path.read_bytes()


def _glb_json(data: bytes) -> bytes:
    size = struct.unpack_from("<I", data, 12)[0]
    return data[20:20 + size]


@pytest.mark.parametrize("name", SOURCES)
def test_sog_written_by_us_decodes_close_to_the_source(name: str, tmp_path: Path) -> None:
    scene = source(name)
    write_scene(scene, tmp_path / "x.sog")
    folder = tmp_path / "unbundled"
    write_scene(scene, folder / "meta.json")
    bundled, unbundled = read_scene(tmp_path / "x.sog"), read_scene(folder)
    assert len(bundled) == len(unbundled) == len(scene)
    assert np.array_equal(bundled.sh, unbundled.sh) and np.array_equal(bundled.means, unbundled.means)
    with zipfile.ZipFile(tmp_path / "x.sog") as archive:
        meta = json.loads(archive.read("meta.json"))
    assert meta["version"] == 2 and meta["count"] == len(scene)
    # at 400 Gaussians every distinct SH row fits the palette, so only the 256-entry codebooks quantise
    assert render_psnr(scene, bundled) > 40.0


def test_sog_codebook_is_exact_for_few_distinct_values() -> None:
    values = np.repeat(np.linspace(-3, 1, 200), 7).reshape(-1, 4)
    codebook, labels = quantize_1d(values)
    assert np.array_equal(np.asarray(codebook, np.float32)[labels], values.astype(np.float32))
    many = np.random.default_rng(0).normal(size=(5000, 3))
    codebook, labels = quantize_1d(many)
    assert len(codebook) == 256
    error = np.asarray(codebook)[labels] - many
    assert np.sqrt((error**2).mean()) < 0.02  # k-means minimises the squared error; a few tail values lie farther


def test_sog_codebook_keeps_rare_large_scales_close() -> None:
    """Real log-scales: a dense middle, a far tail of tiny Gaussians and a few big ones, which show most."""
    scales = source("playbot_400").log_scales
    rng = np.random.default_rng(2)
    values = np.concatenate([rng.normal(-5.0, 1.0, 20000), rng.uniform(-23.0, -20.0, 1000), rng.uniform(-1.5, 0.0, 200),
                             scales.reshape(-1)])
    codebook, labels = quantize_1d(values)
    error = np.abs(np.asarray(codebook)[labels] - values)
    assert error[values > -1.5].max() < 0.1  # plain k-means left these 0.37 away (big Gaussians visibly resized)
    assert error.max() < 0.2  # plain k-means: 0.59


def test_sog_palette_clusters_when_rows_exceed_it() -> None:
    rows = np.random.default_rng(1).normal(size=(3000, 9)).astype(np.float32)
    palette, labels = sh_palette(rows)
    assert len(palette) == 2048 and labels.max() < 2048  # splat-transform's rule for 3000 Gaussians
    nearest = ((rows[:, None, :] - palette[None, :, :]) ** 2).sum(-1).argmin(1)
    assert (labels == nearest).mean() > 0.99


def test_sog_palette_of_few_distinct_rows_is_np_unique_of_them() -> None:
    """The palette of a scene whose SH rows repeat (a SOG file's own palette, read back) is np.unique's distinct
    rows and labels, found by hashing the rows; rows beyond the limit give None without sorting them all."""
    real = read_scene(DATA / "playbot_400.sog")  # splat-transform's palette of the playbot's SH-2 rows
    rows = real.sh[:, 1:, :].reshape(len(real), -1)
    rng = np.random.default_rng(3)
    coarse = rng.integers(-2, 3, size=(20_000, 9)).astype(np.float32) * 0.5
    coarse[::7, 0] = -0.0  # equal to 0.0 for np.unique
    for values in (rows, coarse):
        expected, inverse = np.unique(values, axis=0, return_inverse=True)
        found, labels = distinct_rows(values, len(values))
        assert len(expected) < len(values) and np.array_equal(found, expected)
        assert np.array_equal(labels, inverse.reshape(-1))
    assert distinct_rows(coarse, len(np.unique(coarse, axis=0)) - 1) is None


def test_sog_file_of_the_same_scene_is_the_same_bytes(tmp_path: Path) -> None:
    import time

    write_scene(source("playbot_400"), tmp_path / "a.sog")
    time.sleep(2.1)  # a zip stores the time in 2-second steps
    write_scene(source("playbot_400"), tmp_path / "b.sog")
    assert (tmp_path / "a.sog").read_bytes() == (tmp_path / "b.sog").read_bytes()


def test_sog_writer_names_every_file_meta_json_lists() -> None:
    files = encode_sog(source("playbot_400"))
    meta = json.loads(files["meta.json"])
    listed = {f for key in ("means", "scales", "quats", "sh0", "shN") for f in meta[key]["files"]}
    assert listed | {"meta.json"} == set(files)
    assert meta["shN"]["bands"] == 2


# --- every pair through `exgs convert` ------------------------------------------------------------------

WRITE_TARGETS = [f"out{extension}" for extension in WRITE_EXTENSIONS] + ["sog_folder/meta.json"]


@pytest.fixture(scope="module")
def every_format(tmp_path_factory) -> Path:
    """playbot_400 written by `exgs convert` in every writable format (SOG both bundled and as a folder)."""
    folder = tmp_path_factory.mktemp("every_format")
    for target in WRITE_TARGETS:
        assert main(["convert", str(DATA / "playbot_400.ply"), str(folder / target)]) == 0
    return folder


@pytest.mark.parametrize("source_name", WRITE_TARGETS)
def test_exgs_convert_handles_every_pair(source_name: str, every_format: Path, tmp_path: Path, capsys) -> None:
    for target in WRITE_TARGETS:
        assert main(["convert", str(every_format / source_name), str(tmp_path / target)]) == 0
        again = read_scene(tmp_path / target)
        assert len(again) == 400, target
        assert again.sh_degree == (0 if ".splat" in source_name + target else 2), target


def test_format_lists_name_the_new_formats_both_ways() -> None:
    readable = {f.name for f in READABLE_FORMATS}
    writable = {f.name for f in WRITABLE_FORMATS}
    assert {"spz", "gltf", "sog"} <= readable and {"spz", "gltf", "sog"} <= writable


# --- errors name the file and the version ---------------------------------------------------------------

def _spz_with_version(version: int, tmp_path: Path) -> Path:
    body = bytearray(gzip.decompress((DATA / "fox_300.v3.spz").read_bytes()))
    body[4:8] = struct.pack("<I", version)
    path = tmp_path / f"v{version}.spz"
    path.write_bytes(gzip.compress(bytes(body)))
    return path


@pytest.mark.parametrize("version", [1, 5])
def test_unsupported_spz_version_is_named(version: int, tmp_path: Path) -> None:
    path = _spz_with_version(version, tmp_path)
    with pytest.raises(SceneFormatError, match=f"{path}: SPZ version {version} is not supported"):
        read_scene(path)


def test_truncated_spz_is_refused(tmp_path: Path) -> None:
    data = gzip.decompress((DATA / "fox_300.v3.spz").read_bytes())
    path = tmp_path / "short.spz"
    path.write_bytes(gzip.compress(data[:1000]))
    for read in (read_scene, read_split_scene):
        with pytest.raises(SceneFormatError, match=f"{path}: SPZ version 3 body is truncated"):
            read(path)


def test_unsupported_gltf_versions_are_named(tmp_path: Path) -> None:
    data = bytearray((DATA / "fox_300.glb").read_bytes())
    data[4:8] = struct.pack("<I", 1)
    (tmp_path / "old.glb").write_bytes(bytes(data))
    for read in (read_scene, read_split_scene):
        with pytest.raises(SceneFormatError, match="old.glb: GLB container version 1 is not supported"):
            read(tmp_path / "old.glb")
    document = json.loads(_glb_json((DATA / "fox_300.glb").read_bytes()))
    document["asset"]["version"] = "1.0"
    (tmp_path / "old.gltf").write_text(json.dumps(document))
    with pytest.raises(SceneFormatError, match="old.gltf: glTF version 1.0 is not supported"):
        read_scene(tmp_path / "old.gltf")


def test_gltf_without_splats_or_with_unknown_required_extension_is_refused(tmp_path: Path) -> None:
    document = json.loads(_glb_json((DATA / "fox_300.glb").read_bytes()))
    document["extensionsRequired"] = ["KHR_draco_mesh_compression"]
    (tmp_path / "draco.gltf").write_text(json.dumps(document))
    with pytest.raises(SceneFormatError, match="requires extensions exgs does not read: KHR_draco_mesh_compression"):
        read_gltf(tmp_path / "draco.gltf")
    empty = {"asset": {"version": "2.0"}, "meshes": [], "nodes": []}
    (tmp_path / "empty.gltf").write_text(json.dumps(empty))
    with pytest.raises(SceneFormatError, match="holds no KHR_gaussian_splatting primitive"):
        read_scene(tmp_path / "empty.gltf")


def test_gltf_node_transform_is_applied(tmp_path: Path) -> None:
    scene = source("fox_300")
    write_gltf(scene, tmp_path / "x.gltf")
    document = json.loads((tmp_path / "x.gltf").read_text())
    document["nodes"][0]["translation"] = [1.0, 2.0, 3.0]  # in glTF space; turned about z into .ply space
    (tmp_path / "moved.gltf").write_text(json.dumps(document))
    moved = read_scene(tmp_path / "moved.gltf")
    assert np.allclose(moved.means - scene.means, (-1.0, -2.0, 3.0), atol=1e-5)


def test_unknown_extension_to_write_lists_the_writable_formats(tmp_path: Path) -> None:
    with pytest.raises(SceneFormatError, match="cannot tell the format from the extension '.abc'.*spz.*gltf"):
        write_scene(source("fox_300"), tmp_path / "x.abc")
