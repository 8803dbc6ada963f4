"""A compressed object carrying a real fitted restoration, shared by the per-object restoration tests (core and
Blender): koala is held out from the painter's training (exgs_core/painter/default_weights/README.md)."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from exgs_core.camera import look_at
from exgs_core.scene import GaussianScene
from tests.conftest import MESH2SPLAT_DIR, random_gaussians


@functools.cache
def fitted_koala() -> bytes:
    """.exgs bytes: 4,000 koala Gaussians compressed to 100x, with a restoration fitted for 150 steps (about 4 CPU
    seconds) and stored at strength 1 (a visible correction to assert on; choosing the strength is tested in
    tests/test_restoration.py)."""
    import torch

    from exgs_core.io.exgs import with_restoration
    from exgs_core.painter.fit import fit_restoration, jittered_views, render_pairs
    from exgs_core.ugc.compress import Target, compress, scoring_cameras

    scene = random_gaussians(MESH2SPLAT_DIR / "koala.splat", 4000, seed=0)
    compressed = compress(scene, Target("ratio", 100), scoring_cameras(scene, views=6, size=64))
    pairs = render_pairs(scene, compressed.scene, jittered_views(scene, 12, seed=1, size=64), seed=1)
    validation = render_pairs(scene, compressed.scene, jittered_views(scene, 4, seed=2, size=64), seed=2)
    threads = torch.get_num_threads()
    try:
        fitted = fit_restoration(pairs, validation, steps=150, seed=0)  # a step budget: the same fit at any load
    finally:
        torch.set_num_threads(threads)
    return with_restoration(compressed.data, dataclasses.replace(fitted, strength=1.0).to_restoration())


def random_restoration():
    """A residual-CNN restoration section with seeded random weights (strength 0.6): for tests that need a file
    carrying a restoration, not a good one."""
    from exgs_core.io.exgs import Restoration

    rng = np.random.default_rng(0)
    shapes = {"conv1.weight": (8, 4, 3, 3), "conv1.bias": (8,), "conv2.weight": (8, 8, 3, 3), "conv2.bias": (8,),
              "conv3.weight": (3, 8, 3, 3), "conv3.bias": (3,)}
    return Restoration.from_arrays("residual_cnn", {"channels": 8},
                                   {k: 0.1 * rng.normal(size=s) for k, s in shapes.items()}, 0.6, {"gain_db": 0.5})


MINUS_Y_UP = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)  # import default
# Blender camera settings of the two-object frames: 256x128, landscape, the sensor width spans the image.
WIDE_CAMERA = {"lens_mm": 40.0, "sensor_width_mm": 36.0, "sensor_height_mm": 24.0, "sensor_fit": "HORIZONTAL",
               "shift_x": 0.0, "shift_y": 0.0, "resolution_x": 256, "resolution_y": 128,
               "resolution_percentage": 100, "pixel_aspect_x": 1.0, "pixel_aspect_y": 1.0}


def side_by_side(left: GaussianScene, right: GaussianScene, gap: float = 0.3
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offset of left, offset of right, Blender camera matrix_world): world-space offsets (3,) that put two
    world-space scenes (z up) next to each other along x with a gap of `gap` times the larger one's size, and a
    camera (-Z forward, +Y up) framing both from -y."""
    (lo_l, hi_l), (lo_r, hi_r) = (np.percentile(s.means, [1, 99], axis=0) for s in (left, right))
    size = float(max((hi_l - lo_l).max(), (hi_r - lo_r).max()))
    offset_l = np.array([-gap * size / 2 - hi_l[0], -(lo_l[1] + hi_l[1]) / 2, -(lo_l[2] + hi_l[2]) / 2])
    offset_r = np.array([gap * size / 2 - lo_r[0], -(lo_r[1] + hi_r[1]) / 2, -(lo_r[2] + hi_r[2]) / 2])
    width = float(hi_l[0] - lo_l[0] + hi_r[0] - lo_r[0]) + gap * size
    distance = 1.3 * (width / 2) / (WIDE_CAMERA["sensor_width_mm"] / 2 / WIDE_CAMERA["lens_mm"])
    world_to_camera = look_at(np.array([0.0, -distance, 0.25 * distance]), np.zeros(3), np.array([0.0, 0.0, 1.0]))
    return offset_l, offset_r, np.linalg.inv(world_to_camera) @ np.diag([1.0, -1.0, -1.0, 1.0])


def moved(scene: GaussianScene, offset: np.ndarray) -> GaussianScene:
    matrix = np.eye(4)
    matrix[:3, 3] = offset
    return scene.transformed(matrix)


def dilated(mask: np.ndarray, pixels: int) -> np.ndarray:
    """`mask` grown by `pixels` in every direction (a square neighbourhood)."""
    out = mask.copy()
    for dy in range(-pixels, pixels + 1):
        for dx in range(-pixels, pixels + 1):
            shifted = np.zeros_like(mask)
            h, w = mask.shape
            shifted[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
                mask[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
            out |= shifted
    return out
