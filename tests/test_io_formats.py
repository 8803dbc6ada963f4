"""Scene formats on the real files in shared/data: counts, raw values, round trips, quantisation bounds."""

from __future__ import annotations

import functools
import json
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from exgs_core.io import (
    READABLE_FORMATS,
    WRITABLE_FORMATS,
    FormatWarning,
    detect_format,
    read_scene,
    read_split_scene,
    write_scene,
)
from exgs_core.errors import SceneFormatError
from exgs_core.io.pcply import morton_order
from exgs_core.io.ply import inria_property_names
from exgs_core.scene import GaussianScene
from exgs_core.sh import f_rest_name, sh0_to_rgb
from tests.conftest import MESH2SPLAT_DIR, SCENES_DIR, real_scene_paths, requires_data

pytestmark = requires_data

ARRAYS = ("means", "quats", "log_scales", "opacity_logits", "sh")
PLY_FILES = ["gs3d_lod1_tile_0_0.5x.ply", "hairlod_donut_fused.ply", "mjw_fox.ply", "pcengine_playbot_3_0.inria.ply"]
SOG_DIR = SCENES_DIR / "pcengine_playbot_3_0"
SOG_FILES = ["meta.json", "means_l.webp", "means_u.webp", "quats.webp", "scales.webp", "sh0.webp",
             "shN_centroids.webp", "shN_labels.webp"]
MESH2SPLAT_NAMES = ["boat", "bob", "boot", "cat", "cheese", "demosthenes", "goathead", "hammer", "koala", "mountain",
                    "parsnip", "pizza", "plane", "scorpion", "spot", "tree", "wingnut"]

# (Gaussians, SH degree, format) as listed in shared/data/scenes/SOURCES.md and mesh2splat/SOURCES.md
EXPECTED = {
    "mjw_fox.ply": (50_000, 0, "ply"),
    "splats_plant.splat": (113_648, 0, "splat"),
    "gs3d_lod1_tile_0_0.5x.ply": (14_051, 3, "ply"),
    "hairlod_donut_fused.ply": (45_624, 0, "ply"),
    "pcengine_playbot_3_0.inria.ply": (31_000, 2, "ply"),
    "pcengine_playbot_3_0": (31_000, 2, "sog"),
    **{f"{name}.splat": (100_000, 0, "splat") for name in MESH2SPLAT_NAMES},
}


@functools.lru_cache(maxsize=None)
def original(name: str) -> GaussianScene:
    """A real scene, read once per test session (tests must not modify it)."""
    return read_scene(SCENES_DIR / name)


def assert_bitwise_equal(a: GaussianScene, b: GaussianScene) -> None:
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape, name
        assert x.dtype == y.dtype == np.float32, name
        assert np.array_equal(x.view(np.uint32), y.view(np.uint32)), f"{name} differs"


def rotation_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Largest component difference of two unit quaternion sets, up to sign (q and -q are the same rotation)."""
    return np.minimum(np.abs(a - b).max(axis=1), np.abs(a + b).max(axis=1))


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Opacity of logits, in float64 (tanh keeps +-inf finite)."""
    return 0.5 * (1.0 + np.tanh(np.asarray(logits, np.float64) / 2.0))


# --- reading the real files ----------------------------------------------------------------------

@pytest.mark.parametrize("path", real_scene_paths(), ids=lambda p: p.name if p.name != "meta.json" else p.parent.name)
def test_every_real_scene_reads_with_its_documented_count_and_sh_degree(path: Path) -> None:
    scene = read_scene(path)
    name = path.parent.name if path.name == "meta.json" else path.name
    count, degree, format = EXPECTED[name]
    assert len(scene) == count
    assert scene.sh_degree == degree
    assert scene.sh.shape == (count, (degree + 1) ** 2, 3)
    assert scene.metadata["format"] == format == detect_format(path)
    assert scene.metadata["source_name"] == name
    if format != "sog":
        assert scene.metadata["source_bytes"] == path.stat().st_size
    assert np.isfinite(scene.means).all()


