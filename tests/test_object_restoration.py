"""Frames of several splat objects: each object is restored by its own correction, only where it shows.

Real renders of a compressed koala carrying a real fitted restoration (tests/fitted_data.py) next to an
uncompressed spot: the rasteriser's per-object coverage, restore_objects() and the worker's render_frame().
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from exgs_core.camera import Camera, blender_camera_to_camera
from exgs_core.io.exgs import decode_exgs
from exgs_core.painter.fit import scene_restorer
from exgs_core.painter.restore import object_share, restore, restore_objects
from exgs_core.render import render
from exgs_core.scene import GaussianScene
from exgs_core.worker import Correction, render_frame
from tests.conftest import MESH2SPLAT_DIR, random_gaussians, requires_data
from tests.fitted_data import MINUS_Y_UP, WIDE_CAMERA, dilated, fitted_koala, moved, side_by_side

pytestmark = [requires_data, pytest.mark.usefixtures("one_torch_thread")]
BACKGROUND = (0.2, 0.3, 0.4)


@functools.cache
def frame() -> tuple[GaussianScene, GaussianScene, Camera, str]:
    """(koala with its fitted restoration, spot), side by side in world space; the camera; the restoration text."""
    data = fitted_koala()
    koala, spot = decode_exgs(data).transformed(MINUS_Y_UP), random_gaussians(
        MESH2SPLAT_DIR / "spot.splat", 2000, seed=1).transformed(MINUS_Y_UP)
    offset_k, offset_s, matrix = side_by_side(koala, spot)
    camera = blender_camera_to_camera(**WIDE_CAMERA, matrix_world=matrix)
    return moved(koala, offset_k), moved(spot, offset_s), camera, decode_exgs(data).metadata["restoration"].to_text()


def test_coverage_comes_from_the_same_pass_and_sums_to_alpha() -> None:
    koala, spot, camera, _ = frame()
    both = GaussianScene.concatenate([koala, spot])
    plain = render(both, camera, background=BACKGROUND)
    grouped = render(both, camera, background=BACKGROUND, groups=[(0, len(koala)), (len(koala), len(both))])
    assert np.array_equal(plain.rgb.numpy(), grouped.rgb.numpy()) and plain.coverage is None
    coverage = grouped.coverage.numpy()
    assert coverage.shape == (128, 256, 2) and coverage.min() >= 0
    np.testing.assert_allclose(coverage.sum(-1), grouped.alpha.numpy(), atol=1e-5)
    alone = render(koala, camera, background=BACKGROUND).alpha.numpy()
    assert (alone > 0.5).sum() > 300 and (coverage[..., 1] > 0.5).sum() > 300  # both objects are in the frame
    np.testing.assert_allclose(coverage[..., 0][coverage[..., 1] == 0], alone[coverage[..., 1] == 0], atol=1e-5)
    with pytest.raises(ValueError, match="outside the scene"):
        render(both, camera, groups=[(0, len(both) + 1)])


def test_each_object_gets_its_own_correction_only_where_it_shows() -> None:
    koala, spot, camera, text = frame()
    module, strength = scene_restorer(decode_exgs(fitted_koala()), device="cpu")
    both = GaussianScene.concatenate([koala, spot])
    mixed = render(both, camera, background=BACKGROUND, groups=[(0, len(koala))])  # the spot has no correction
    raw, alpha, coverage = mixed.rgb.numpy(), mixed.alpha.numpy(), mixed.coverage.numpy()
    out = restore_objects(raw, alpha, coverage, [(module, strength)])

    koala_alone, spot_alone = (render(s, camera, background=BACKGROUND) for s in (koala, spot))
    alone_restored = restore(koala_alone.rgb.numpy(), koala_alone.alpha.numpy(), module, strength)
    spot_only = (spot_alone.alpha.numpy() > 0) & (koala_alone.alpha.numpy() == 0)
    # koala pixels farther from the spot than the correction's reach (4 px: three 3x3 convolutions, one dilated)
    koala_only = (koala_alone.alpha.numpy() > 0) & ~dilated(spot_alone.alpha.numpy() > 0, 5)
    assert spot_only.sum() > 500 and koala_only.sum() > 500
    np.testing.assert_array_equal(out[spot_only], np.clip(raw, 0, 1)[spot_only])
    assert np.abs(out - alone_restored)[koala_only].max() < 1e-4
    assert np.abs(out - raw)[koala_only].mean() > 0.01  # the correction is visible

    # The worker's path: the same frame from the scene and one Correction for the koala's Gaussians.
    worked = render_frame(both, camera, BACKGROUND, [Correction(0, len(koala), strength, text)])
    np.testing.assert_array_equal(worked.raw, raw)
    np.testing.assert_allclose(worked.restored, out, atol=1e-6)
    # One object alone: its correction covers the whole scene, exactly restore() as before.
    single = render_frame(koala, camera, BACKGROUND, [Correction(0, len(koala), strength, text)])
    np.testing.assert_array_equal(single.restored, alone_restored)


def test_one_painter_with_a_strength_per_object() -> None:
    """GaussPainter's case: one painter for every object, each at its own strength (by its ratio), one pass."""
    koala, spot, camera, _ = frame()
    painter, _ = scene_restorer(decode_exgs(fitted_koala()), device="cpu")
    both = GaussianScene.concatenate([koala, spot])
    mixed = render(both, camera, background=BACKGROUND, groups=[(0, len(koala)), (len(koala), len(both))])
    raw, alpha, coverage = mixed.rgb.numpy(), mixed.alpha.numpy(), mixed.coverage.numpy()
    out = restore_objects(raw, alpha, coverage, [(painter, 1.0), (painter, 0.3)])
    koala_only = (coverage[..., 0] > 0) & (coverage[..., 1] == 0)
    spot_only = (coverage[..., 1] > 0) & (coverage[..., 0] == 0)
    for mask, strength in ((koala_only, 1.0), (spot_only, 0.3)):
        np.testing.assert_allclose(out[mask], restore(raw, alpha, painter, strength)[mask], atol=1e-6)
    shared = (coverage[..., 0] > 0.05) & (coverage[..., 1] > 0.05)
    shares = np.stack([object_share(alpha, coverage, k) for k in range(2)], axis=-1)
    np.testing.assert_allclose(shares.sum(-1)[alpha > 0], 1.0, atol=1e-5)
    if shared.any():  # pixels both objects show get the correction in proportion to what each shows
        wanted = restore(raw, alpha, painter, shares[..., 0] + 0.3 * shares[..., 1])
        np.testing.assert_allclose(out[shared], wanted[shared], atol=1e-6)
    # Where nothing shows, each object's share of the whole frame.
    empty = alpha == 0
    frame_share = coverage.sum((0, 1)) / alpha.sum()
    np.testing.assert_allclose(shares[empty], np.broadcast_to(frame_share, shares[empty].shape), rtol=1e-5)
