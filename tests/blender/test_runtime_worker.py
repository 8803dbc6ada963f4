"""The worker process path: a real `python -m exgs_core.worker` renders and compresses like exgs_core in-process."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from exgs_core.camera import orbit_cameras
from exgs_core.render import render
from exgs_core.worker import Cancelled, Correction, InProcessRuntime, WorkerError, WorkerRuntime
from tests.conftest import MESH2SPLAT_DIR, random_gaussians, requires_data

pytestmark = requires_data


@pytest.fixture(scope="module")
def small_scene():
    return random_gaussians(MESH2SPLAT_DIR / "spot.splat", 3000, seed=0)


@pytest.fixture()
def worker():
    runtime = WorkerRuntime(sys.executable)
    yield runtime
    runtime.close()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def test_worker_renders_like_exgs_core(worker, small_scene):
    camera = orbit_cameras(small_scene.means, 1, 64, 48)[0]
    info = worker.info()
    assert info["torch"] and info["numba"] and info["device"]
    worker.load_scene("spot", small_scene)
    frame = worker.render("spot", camera, background=(0.2, 0.3, 0.4))
    expected = render(small_scene, camera, background=(0.2, 0.3, 0.4))
    assert frame.raw.shape == (48, 64, 3) and frame.alpha.shape == (48, 64) and frame.depth.shape == (48, 64)
    assert frame.alpha.max() > 0.5  # the object is in view
    assert psnr(frame.raw, expected.rgb.numpy()) > 60
    assert psnr(frame.alpha, expected.alpha.numpy()) > 60
    np.testing.assert_allclose(frame.depth, expected.depth.numpy(), rtol=1e-4, atol=1e-4)
    with pytest.raises(WorkerError, match="does not hold scene"):
        worker.render("other", camera)


def test_worker_compress_matches_in_process_and_cancels(worker, small_scene):
    target = {"kind": "keep", "value": 0.2}
    stages = []
    data, stats = worker.compress(small_scene, target, None, 0, on_progress=lambda s, f: stages.append((s, f)),
                                  restoration="none")
    local_data, local_stats = InProcessRuntime().compress(small_scene, target, None, 0, restoration="none")
    assert stats["gaussians_after"] == local_stats["gaussians_after"] == 600
    assert data == local_data  # deterministic pipeline, same bytes
    assert stages and stages[-1] == ("done", 1.0)

    def cancel(stage, fraction):
        raise Cancelled("cancelled")

    with pytest.raises(Cancelled):
        worker.compress(small_scene, target, None, 0, on_progress=cancel, restoration="none")
    assert worker._process is None  # the job was stopped with its process; the next request starts a new one
    worker.load_scene("spot", small_scene)
    assert worker.render("spot", orbit_cameras(small_scene.means, 1, 16, 16)[0]).raw.shape == (16, 16, 3)


def test_worker_reports_errors_and_bad_python(small_scene):
    runtime = WorkerRuntime("/nonexistent/python")
    with pytest.raises(WorkerError, match="cannot start"):
        runtime.info()
    assert runtime._log is None  # no log file left behind for a process that never ran


def test_worker_log_is_deleted_on_close_and_kept_when_the_worker_dies(tmp_path):
    runtime = WorkerRuntime(sys.executable)
    runtime.info()
    log = Path(runtime._log.name)
    assert log.exists()
    runtime.close()
    assert not log.exists()

    dying = WorkerRuntime("/bin/sh")  # `sh -m exgs_core.worker`: prints an error and exits at once
    with pytest.raises(WorkerError, match="stopped") as error:
        dying.info()
    kept = Path(str(error.value).split("Its log (")[1].split(")")[0])
    try:
        assert kept.exists() and "exgs_core.worker" in kept.read_text()  # the shell's complaint
        dying.close()
        assert kept.exists()  # named in the error: closing does not delete it
    finally:
        kept.unlink(missing_ok=True)


def test_worker_restores_each_object_like_in_process(worker, small_scene):
    """Corrections cross the worker protocol: half of the Gaussians (one "object") restored, the rest raw."""
    import torch

    from exgs_core.painter.fit import FitResult, ResidualCNN

    torch.manual_seed(0)
    module = ResidualCNN()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.05 * torch.randn(p.shape))
    text = FitResult(module, 0.8, 0.5, 30.0, 30.5, -0.1, 0, 10, 1.0, [0.5]).to_restoration().to_text()
    corrections = [Correction(0, 1500, 0.8, text)]
    camera = orbit_cameras(small_scene.means, 1, 64, 48)[0]
    worker.load_scene("spot", small_scene)
    frame = worker.render("spot", camera, (0.2, 0.3, 0.4), corrections)
    local = InProcessRuntime()
    local.load_scene("spot", small_scene)
    expected = local.render("spot", camera, (0.2, 0.3, 0.4), corrections)
    assert frame.restored is not None and np.abs(frame.restored - frame.raw).max() > 0.01
    np.testing.assert_allclose(frame.restored, expected.restored, atol=1e-6)