def test_all_seventeen_mesh_converted_splats_are_present() -> None:
    assert sorted(p.stem for p in MESH2SPLAT_DIR.glob("*.splat")) == MESH2SPLAT_NAMES
    assert {p.name for p in real_scene_paths()} >= {f"{n}.splat" for n in MESH2SPLAT_NAMES}


def test_sog_source_bytes_count_meta_json_and_every_texture_read() -> None:
    scene = read_scene(SOG_DIR)
    assert scene.metadata["source_bytes"] == sum((SOG_DIR / f).stat().st_size for f in SOG_FILES) == 778_235
    assert scene.metadata["source_name"] == "pcengine_playbot_3_0"


@pytest.mark.parametrize("name", PLY_FILES)
def test_ply_values_are_the_raw_file_values(name: str) -> None:
    """Every value equals what plyfile reads from the file, so messy values are kept unchanged."""
    scene = original(name)
    vertex = PlyData.read(str(SCENES_DIR / name))["vertex"].data
    columns = lambda names: np.stack([vertex[n] for n in names], axis=1)  # noqa: E731
    k = scene.sh.shape[1]
    rest = np.zeros((len(vertex), 3, k - 1), np.float32)
    for i in range(3 * (k - 1)):
        rest[:, i // (k - 1), i % (k - 1)] = vertex[f"f_rest_{i}"]  # channel-major in the file
    rest = rest.transpose(0, 2, 1)
    expected = GaussianScene(
        columns(["x", "y", "z"]),
        columns(["rot_0", "rot_1", "rot_2", "rot_3"]),
        columns(["scale_0", "scale_1", "scale_2"]),
        vertex["opacity"],
        np.concatenate([columns(["f_dc_0", "f_dc_1", "f_dc_2"])[:, None, :], rest], axis=1),
    )
    assert_bitwise_equal(scene, expected)


def test_messy_real_values_survive_reading() -> None:
    fox = original("mjw_fox.ply")
    assert np.isposinf(fox.opacity_logits).sum() == 37
    tile = original("gs3d_lod1_tile_0_0.5x.ply")
    norms = np.linalg.norm(tile.quats, axis=1)
    assert norms.min() < 0.5 and norms.max() > 3.0  # unnormalised, kept as stored
    assert (tile.log_scales < -20).mean() > 0.05
    assert tile.metadata.get("comments") is None
    assert original("mjw_fox.ply").metadata["comments"] == [
        "Source: https://www.wakufactory.jp/wxr/splats/sample.html", "License: CC0-1.0"]


# --- INRIA .ply ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PLY_FILES)
def test_ply_round_trip_is_bitwise_exact(name: str, tmp_path: Path) -> None:
    scene = original(name)
    write_scene(scene, tmp_path / "out.ply")
    again = read_scene(tmp_path / "out.ply")
    assert_bitwise_equal(scene, again)
    assert again.metadata.get("comments") == scene.metadata.get("comments")


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_ply_round_trip_is_exact_for_every_sh_degree_with_the_standard_layout(degree: int, tmp_path: Path) -> None:
    scene = original("gs3d_lod1_tile_0_0.5x.ply").with_sh_degree(degree)
    write_scene(scene, tmp_path / "out.ply")
    assert_bitwise_equal(scene, read_scene(tmp_path / "out.ply"))

    ply = PlyData.read(str(tmp_path / "out.ply"))
    assert ply.byte_order == "<" and not ply.text
    assert [p.name for p in ply["vertex"].properties] == inria_property_names(degree)
    assert len(ply["vertex"].properties) == 17 + 3 * ((degree + 1) ** 2 - 1)
    assert {p.val_dtype for p in ply["vertex"].properties} == {"f4"}
    assert not any(np.any(ply["vertex"][n]) for n in ("nx", "ny", "nz"))
    # f_rest is channel-major: f_rest_0 is the first red coefficient of band 1, the green one follows all reds
    if degree:
        k = (degree + 1) ** 2
        assert np.array_equal(ply["vertex"]["f_rest_0"], scene.sh[:, 1, 0])
        assert np.array_equal(ply["vertex"][f"f_rest_{k - 1}"], scene.sh[:, 1, 1])


def test_rewriting_a_standard_inria_file_reproduces_its_bytes(tmp_path: Path) -> None:
    source = SCENES_DIR / "gs3d_lod1_tile_0_0.5x.ply"  # INRIA layout with zero normals and no comments
    write_scene(read_scene(source), tmp_path / "out.ply")
    assert (tmp_path / "out.ply").read_bytes() == source.read_bytes()


@pytest.mark.parametrize("name", PLY_FILES)
def test_big_endian_and_ascii_copies_read_identically(name: str, tmp_path: Path) -> None:
    ply = PlyData.read(str(SCENES_DIR / name))
    PlyData(ply.elements, byte_order=">", comments=ply.comments).write(str(tmp_path / "be.ply"))
    assert_bitwise_equal(read_scene(tmp_path / "be.ply"), original(name))

    # plyfile writes ASCII one row at a time, so the ASCII copy takes every 7th row plus all +inf opacities
    data = ply["vertex"].data
    rows = np.union1d(np.arange(0, len(data), 7), np.flatnonzero(np.isinf(data["opacity"])))
    PlyData([PlyElement.describe(data[rows], "vertex")], text=True).write(str(tmp_path / "ascii.ply"))
    assert b"format ascii 1.0" in (tmp_path / "ascii.ply").read_bytes()[:200]
    assert_bitwise_equal(read_scene(tmp_path / "ascii.ply"), original(name).subset(rows))


def test_reading_uses_about_one_copy_of_the_data_in_memory(tmp_path: Path) -> None:
    count, names = 200_000, inria_property_names(3)
    header = "ply\nformat binary_little_endian 1.0\n" f"element vertex {count}\n"
    header += "".join(f"property float {n}\n" for n in names) + "end_header\n"
    body = np.random.default_rng(0).standard_normal((count, len(names)), dtype=np.float32)
    path = tmp_path / "big.ply"
    path.write_bytes(header.encode() + body.tobytes())
    del body
    tracemalloc.start()
    scene = read_scene(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(scene) == count and scene.sh_degree == 3
    # the body is read a few MB at a time into the scene's arrays: neither the file's bytes (mapped or read) nor a
    # structured copy of them is held beside the scene
    assert peak < 1.2 * path.stat().st_size


# --- antimatter15 .splat ---------------------------------------------------------------------------

def expected_splat_order(scene: GaussianScene) -> np.ndarray:
    """convert.py: argsort(-exp(scale_0 + scale_1 + scale_2) / (1 + exp(-opacity))) on the float32 values."""
    s, opacity = scene.log_scales, scene.opacity_logits
    with np.errstate(over="ignore"):
        key = np.exp(s[:, 0] + s[:, 1] + s[:, 2]) / (1 + np.exp(-opacity))
    assert key.dtype == np.float32
    return np.argsort(-key, kind="stable")


def splat_records(path: Path) -> np.ndarray:
    return np.fromfile(path, [("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rotation", "u1", 4)])


@pytest.mark.parametrize("name", PLY_FILES)
def test_splat_round_trip_is_within_its_quantisation(name: str, tmp_path: Path) -> None:
    scene = original(name)
    path = tmp_path / "out.splat"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_scene(scene, path)
    assert any(issubclass(w.category, FormatWarning) for w in caught) == (scene.sh_degree > 0)
    assert path.stat().st_size == 32 * len(scene)

    again = read_scene(path)
    ordered = scene.subset(expected_splat_order(scene))
    assert np.array_equal(again.means, ordered.means)  # positions are float32, exact
    assert np.array_equal(splat_records(path)["scale"], np.exp(ordered.log_scales))  # linear scales, exact
    np.testing.assert_allclose(again.log_scales, ordered.log_scales, rtol=1e-6, atol=1e-6)
    rgb = np.clip(sh0_to_rgb(ordered.sh[:, 0].astype(np.float64)), 0, 1)
    assert np.abs(sh0_to_rgb(again.sh[:, 0].astype(np.float64)) - rgb).max() <= 1 / 255
    assert np.abs(sigmoid(again.opacity_logits) - sigmoid(ordered.opacity_logits)).max() <= 1 / 255
    assert rotation_error(again.unit_quats(), ordered.unit_quats()).max() <= 1 / 128
    assert again.sh_degree == 0


def test_rewriting_a_real_splat_keeps_its_records(tmp_path: Path) -> None:
    source = SCENES_DIR / "splats_plant.splat"
    scene = read_scene(source)
    write_scene(scene, tmp_path / "out.splat")
    before = splat_records(source)[expected_splat_order(scene)]
    after = splat_records(tmp_path / "out.splat")
    assert np.array_equal(after["position"], before["position"])
    assert np.array_equal(after["rgba"], before["rgba"])  # colour and alpha bytes survive decode + encode
    np.testing.assert_allclose(after["scale"], before["scale"], rtol=1e-6)
    assert np.abs(after["rotation"].astype(int) - before["rotation"]).max() <= 1
    assert np.abs(read_scene(tmp_path / "out.splat").means - scene.means[expected_splat_order(scene)]).max() == 0


# --- PlayCanvas .compressed.ply ----------------------------------------------------------------------

def chunk_bounds(path: Path, prefix: str, axes: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    chunks = PlyData.read(str(path))["chunk"].data
    index = np.arange(count) // 256
    lo = np.stack([chunks[f"min_{prefix}{a}"] for a in axes], axis=1)[index].astype(np.float64)
    hi = np.stack([chunks[f"max_{prefix}{a}"] for a in axes], axis=1)[index].astype(np.float64)
    return lo, hi


@pytest.mark.parametrize("name", ["gs3d_lod1_tile_0_0.5x.ply", "pcengine_playbot_3_0.inria.ply", "mjw_fox.ply"])
def test_compressed_ply_round_trip_is_within_its_quantisation(name: str, tmp_path: Path) -> None:
    scene = original(name)
    path = tmp_path / "out.compressed.ply"
    write_scene(scene, path)
    n, k = len(scene), scene.sh.shape[1]

    ply = PlyData.read(str(path))
    assert [e.name for e in ply.elements] == ["chunk", "vertex"] + (["sh"] if k > 1 else [])
    assert ply["chunk"].count == -(-n // 256) and len(ply["chunk"].properties) == 18
    assert [p.val_dtype for p in ply["vertex"].properties] == ["u4"] * 4
    header = path.read_bytes().index(b"end_header\n") + len(b"end_header\n")
    assert path.stat().st_size == header + 72 * ply["chunk"].count + 16 * n + 3 * (k - 1) * n
    assert detect_format(path) == "compressed-ply"

    again = read_scene(path)
    assert again.metadata["format"] == "compressed-ply" and len(again) == n and again.sh_degree == scene.sh_degree
    ordered = scene.subset(morton_order(scene.means))
    bits = np.array([11, 10, 11])
    lo, hi = chunk_bounds(path, "", "xyz", n)
    half_step = (hi - lo) / (2 ** bits - 1) / 2
    assert np.all(np.abs(again.means - ordered.means) <= half_step * 1.001 + 1e-6)
    lo, hi = chunk_bounds(path, "scale_", "xyz", n)
    half_step = (hi - lo) / (2 ** bits - 1) / 2
    assert np.all(np.abs(again.log_scales - np.clip(ordered.log_scales, -20, 20)) <= half_step * 1.001 + 1e-5)
    lo, hi = chunk_bounds(path, "", "rgb", n)
    rgb_error = np.abs(sh0_to_rgb(again.sh[:, 0].astype(np.float64)) - sh0_to_rgb(ordered.sh[:, 0].astype(np.float64)))
    assert np.all(rgb_error <= (hi - lo) / 255 / 2 * 1.001 + 1e-6)
    assert np.abs(sigmoid(again.opacity_logits) - sigmoid(ordered.opacity_logits)).max() <= 0.5 / 255 + 1e-6
    assert np.isposinf(again.opacity_logits[np.isposinf(ordered.opacity_logits)]).all()
    # the three small components are within half a 10-bit step h; the rebuilt largest one m within
    # |a| |da| / m <= sqrt(3) * sqrt(3) h, as m >= 1/2
    half_step = np.sqrt(2) / 1023 / 2
    assert rotation_error(again.quats, ordered.unit_quats()).max() <= 3 * half_step + 1e-6
    assert np.abs(again.sh[:, 1:] - np.clip(ordered.sh[:, 1:], -4, 4)).max(initial=0) <= 8 / 256 + 1e-6


def test_compressed_ply_without_chunk_colours_reads_colours_as_plain_unorm(tmp_path: Path) -> None:
    """The older layout has 12 chunk properties; its packed colour is then RGB in [0, 1] directly."""
    path = tmp_path / "full.compressed.ply"
    write_scene(original("mjw_fox.ply"), path)
    ply = PlyData.read(str(path))
    chunks = ply["chunk"].data
    names = [n for n in chunks.dtype.names if n[-2:] not in ("_r", "_g", "_b")]
    old = np.empty(len(chunks), [(n, "<f4") for n in names])
    for n in names:
        old[n] = chunks[n]
    PlyData([PlyElement.describe(old, "chunk"), ply["vertex"]]).write(str(tmp_path / "old.compressed.ply"))
    scene = read_scene(tmp_path / "old.compressed.ply")
    packed = ply["vertex"]["packed_color"]
    rgb = np.stack([(packed >> shift) & 255 for shift in (24, 16, 8)], axis=1) / 255
    np.testing.assert_allclose(sh0_to_rgb(scene.sh[:, 0].astype(np.float64)), rgb, atol=1e-6)
    assert np.array_equal(scene.means, read_scene(path).means)


def test_morton_order_is_a_permutation_that_keeps_chunks_compact() -> None:
    means = original("hairlod_donut_fused.ply").means
    order = morton_order(means)
    assert np.array_equal(np.sort(order), np.arange(len(means)))
    chunk_extent = lambda m: np.median(np.ptp(m[: len(m) // 256 * 256].reshape(-1, 256, 3), axis=1).sum(axis=1))  # noqa: E731
    assert chunk_extent(means[order]) < 0.2 * chunk_extent(means[np.random.default_rng(0).permutation(len(means))])


# --- PlayCanvas SOG ----------------------------------------------------------------------------------

def test_sog_folder_meta_json_and_zip_read_the_same(tmp_path: Path) -> None:
    bundle = tmp_path / "playbot.sog"
    with zipfile.ZipFile(bundle, "w") as archive:
        for name in SOG_FILES:
            archive.write(SOG_DIR / name, name)
    from_folder = read_scene(SOG_DIR)
    assert_bitwise_equal(from_folder, read_scene(SOG_DIR / "meta.json"))
    from_zip = read_scene(bundle)
    assert_bitwise_equal(from_folder, from_zip)
    assert from_zip.metadata["format"] == "sog" and detect_format(bundle) == "sog"
    assert from_zip.metadata["source_bytes"] == bundle.stat().st_size
    assert from_zip.metadata["source_name"] == "playbot.sog"


def test_sog_agrees_with_its_inria_decoding_within_the_quantisation() -> None:
    import json

    sog = read_scene(SOG_DIR)
    reference = original("pcengine_playbot_3_0.inria.ply")
    meta = json.loads((SOG_DIR / "meta.json").read_text())
    # positions: 16 bits over [mins, maxs] of sign(x) ln(|x| + 1); one step there is (1 + |x|) times it in x
    log_step = (np.array(meta["means"]["maxs"]) - np.array(meta["means"]["mins"])) / 65535
    assert np.all(np.abs(sog.means - reference.means) <= log_step * (1 + np.abs(reference.means)) * 0.5 + 1e-6)
    # rotations: 8-bit smallest three over [-1/sqrt2, 1/sqrt2] (half step h), the largest rebuilt within 3h
    assert rotation_error(sog.quats, reference.unit_quats()).max() <= 3 * np.sqrt(2) / 255 / 2 + 1e-6
    # scales, DC colour and SH come from 256-entry codebooks: the same entries
    np.testing.assert_allclose(sog.log_scales, reference.log_scales, atol=1e-6)
    np.testing.assert_allclose(sog.sh, reference.sh, atol=1e-6)
    assert np.abs(sigmoid(sog.opacity_logits) - sigmoid(reference.opacity_logits)).max() <= 0.5 / 255
    assert np.array_equal(np.linalg.norm(sog.quats, axis=1).round(5), np.ones(len(sog)))


@pytest.mark.parametrize("count", [1, 255, 257])
@pytest.mark.parametrize("suffix", [".ply", ".splat", ".compressed.ply"])
def test_small_scenes_and_partial_chunks_round_trip(count: int, suffix: str, tmp_path: Path) -> None:
    scene = original("gs3d_lod1_tile_0_0.5x.ply").subset(slice(0, count))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FormatWarning)
        write_scene(scene, tmp_path / f"small{suffix}")
    again = read_scene(tmp_path / f"small{suffix}")
    assert len(again) == count and again.metadata["format"] == detect_format(tmp_path / f"small{suffix}")
    error = np.abs(np.sort(again.means, axis=0) - np.sort(scene.means, axis=0))  # order-free comparison
    if suffix == ".compressed.ply":  # within one 10-bit step of the whole extent (chunks are no larger)
        assert np.all(error <= np.ptp(scene.means, axis=0) / 1023 + 1e-6)
    else:
        assert error.max() == 0


# --- format tables -----------------------------------------------------------------------------------

def test_format_tables_name_every_format_and_its_extensions() -> None:
    assert [f.name for f in READABLE_FORMATS] == ["ply", "compressed-ply", "splat", "sog", "spz", "gltf", "exgs"]
    assert [f.name for f in WRITABLE_FORMATS] == ["ply", "compressed-ply", "splat", "sog", "spz", "gltf", "exgs"]
    assert all(f.extensions and f.description for f in READABLE_FORMATS + WRITABLE_FORMATS)
    assert dict((f.name, f.extensions) for f in WRITABLE_FORMATS)["compressed-ply"] == (".compressed.ply",)


def test_explicit_format_overrides_the_extension(tmp_path: Path) -> None:
    scene = original("mjw_fox.ply")
    write_scene(scene, tmp_path / "fox.bin", format="splat")
    assert (tmp_path / "fox.bin").stat().st_size == 32 * len(scene)
    write_scene(scene, tmp_path / "fox.data", format="ply")
    assert detect_format(tmp_path / "fox.data") == "ply"
    assert_bitwise_equal(read_scene(tmp_path / "fox.data"), scene)


@requires_data
def test_exgs_is_read_and_written_through_read_scene_and_write_scene(tmp_path):
    scene = read_scene(SCENES_DIR / "pcengine_playbot_3_0")
    target = tmp_path / "playbot.exgs"
    write_scene(scene, target)
    assert detect_format(target) == "exgs"
    back = read_scene(target)
    assert back.metadata["format"] == "exgs" and back.metadata["source_bytes"] == target.stat().st_size
    assert len(back) == len(scene) and back.sh_degree == scene.sh_degree
    assert np.abs(np.sort(back.means, 0) - np.sort(scene.means, 0)).max() < 1e-3
    # A file named .exgs that is not one is refused by its magic bytes.
    fake = tmp_path / "fake.exgs"
    fake.write_bytes(b"not an exgs file at all")
    with pytest.raises(SceneFormatError, match="not an .exgs file"):
        read_scene(fake)


def test_reading_holds_no_copy_of_the_file_in_resident_memory(tmp_path: Path) -> None:
    """Resident memory, not only allocations: a memory-mapped body's pages count as the process's memory while
    they are mapped, so reading through a memmap held the file's bytes and the scene together (2x)."""
    import subprocess
    import sys

    count, names = 400_000, inria_property_names(3)
    header = "ply\nformat binary_little_endian 1.0\n" f"element vertex {count}\n"
    header += "".join(f"property float {n}\n" for n in names) + "end_header\n"
    path = tmp_path / "big.ply"
    path.write_bytes(header.encode() + np.random.default_rng(0).standard_normal((count, len(names)),
                                                                               dtype=np.float32).tobytes())
    code = (  # VmHWM: this process's peak resident memory (ru_maxrss would start at the parent's, pytest's)
        "import re\n"
        "from exgs_core.io import read_scene\n"
        "def peak():\n"
        "    return int(re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status').read()).group(1)) * 1024\n"
        "before = peak()\n"
        f"scene = read_scene({str(path)!r})\n"
        "print(peak() - before, scene.means.nbytes + scene.quats.nbytes + scene.log_scales.nbytes + "
        "scene.opacity_logits.nbytes + scene.sh.nbytes)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1])
    grown, arrays = (int(v) for v in result.stdout.split())
    assert arrays > 0.9 * path.stat().st_size
    assert grown < 1.25 * arrays, (grown, arrays)


def _split_cases() -> list[tuple[str, str]]:
    return ([("scenes", "gs3d_lod1_tile_0_0.5x.ply"), ("scenes", "pcengine_playbot_3_0/meta.json")]
            + [("written", suffix) for suffix in (".spz", ".compressed.ply", ".sog", ".glb", ".gltf")]
            + [("tests/data", name) for name in ("playbot_400.v2.spz", "playbot_400.v4.spz", "fox_300.sog")])


@pytest.mark.parametrize("where, name", _split_cases(), ids=lambda value: value)
def test_read_split_scene_holds_read_scenes_values_in_columns_of_their_own(where: str, name: str,
                                                                           tmp_path: Path) -> None:
    """The SplitScene Blender's import reads holds read_scene's values bit for bit, each f_rest column an array of
    its own (taking one frees it), from a .ply and from every compact format that carries SH: the real SH-3 scene
    as our writers write it, a real SOG (SH 2), splat-transform's files (SH 2, and SOG without SH)."""
    if where == "written":
        path = tmp_path / ("gs3d" + name)
        write_scene(original("gs3d_lod1_tile_0_0.5x.ply"), path)
    else:
        path = (SCENES_DIR if where == "scenes" else Path(__file__).parent / "data") / name
    whole, split = read_scene(path), read_split_scene(path)
    assert split.metadata == whole.metadata
    assert_bitwise_equal(split.base, whole.with_sh_degree(0))
    assert split.sh_degree == whole.sh_degree
    k = whole.sh.shape[1]
    for channel in range(3):
        for coefficient in range(1, k):
            column = split.rest[f_rest_name(channel, coefficient, k)]
            assert column.dtype == np.float32 and column.base is None, (channel, coefficient)
            assert column.tobytes() == whole.sh[:, coefficient, channel].tobytes(), (channel, coefficient)


def test_read_split_scene_of_a_gltf_whose_splats_are_transformed_has_read_scenes_values(tmp_path: Path) -> None:
    """Splats under a transformed node (or in several primitives) are read whole, then split: the same values,
    the columns views of one block."""
    write_scene(original("gs3d_lod1_tile_0_0.5x.ply"), tmp_path / "x.gltf")
    document = json.loads((tmp_path / "x.gltf").read_text())
    document["nodes"][0]["rotation"] = [0.0, 0.0, np.sqrt(0.5), np.sqrt(0.5)]  # SH bands rotate with it
    (tmp_path / "turned.gltf").write_text(json.dumps(document))
    whole, split = read_scene(tmp_path / "turned.gltf"), read_split_scene(tmp_path / "turned.gltf")
    assert_bitwise_equal(split.base, whole.with_sh_degree(0))
    for channel in range(3):
        for coefficient in range(1, 16):
            column = split.rest[f_rest_name(channel, coefficient, 16)]
            assert column.tobytes() == whole.sh[:, coefficient, channel].copy().tobytes()
