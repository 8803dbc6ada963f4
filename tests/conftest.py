"""Shared fixtures: the real scenes in ../shared/data (tests that need them skip when it is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = REPO_ROOT.parent / "shared" / "data"
SCENES_DIR = DATA_ROOT / "scenes"
MESH2SPLAT_DIR = DATA_ROOT / "mesh2splat"


def real_scene_paths() -> list[Path]:
    """Every scene file in shared/data: the captured scenes, the SOG folder and the mesh-converted objects."""
    if not DATA_ROOT.is_dir():
        return []
    paths = sorted(p for p in SCENES_DIR.iterdir() if p.suffix in (".ply", ".splat"))
    paths.append(SCENES_DIR / "pcengine_playbot_3_0" / "meta.json")
    paths += sorted(MESH2SPLAT_DIR.glob("*.splat"))
    return paths


def captured_scene_paths() -> list[Path]:
    """The scenes in shared/data/scenes (captured or trained, not mesh-converted)."""
    return [p for p in real_scene_paths() if p.parent != MESH2SPLAT_DIR]


def random_gaussians(path: Path, count: int, seed: int):
    """`count` Gaussians drawn at random (seeded) from the scene file at `path`: small real scenes for slow paths."""
    import numpy as np

    from exgs_core.io import read_scene

    scene = read_scene(path)
    return scene.subset(np.random.default_rng(seed).permutation(len(scene))[:count])


requires_data = pytest.mark.skipif(not DATA_ROOT.is_dir(), reason=f"real data folder {DATA_ROOT} is absent")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on a shared 2-core machine run faster on one torch thread (no OpenMP spin-waits under load)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """pytest-xdist's two processes (`-n 2 --dist loadscope` in pyproject.toml) take work a module at a time, so
    each module fixture is computed once, with every test in tests/blender as one unit: their session fixtures
    (the zip built and installed in both Blenders, the numba kernels shared with them) are then made once. Most
    tests are single-threaded, so the Blender tests and the core tests run side by side on 2 cores."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class BlenderTestsTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "tests/blender" if nodeid.startswith("tests/blender/") else super()._split_scope(nodeid)

    return BlenderTestsTogether(config, log)
