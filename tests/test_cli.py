"""The `exgs` command line on real files: info, convert, cameras, render, and its errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from exgs_core.camera import read_transforms
from exgs_core.cli import main
from exgs_core.images import read_png
from exgs_core.io import read_scene
from exgs_core.render import render
from tests.conftest import SCENES_DIR, real_scene_paths, requires_data

EXGS = [sys.executable, "-m", "exgs_core.cli"]


@requires_data
@pytest.mark.parametrize("path", real_scene_paths(), ids=lambda p: p.parent.name if p.name == "meta.json" else p.name)
def test_info_json_on_every_real_file(path, capsys):
    assert main(["info", str(path), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    scene = read_scene(path)
    assert facts["gaussians"] == len(scene) > 0
    assert facts["sh_degree"] == scene.sh_degree
    assert facts["format"] in ("ply", "splat", "sog", "compressed-ply")
    assert facts["bytes"] > 0
    assert np.allclose(facts["bounds_min"], scene.means.min(0), atol=1e-5)


@requires_data
def test_info_text_through_the_console_entry_point():
    result = subprocess.run(EXGS + ["info", str(SCENES_DIR / "mjw_fox.ply")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "50,000" in result.stdout and "ply" in result.stdout


@requires_data
@pytest.mark.parametrize("suffix", [".ply", ".splat", ".compressed.ply"])
def test_convert_between_formats(tmp_path, suffix, capsys):
    source = SCENES_DIR / "pcengine_playbot_3_0"
    target = tmp_path / f"playbot{suffix}"
    assert main(["convert", str(source), str(target)]) == 0
    converted, original = read_scene(target), read_scene(source)
    assert len(converted) == len(original)
    assert converted.metadata["format"] == {".ply": "ply", ".splat": "splat", ".compressed.ply": "compressed-ply"}[
        suffix
    ]
    # Same positions up to order and the format's quantisation: compare each axis's sorted values.
    assert np.abs(np.sort(converted.means, 0) - np.sort(original.means, 0)).max() < 0.01


@requires_data
def test_convert_refuses_to_overwrite_its_input(tmp_path, capsys):
    copy = tmp_path / "fox.ply"
    shutil.copy(SCENES_DIR / "mjw_fox.ply", copy)
    before = copy.read_bytes()
    assert main(["convert", str(copy), str(copy)]) == 1
    assert "refusing to overwrite the input" in capsys.readouterr().err
    assert copy.read_bytes() == before


@requires_data
def test_cameras_then_render_writes_frames_in_order(tmp_path, capsys):
    scene_path = SCENES_DIR / "splats_plant.splat"
    cameras_path = tmp_path / "orbit.json"
    assert main(["cameras", str(scene_path), "--orbit", "3", "--size", "64x48", "--up=-y", "-o", str(cameras_path)]) == 0
    cameras = read_transforms(cameras_path)
    assert len(cameras) == 3 and (cameras[0].width, cameras[0].height) == (64, 48)

    out = tmp_path / "frames"
    args = ["render", str(scene_path), "--cameras", str(cameras_path), "-o", str(out), "--backend", "torch",
            "--background", "1,1,1", "--save-alpha"]
    assert main(args) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["00000.png", "00001.png", "00002.png"]
    scene = read_scene(scene_path)
    for index, camera in enumerate(cameras):
        expected = render(scene, camera, background=(1, 1, 1), backend="torch")
        written = read_png(out / f"{index:05d}.png")
        assert written.shape == (48, 64, 3)
        assert np.abs(written - expected.rgb.numpy()).max() <= 0.5 / 255 + 1e-6  # 8-bit rounding only
        alpha = read_png(out / "alpha" / f"{index:05d}.png")
        assert np.abs(alpha - expected.alpha.numpy()).max() <= 0.5 / 255 + 1e-6
    # The orbit goes around the plant: frames differ.
    assert np.abs(read_png(out / "00000.png") - read_png(out / "00001.png")).mean() > 0.01


def test_errors_are_one_line_with_a_nonzero_exit(tmp_path):
    broken = tmp_path / "broken.ply"
    broken.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1000000\nproperty float x\nend_header\n")
    result = subprocess.run(EXGS + ["info", str(broken)], capture_output=True, text=True)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("exgs: error: ") and str(broken) in lines[0]

    missing = subprocess.run(EXGS + ["render", str(broken), "--cameras", str(tmp_path / "none.json"), "-o",
                                     str(tmp_path / "out")], capture_output=True, text=True)
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1


def test_bad_arguments_are_rejected(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["cameras", "x.ply", "--orbit", "4", "--size", "big", "-o", "c.json"])
    assert exit_info.value.code == 2
    assert "is not WxH" in capsys.readouterr().err
