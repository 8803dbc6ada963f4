"""Restoration per scene: the .exgs section (format 2), fitting it on a real scene, and using it to restore."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from exgs_core.cli import main
from exgs_core.errors import SceneFormatError
from exgs_core.io import read_scene, write_scene
from exgs_core.io.exgs import (RESTORATION_SECTION, Restoration, decode_container, decode_exgs, encode_exgs,
                               read_restoration, with_restoration)
from exgs_core.painter.fit import (FitResult, ResidualCNN, fit_restoration, frame_psnr, jittered_views,
                                   render_pairs, restoration_module, scene_restorer)
from exgs_core.painter.restore import restore
from exgs_core.render import render
from exgs_core.ugc.compress import Target, compress, scoring_cameras
from tests.conftest import MESH2SPLAT_DIR, random_gaussians, requires_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _random_restoration(seed: int = 0, strength: float = 0.7) -> Restoration:
    torch.manual_seed(seed)
    module = ResidualCNN()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.05 * torch.randn(p.shape))
    result = FitResult(module, strength, 0.5, 30.0, 30.5, -0.1, 2, 10, 1.0, [0.5])
    return result.to_restoration()


@pytest.fixture(scope="module")
def small_file() -> bytes:
    """A real 2,000-Gaussian scene (spot) as .exgs bytes."""
    if not MESH2SPLAT_DIR.is_dir():
        pytest.skip("real data folder is absent")
    return encode_exgs(random_gaussians(MESH2SPLAT_DIR / "spot.splat", 2000, seed=1))


def test_restoration_section_round_trips_bit_exactly(small_file, tmp_path) -> None:
    stored = _random_restoration()
    data = with_restoration(small_file, stored)
    header, sections = decode_container(data)
    assert sections[RESTORATION_SECTION] == stored.payload and header["restoration"] == stored.info
    assert data[8:10] == b"\x02\x00"  # format version 2
    plain, restored = decode_exgs(small_file), decode_exgs(data)
    assert np.array_equal(plain.means, restored.means) and np.array_equal(plain.sh, restored.sh)
    back = restored.metadata["restoration"]
    assert back.payload == stored.payload and back.info == stored.info and back.strength == 0.7
    assert "restoration" not in plain.metadata
    module = restoration_module(back, device="cpu")
    for name, value in ResidualCNN().state_dict().items():
        assert module.state_dict()[name].shape == value.shape
    assert len(stored.payload) == 2 * 1099  # 3 convolutions, 8 channels, fp16
    path = tmp_path / "x.exgs"
    path.write_bytes(data)
    assert read_restoration(path).payload == stored.payload
    with pytest.raises(ValueError, match="already holds"):
        with_restoration(data, stored)


def test_int8_restoration_reads_back_within_half_a_step_at_half_the_bytes(small_file) -> None:
    """dtype int8: one scale per tensor in the header; fp16 files (all files written before) still read."""
    float16 = _random_restoration()
    arrays = float16.arrays()
    int8 = Restoration.from_arrays("residual_cnn", {"channels": 8}, arrays, 0.7, {}, dtype="int8")
    assert len(int8.payload) == 1099 and len(int8.info["scales"]) == len(arrays)
    back = decode_exgs(with_restoration(small_file, int8)).metadata["restoration"]
    assert back.payload == int8.payload and back.info == int8.info
    for (name, value), scale in zip(arrays.items(), int8.info["scales"]):
        error = np.abs(back.arrays()[name] - value.astype(np.float32)).max()
        assert error <= 0.5 * scale * 1.01 + 1e-3 * np.abs(value).max()
    module = restoration_module(back, device="cpu")
    assert module.conv2.weight.dtype == torch.float32
    header, sections = decode_container(with_restoration(small_file, int8))
    header["restoration"]["scales"] = header["restoration"]["scales"][:-1]
    from exgs_core.io.exgs import encode_container

    with pytest.raises(SceneFormatError, match="scales"):
        decode_exgs(encode_container(header, sections))


def test_corrupted_restoration_section_is_a_clear_error_naming_the_file(small_file, tmp_path) -> None:
    data = bytearray(with_restoration(small_file, _random_restoration()))
    data[-3] ^= 0x20  # inside the last section: the restoration
    path = tmp_path / "damaged.exgs"
    path.write_bytes(bytes(data))
    with pytest.raises(SceneFormatError, match=r"damaged\.exgs.*'restoration' checksum mismatch"):
        read_scene(path)
    header, sections = decode_container(with_restoration(small_file, _random_restoration()))
    header["restoration"]["tensors"][0][1] = [999]  # the header no longer matches the section
    from exgs_core.io.exgs import encode_container

    bad = tmp_path / "inconsistent.exgs"
    bad.write_bytes(encode_container(header, sections))
    with pytest.raises(SceneFormatError, match=r"inconsistent\.exgs.*'restoration'"):
        read_scene(bad)


def test_info_shows_the_restoration(small_file, tmp_path, capsys) -> None:
    path = tmp_path / "fitted.exgs"
    path.write_bytes(with_restoration(small_file, _random_restoration()))
    assert main(["info", str(path)]) == 0
    assert "restoration  fitted (residual_cnn, 2,198 bytes, strength 0.7" in capsys.readouterr().out
    assert main(["info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["restoration"]["strength"] == 0.7


def test_restoring_with_the_files_restoration_is_deterministic(small_file) -> None:
    scene = decode_exgs(with_restoration(small_file, _random_restoration(strength=1.0)))
    camera = jittered_views(scene, 1, seed=3, size=40)[0]
    frame = render(scene, camera, background=(0.2, 0.3, 0.4))
    rgb, alpha = frame.rgb.numpy(), frame.alpha.numpy()
    outputs = []
    for _ in range(2):
        module, strength = scene_restorer(scene, device="cpu")
        outputs.append(restore(rgb, alpha, module, strength))
    assert np.array_equal(outputs[0], outputs[1]) and not np.allclose(outputs[0], rgb, atol=1e-3)


@requires_data
def test_a_fit_on_a_real_scene_beats_raw_on_unseen_views() -> None:
    scene = random_gaussians(MESH2SPLAT_DIR / "koala.splat", 10_000, seed=0)  # held out from the painter
    cameras = scoring_cameras(scene, views=6, size=64)
    decoded = compress(scene, Target("ratio", 100), cameras).scene
    pairs = render_pairs(scene, decoded, jittered_views(scene, 16, seed=1, size=80), seed=1)
    validation = render_pairs(scene, decoded, jittered_views(scene, 4, seed=2, size=80), seed=2)
    result = fit_restoration(pairs, validation, steps=400, seed=0)
    assert result.strength > 0 and result.gain_db > 0.1
    unseen = render_pairs(scene, decoded, jittered_views(scene, 4, seed=3, size=80), seed=3)
    raw, restored = [], []
    for x, y in zip(unseen.inputs, unseen.targets):
        raw.append(frame_psnr(x[:3], y))
        out = restore(x[:3].permute(1, 2, 0), 1 - x[3], result.module, result.strength)
        restored.append(frame_psnr(out.permute(2, 0, 1), y))
    assert np.mean(restored) > np.mean(raw) + 0.1


@requires_data
def test_an_int8_fit_validates_the_weights_it_stores() -> None:
    """The validated gain is the stored file's: the module validated is the int8 weights read back."""
    scene = random_gaussians(MESH2SPLAT_DIR / "koala.splat", 4_000, seed=0)
    decoded = compress(scene, Target("ratio", 100), scoring_cameras(scene, views=4, size=48)).scene
    pairs = render_pairs(scene, decoded, jittered_views(scene, 8, seed=1, size=64), seed=1)
    validation = render_pairs(scene, decoded, jittered_views(scene, 3, seed=2, size=64), seed=2)
    result = fit_restoration(pairs, validation, steps=150, seed=0, dtype="int8")
    stored = result.to_restoration()
    assert stored.info["dtype"] == "int8" and len(stored.payload) == 1099
    module = restoration_module(Restoration.from_text(stored.to_text()), device="cpu")
    for name, value in result.module.state_dict().items():
        assert torch.equal(module.state_dict()[name], value), name
    assert result.gain_db > 0


