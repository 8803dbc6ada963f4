"""The painter through the command line on real files: `exgs restore`, `exgs eval` with restored columns,
bad weight folders, `exgs painter-data` and `exgs train-painter` (and their `python -m exgs_core.painter` alias)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from exgs_core.camera import read_transforms
from exgs_core.cli import build_parser, main
from exgs_core.images import to_uint8
from exgs_core.io import read_scene
from exgs_core.painter import __main__ as painter_main
from exgs_core.painter import weights as weights_module
from exgs_core.painter.model import GaussPainter, PainterConfig
from exgs_core.painter.restore import restore
from exgs_core.painter.strength import strength_for_ratio
from exgs_core.io.exgs import inria_ratio
from exgs_core.painter.weights import load_painter, save_painter
from exgs_core.render import render
from tests.conftest import SCENES_DIR

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCENE = SCENES_DIR / "mjw_fox.ply"
TINY = {"vae_channels": 8, "stem_channels": 4, "unet_channels": [16, 16], "unet_attention": False}
WIDTH, HEIGHT = 40, 28  # not multiples of the painter's 32 px grid


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A tiny randomly initialised painter's weights folder and three 40x28 cameras around the fox."""
    if not SCENE.is_file():
        pytest.skip("real data folder is absent")
    root = tmp_path_factory.mktemp("painter_cli")
    torch.manual_seed(0)
    painter = GaussPainter.from_config(PainterConfig(**TINY))
    with torch.no_grad():  # open the gate and perturb the zero-initialised parts: the output must differ from raw
        for p in painter.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    weights = save_painter(painter, root / "weights")
    cameras = root / "cameras.json"
    assert main(["cameras", str(SCENE), "--orbit", "3", "--size", f"{WIDTH}x{HEIGHT}", "-o", str(cameras)]) == 0
    return {"root": root, "weights": weights, "cameras": cameras}


@pytest.fixture(scope="module")
def candidate(files) -> Path:
    """The fox compressed 100x through `exgs compress`, scored from the test cameras (quick at 40x28)."""
    path = files["root"] / "fox.exgs"
    assert main(["compress", str(SCENE), "-o", str(path), "--ratio", "100", "--cameras", str(files["cameras"]),
                 "--restoration", "none"]) == 0
    return path


def test_restore_writes_restored_frames_and_raw_frames_identical_to_render(files, candidate, tmp_path, capsys
                                                                           ) -> None:
    out, rendered = tmp_path / "restored", tmp_path / "rendered"
    common = ["--cameras", str(files["cameras"]), "--backend", "torch", "--background", "1,1,1"]
    assert main(["restore", str(candidate), *common, "-o", str(out), "--weights", str(files["weights"]),
                 "--save-raw"]) == 0
    assert main(["render", str(candidate), *common, "-o", str(rendered)]) == 0
    names = ["00000.png", "00001.png", "00002.png"]
    assert sorted(p.name for p in out.glob("*.png")) == names
    assert sorted(p.name for p in (out / "raw").glob("*.png")) == names
    painter = load_painter(files["weights"], device="cpu")
    scene = read_scene(candidate)
    for name, camera in zip(names, read_transforms(files["cameras"])):
        assert (out / "raw" / name).read_bytes() == (rendered / name).read_bytes()
        frame = render(scene, camera, background=(1, 1, 1), backend="torch")
        expected = to_uint8(restore(frame.rgb.numpy(), frame.alpha.numpy(), painter))
        with Image.open(out / name) as image:
            written = np.asarray(image)
        assert written.shape == (HEIGHT, WIDTH, 3)
        assert np.abs(written.astype(int) - expected).max() <= 1  # the painter's output, up to 8-bit rounding
        assert not np.array_equal(written, np.asarray(Image.open(rendered / name)))


def _one_line_error(argv: list[str], capsys) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("exgs: error: "), err
    return err[0]


