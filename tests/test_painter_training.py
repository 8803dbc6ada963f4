"""Pair generation through the real UGC compressor, the split, and short real training runs that resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from exgs_core.painter.data import (
    SAME_SCENE,
    SPLIT,
    PairSettings,
    load_samples,
    make_pairs,
    scene_name,
    shared_scene_paths,
    split_of,
)
from exgs_core.painter.train import (
    PairBank,
    SessionEnd,
    TrainSettings,
    build_model,
    evaluate,
    load_checkpoint,
    stage_loss,
    train,
)
from exgs_core.painter.weights import load_painter
from tests.conftest import DATA_ROOT, SCENES_DIR, captured_scene_paths, real_scene_paths, requires_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SMALL = PairSettings(size=40, views=3, captured_view_factor=1, targets_per_scene=2, samples_per_view=2,
                     scoring_views=4, scoring_size=32)
TINY_PAINTER = {"vae_channels": 8, "stem_channels": 4, "unet_channels": (16, 16), "unet_attention": False}


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    if not SCENES_DIR.is_dir():
        pytest.skip("real data folder is absent")
    out = tmp_path_factory.mktemp("pairs")
    make_pairs([SCENES_DIR / "gs3d_lod1_tile_0_0.5x.ply"], out, SMALL, seed=7, log=None)
    return out


# --- split ---------------------------------------------------------------------------------------------------


@requires_data
def test_every_real_scene_is_in_exactly_one_split() -> None:
    names = [scene_name(p) for p in real_scene_paths()]
    assert sorted(names) == sorted(SPLIT), "SPLIT must list every scene in shared/data"
    assert [scene_name(p) for p in shared_scene_paths(DATA_ROOT)] == names
    captured = [scene_name(p) for p in captured_scene_paths()]
    held_out = {n for n in captured if split_of(n)[0] == "eval"} - set(SAME_SCENE)
    trained = {n for n in captured if split_of(n)[0] == "train"}
    assert len(held_out) >= 2 and len(trained) >= 2
    for copy, original in SAME_SCENE.items():
        assert split_of(copy)[0] == split_of(original)[0]  # the same scene never straddles the split
    mesh = [n for n in names if n not in captured]
    assert len(mesh) == 17 and {split_of(n)[0] for n in mesh} == {"train", "eval"}


# --- pairs ---------------------------------------------------------------------------------------------------


@requires_data
def test_pairs_manifest_and_files(pairs: Path) -> None:
    manifest = json.loads((pairs / "manifest.json").read_text())
    assert manifest["seed"] == 7 and manifest["split"]["train"] == ["gs3d_lod1_tile_0_0.5x.ply"]
    samples = manifest["scenes"][0]["samples"]
    assert len(samples) == SMALL.views * SMALL.samples_per_view
    for sample in samples:
        assert SMALL.ratio_min <= sample["target_ratio"] <= SMALL.ratio_max
        assert 0 < sample["kept"] <= sample["of"]
        assert (pairs / sample["input"]).is_file() and (pairs / sample["target"]).is_file()
    loaded = load_samples(pairs, "train")
    record, raw, target = loaded[0]
    assert raw.shape == (40, 40, 4) and target.shape == (40, 40, 3) and raw.dtype == np.uint8
    assert raw[..., 3].max() > 0  # the alpha channel holds the compressed render's opacity
    assert load_samples(pairs, "eval") == []


@requires_data
def test_pairs_are_deterministic(pairs: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    make_pairs([SCENES_DIR / "gs3d_lod1_tile_0_0.5x.ply"], again, SMALL, seed=7, log=None)
    assert _files(again) == _files(pairs)
    other = tmp_path / "other"
    make_pairs([SCENES_DIR / "gs3d_lod1_tile_0_0.5x.ply"], other, SMALL, seed=8, log=None)
    assert _files(other) != _files(pairs)


@requires_data
def test_pairs_skip_scenes_of_the_other_split(tmp_path: Path) -> None:
    manifest = make_pairs([SCENES_DIR / "mjw_fox.ply"], tmp_path, SMALL, splits=("train",), log=None)
    assert manifest["scenes"] == [] and not (tmp_path / "mjw_fox.ply").exists()


# --- training ------------------------------------------------------------------------------------------------


def _settings(**changes) -> TrainSettings:
    base = dict(model="painter", painter_config=TINY_PAINTER, vae_steps=4, steps=4, batch_size=2, crop=32,
                lr=3e-3, warmup_steps=1, checkpoint_every=3, seed=3)
    return TrainSettings(**{**base, **changes})


@requires_data
def test_training_decreases_the_loss_and_writes_loadable_weights(pairs: Path, tmp_path: Path) -> None:
    settings = _settings(vae_steps=12, steps=8)
    bank = PairBank(pairs)
    fixed = bank.batch(np.random.default_rng(99), 4, 32)
    model = build_model(settings)
    with torch.no_grad():
        before = float(stage_loss(model, model, "vae", fixed, settings)[0])
    weights = train(pairs, tmp_path / "run", settings)
    trained = load_painter(weights, device="cpu")
    with torch.no_grad():
        after = float(stage_loss(trained, trained, "vae", fixed, settings)[0])
    assert after < before
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in log] == ["vae"] * 12 + ["painter"] * 8
    assert {"l1", "ssim", "latent_l1", "lr", "cpu_seconds"} <= set(log[-1])
    report = evaluate(trained, pairs, split="train")
    assert report["overall"]["frames"] == len(bank)
    assert set(report["per_scene"]) == {"gs3d_lod1_tile_0_0.5x.ply"} and len(report["per_scene_ratio"]) == 2


@requires_data
def test_interrupted_training_resumes_to_the_same_weights(pairs: Path, tmp_path: Path) -> None:
    settings = _settings()
    straight = train(pairs, tmp_path / "straight", settings)
    run = tmp_path / "interrupted"
    with pytest.raises(SessionEnd):
        train(pairs, run, _settings(session_steps=5))  # stops inside the second stage
    model, optimizer_state, progress = load_checkpoint(run)
    assert progress.stage == "painter" and progress.step == 1 and optimizer_state["state"]
    resumed = train(pairs, run, settings)
    for name in ("vae", "unet", "conditioning"):
        a = (straight / name / "diffusion_pytorch_model.safetensors").read_bytes()
        b = (resumed / name / "diffusion_pytorch_model.safetensors").read_bytes()
        assert a == b, f"{name} differs after resuming"
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 1, 2, 3, 4]  # nothing was trained twice


@requires_data
def test_baseline_trains_in_one_stage(pairs: Path, tmp_path: Path) -> None:
    settings = _settings(model="baseline", baseline_channels=(4, 8), steps=3)
    weights = train(pairs, tmp_path / "baseline", settings)
    assert type(load_painter(weights, device="cpu")).__name__ == "PixelUNet"
    assert load_checkpoint(tmp_path / "baseline")[2].stage == "pixel"


def test_crops_are_cut_to_the_model_grid_when_pairs_are_smaller_than_the_crop(pairs: Path) -> None:
    bank = PairBank(pairs, "train")  # 40 px pairs, a 128 px crop, a 32 px model grid
    rgb, mask, target = bank.batch(np.random.default_rng(0), 3, crop=128, multiple=32)
    assert rgb.shape == (3, 3, 32, 32) and mask.shape == (3, 1, 32, 32) and target.shape == (3, 3, 32, 32)
    with pytest.raises(ValueError, match="smaller than the model's 64 px grid"):
        bank.batch(np.random.default_rng(0), 1, crop=128, multiple=64)


def test_pair_bank_keeps_only_pairs_compressed_at_least_min_ratio(pairs: Path) -> None:
    ratios = sorted(float(record["ratio"]) for record, _, _ in load_samples(pairs, "train"))
    assert ratios[0] < ratios[-1]  # the fixture's pairs span several ratios
    middle = ratios[len(ratios) // 2]
    bank = PairBank(pairs, "train", min_ratio=middle)
    assert len(bank) == sum(r >= middle for r in ratios) < len(ratios)
    assert all(float(record["ratio"]) >= middle for record in bank.records)
    with pytest.raises(ValueError, match=f"no train samples compressed at least {ratios[-1] + 1:g}x"):
        PairBank(pairs, "train", min_ratio=ratios[-1] + 1)