@requires_data
def test_cli_compress_fits_by_default_and_none_writes_no_section(tmp_path, capsys) -> None:
    source = tmp_path / "koala.ply"
    write_scene(random_gaussians(MESH2SPLAT_DIR / "koala.splat", 8_000, seed=0), source)
    fitted, plain = tmp_path / "fitted.exgs", tmp_path / "plain.exgs"
    common = [str(source), "--ratio", "100", "--views", "4"]
    assert main(["compress", *common, "-o", str(fitted), "--fit-steps", "500"]) == 0
    summary = capsys.readouterr().out
    assert "restoration" in summary
    assert main(["compress", *common, "-o", str(plain), "--restoration", "none"]) == 0
    capsys.readouterr()
    budget = 248 * 8_000 / 100
    for path in (fitted, plain):
        assert path.stat().st_size <= budget  # the correction's bytes count inside the target
    assert read_restoration(plain) is None and "restoration" not in read_scene(plain).metadata["exgs"]
    stored = read_restoration(fitted)
    if stored is None:  # the compressor may decide spending the bytes on Gaussians validates better
        assert "restoration  none:" in summary
        return
    assert "restoration  stored" in summary and 0 < stored.strength <= 1
    assert stored.info["validated"]["equal_bytes_gain_db"] > 0
    assert len(read_scene(fitted)) < len(read_scene(plain))  # the budget was split
    cameras = tmp_path / "cameras.json"
    assert main(["cameras", str(source), "--orbit", "2", "--size", "48x40", "-o", str(cameras)]) == 0
    out = tmp_path / "restored"
    assert main(["restore", str(fitted), "--cameras", str(cameras), "-o", str(out), "--save-raw"]) == 0
    assert "fitted restoration" in capsys.readouterr().out
    raw = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(out / "raw" / "00000.png"))
    restored = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(out / "00000.png"))
    assert raw.shape == restored.shape and not np.array_equal(raw, restored)
    report = tmp_path / "report"
    assert main(["eval", str(source), str(fitted), str(plain), "--cameras", str(cameras), "-o", str(report),
                 "--no-restore"]) == 0
    metrics = {c["name"]: c for c in json.loads((report / "metrics.json").read_text())["candidates"]}
    assert metrics["fitted.exgs"]["fitted_psnr"] is not None and metrics["plain.exgs"]["fitted_psnr"] is None
    assert "restored (fitted)" in (report / "metrics.md").read_text()