def _broken(files, tmp_path: Path, how: str) -> str:
    """A copy of the tiny weights folder broken in one way (or a path / hub id)."""
    if how == "hub id offline":
        return "someone/gausspainter"
    folder = tmp_path / "weights"
    if how == "missing folder":
        return str(folder)
    shutil.copytree(files["weights"], folder)
    if how == "missing safetensors":
        (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    elif how == "mismatched shapes":
        other = save_painter(GaussPainter.from_config(PainterConfig(**{**TINY, "vae_channels": 16})),
                             tmp_path / "other")
        shutil.copy(other / "vae" / "diffusion_pytorch_model.safetensors", folder / "vae")
    return str(folder)


@pytest.mark.parametrize("how,expected", [
    ("missing folder", "no such weights folder"),
    ("missing safetensors", "unet/diffusion_pytorch_model.safetensors: missing"),
    ("mismatched shapes", "vae/diffusion_pytorch_model.safetensors: tensor"),
    ("hub id offline", "offline"),
])
@pytest.mark.parametrize("command", ["restore", "eval"])
def test_bad_weights_are_one_line_errors(files, tmp_path, capsys, monkeypatch, how, expected, command) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    weights = _broken(files, tmp_path, how)
    out = tmp_path / "out"
    args = {"restore": ["restore", str(SCENE)], "eval": ["eval", str(SCENE), str(SCENE)]}[command]
    message = _one_line_error([*args, "--cameras", str(files["cameras"]), "-o", str(out), "--weights", weights],
                              capsys)
    assert expected in message
    if how == "hub id offline":
        assert "local weights folder" in message
    assert not out.exists()  # nothing rendered or written before the weights loaded


def test_restore_without_default_weights_says_what_to_pass(files, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(weights_module, "DEFAULT_WEIGHTS", tmp_path / "not_installed")
    message = _one_line_error(["restore", str(SCENE), "--cameras", str(files["cameras"]), "-o",
                               str(tmp_path / "out"), "--generic"], capsys)
    assert "no default GaussPainter weights" in message and "--weights" in message


def test_eval_with_weights_adds_restored_columns(files, candidate, tmp_path, capsys) -> None:
    report = tmp_path / "report"
    assert main(["eval", str(SCENE), str(candidate), "--cameras", str(files["cameras"]), "-o", str(report),
                 "--backend", "torch", "--weights", str(files["weights"])]) == 0
    metrics = json.loads((report / "metrics.json").read_text())
    result = metrics["candidates"][0]
    assert isinstance(result["restored_psnr"], float) and isinstance(result["restored_ssim"], float)
    assert result["restored_psnr"] != result["psnr"] and len(result["per_view_restored_psnr"]) == 3
    assert metrics["grid_columns"] == ["reference", candidate.name, f"{candidate.name} restored",
                                       f"{candidate.name} mask"]
    assert "restored PSNR" in (report / "metrics.md").read_text()
    with Image.open(report / "grid.png") as grid:
        assert grid.size == (4 * WIDTH, 3 * HEIGHT)  # original, raw, restored, mask; a row per view
        pixels = np.asarray(grid.convert("RGB"))
    mask = pixels[:HEIGHT, 3 * WIDTH:]
    assert np.array_equal(mask[..., 0], mask[..., 1])  # the mask column is grey
    assert "restored: PSNR" in capsys.readouterr().out


@pytest.mark.parametrize("why", ["no default weights", "--no-restore"])
def test_eval_without_weights_skips_restoration_in_one_line(files, candidate, tmp_path, capsys, monkeypatch,
                                                            why) -> None:
    monkeypatch.setattr(weights_module, "DEFAULT_WEIGHTS", tmp_path / "not_installed")
    report = tmp_path / "report"
    extra = ["--no-restore"] if why == "--no-restore" else []
    assert main(["eval", str(SCENE), str(candidate), "--cameras", str(files["cameras"]), "-o", str(report),
                 "--backend", "torch", *extra]) == 0
    skipped = [line for line in capsys.readouterr().out.splitlines() if "restoration skipped" in line]
    assert len(skipped) == 1 and ("--weights" if why == "no default weights" else "--no-restore") in skipped[0]
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["candidates"][0]["restored_psnr"] is None
    with Image.open(report / "grid.png") as grid:
        assert grid.size == (2 * WIDTH, 3 * HEIGHT)


# --- painter-data and train-painter ----------------------------------------------------------------------


def _options(parser, name: str) -> dict[str, tuple]:
    command = next(a for a in parser._actions if a.dest == "command").choices[name]
    return {a.dest: (tuple(a.option_strings), a.default, a.required, a.nargs) for a in command._actions}


def test_painter_commands_have_one_definition_of_their_options() -> None:
    exgs, alias = build_parser(), painter_main.build_parser()
    assert _options(exgs, "painter-data") == _options(alias, "pairs")
    assert _options(exgs, "train-painter") == _options(alias, "train")


def test_painter_data_then_train_painter_on_a_tiny_budget(tmp_path, capsys) -> None:
    if not SCENES_DIR.is_dir():
        pytest.skip("real data folder is absent")
    pairs = tmp_path / "pairs"
    assert main(["painter-data", "--scenes", str(SCENES_DIR / "gs3d_lod1_tile_0_0.5x.ply"), "-o", str(pairs),
                 "--size", "32", "--views", "2", "--targets", "1", "--samples-per-view", "1",
                 "--scoring-views", "4", "--scoring-size", "32", "--seed", "5"]) == 0
    manifest = json.loads((pairs / "manifest.json").read_text())
    assert manifest["split"]["train"] == ["gs3d_lod1_tile_0_0.5x.ply"] and manifest["settings"]["scoring_views"] == 4
    samples = manifest["scenes"][0]["samples"]
    assert len(samples) == 4 and all((pairs / s["input"]).is_file() for s in samples)  # 2 views x 2 (captured)

    train = ["--data", str(pairs), "-o", str(tmp_path / "run"), "--vae-steps", "2", "--steps", "2",
             "--batch-size", "2", "--crop", "32", "--settings", json.dumps({"painter_config": TINY})]
    assert main(["train-painter", *train]) == 0
    weights = tmp_path / "run" / "weights"
    assert isinstance(load_painter(weights, device="cpu"), GaussPainter)
    steps = [json.loads(line)["stage"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == ["vae", "vae", "painter", "painter"]
    before = (weights / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert painter_main.main(["train", *train]) == 0  # the alias resumes the finished run: nothing more to train
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 4
    assert (weights / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == before


def test_train_painter_rejects_unknown_settings(tmp_path, capsys) -> None:
    message = _one_line_error(["train-painter", "--data", str(tmp_path), "-o", str(tmp_path / "run"),
                               "--settings", '{"no_such_field": 1}'], capsys)
    assert "no_such_field" in message


def test_restoration_strength_follows_the_exgs_files_compression(files, candidate, tmp_path, capsys) -> None:
    compressed, original = read_scene(candidate), read_scene(SCENE)
    ratio = inria_ratio(compressed)
    assert ratio is not None and 100 <= ratio <= 103  # --ratio 100 lands within 2% below the size target
    assert inria_ratio(original) is None  # not made by compression: unknown
    assert strength_for_ratio(ratio) == 1.0 and strength_for_ratio(None) == 1.0
    assert strength_for_ratio(30) == 0.0 and strength_for_ratio(60) == 0.0
    assert strength_for_ratio(np.sqrt(60 * 100)) == pytest.approx(0.5)
    common = ["--cameras", str(files["cameras"]), "--backend", "torch", "--weights", str(files["weights"]),
              "--save-raw"]
    assert main(["restore", str(candidate), *common, "-o", str(tmp_path / "none"), "--strength", "0"]) == 0
    assert main(["restore", str(candidate), *common, "-o", str(tmp_path / "half"), "--strength", "0.5"]) == 0
    assert main(["restore", str(candidate), *common, "-o", str(tmp_path / "full")]) == 0
    assert "strength 1.00" in capsys.readouterr().out
    for name in ["00000.png", "00001.png"]:
        raw, none, half, full = (np.asarray(Image.open(tmp_path / f / name)).astype(int)
                                 for f in ("none/raw", "none", "half", "full"))
        assert np.array_equal(none, raw) and not np.array_equal(full, raw)
        inside = (full > 0) & (full < 255)  # where the full correction was not clipped
        assert np.abs(half - (raw + full) / 2)[inside].max() <= 1.0  # halfway, up to 8-bit rounding


def test_bad_strength_is_a_one_line_error(files, candidate, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["restore", str(candidate), "--cameras", str(files["cameras"]), "-o", str(tmp_path / "x"),
              "--strength", "2"])
    assert exit_info.value.code != 0 and "must be in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