def test_files_without_a_restoration_restore_raw_by_default(small_file, tmp_path, capsys) -> None:
    path = tmp_path / "plain.exgs"
    path.write_bytes(small_file)
    cameras = tmp_path / "cameras.json"
    assert main(["cameras", str(path), "--orbit", "1", "--size", "32x24", "-o", str(cameras)]) == 0
    out = tmp_path / "out"
    assert main(["restore", str(path), "--cameras", str(cameras), "-o", str(out), "--save-raw"]) == 0
    assert "raw: the file holds no fitted restoration" in capsys.readouterr().out
    assert (out / "00000.png").read_bytes() == (out / "raw" / "00000.png").read_bytes()


@requires_data
def test_the_default_fit_gives_the_same_bytes_run_to_run(tmp_path, capsys) -> None:
    """The fit's budget is a number of steps and its crops and initialisation are seeded, so two compresses of
    the same real scene (each with its own timing, as two CLI runs) write identical files. --keep: no byte
    budget to split, so a correction that gains over the file's raw frames is stored (and one compress is fast)."""
    source = tmp_path / "koala.ply"
    write_scene(random_gaussians(MESH2SPLAT_DIR / "koala.splat", 3_000, seed=2), source)
    outputs = [tmp_path / "a.exgs", tmp_path / "b.exgs"]
    for out in outputs:
        assert main(["compress", str(source), "--keep", "0.05", "--views", "4", "-o", str(out),
                     "--fit-steps", "150"]) == 0
    summary = capsys.readouterr().out
    assert summary.count("restoration  stored") == 2, summary  # a correction was fitted and kept, both times
    assert outputs[0].read_bytes() == outputs[1].read_bytes()
    assert read_restoration(outputs[0]).info["validated"]["fit_steps"] == 150


@requires_data
def test_pairs_are_rendered_from_fewer_views_for_larger_scenes() -> None:
    """view_scale keeps the pairs' rendering time about flat above PAIR_GAUSSIANS (counts, so deterministic)."""
    from exgs_core.ugc.restoration import MIN_VIEW_SCALE, PAIR_GAUSSIANS, restoration_views, view_scale

    assert view_scale(100_000, 26_000) == 1.0
    assert view_scale(200_000, 50_000) == pytest.approx(PAIR_GAUSSIANS / 250_000)
    assert view_scale(1_500_000, 400_000) == MIN_VIEW_SCALE
    scene = random_gaussians(MESH2SPLAT_DIR / "spot.splat", 500, seed=0)
    cameras = scoring_cameras(scene, views=16, size=32)
    full, _ = restoration_views(scene, cameras, seed=0)
    half, validation = restoration_views(scene, cameras, seed=0, scale=0.5)
    smallest, _ = restoration_views(scene, cameras, seed=0, scale=MIN_VIEW_SCALE)
    assert len(full) == 55 and len(half) == 27 and len(smallest) == 16 and len(validation) == 8


@requires_data
def test_the_budget_reserve_holds_a_real_section_with_little_to_spare() -> None:
    """compress_restored leaves section_reserve() bytes for the correction: at least what a real fit's section
    and header entry take (else the correction would not fit and be dropped), and not much more (the rest are
    Gaussians the file could have kept)."""
    from exgs_core.ugc.restoration import section_reserve, same_gaussians

    scene = random_gaussians(MESH2SPLAT_DIR / "koala.splat", 4_000, seed=0)
    compressed = compress(scene, Target("ratio", 100), scoring_cameras(scene, views=4, size=48))
    pairs = render_pairs(scene, compressed.scene, jittered_views(scene, 8, seed=1, size=64), seed=1)
    validation = render_pairs(scene, compressed.scene, jittered_views(scene, 3, seed=2, size=64), seed=2)
    for dtype in ("float16", "int8"):
        stored = fit_restoration(pairs, validation, steps=100, seed=0, dtype=dtype).to_restoration()
        stored.info["validated"]["equal_bytes_gain_db"] = -1.234
        header = {"compression": {**compressed.scene.metadata["exgs"]["compression"],
                                  "target": {"kind": "ratio", "value": 123.456}}}
        section = len(with_restoration(compressed.data, stored, header_updates=header)) - len(compressed.data)
        assert section <= section_reserve(dtype=dtype) <= section + 200, (dtype, section)
    assert same_gaussians(compressed.scene, decode_exgs(compressed.data))
    changed = decode_exgs(compressed.data)
    changed.opacity_logits[0] += 1.0
    assert not same_gaussians(compressed.scene, changed)


@requires_data
def test_fitting_views_of_different_sizes_share_one_crop_size() -> None:
    """Given views smaller than the 64 px crops (a user's small cameras) next to 192 px jittered ones: the crops
    shrink to the smallest view, so batches stack."""
    scene = random_gaussians(MESH2SPLAT_DIR / "koala.splat", 1_000, seed=0)
    views = jittered_views(scene, 2, seed=1, size=48) + jittered_views(scene, 2, seed=2, size=96)
    pairs = render_pairs(scene, scene.subset(slice(0, 500)), views, seed=1)
    result = fit_restoration(pairs, pairs, steps=5, seed=0)
    assert result.steps == 5
