"""UGC's method parts on real scenes: significance scores, voxel sampling, amplification."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from exgs_core.camera import orbit_cameras, sphere_cameras
from exgs_core.io import read_scene
from exgs_core.render.projection import covariances
from exgs_core.render.rasterize import ViewScorer, rasterize, scene_tensors
from exgs_core.ugc.amplify import Amplification, amplify
from exgs_core.ugc.sampling import local_prune_ratio, voxel_keys, voxel_sample
from exgs_core.ugc.significance import significance
from tests.conftest import MESH2SPLAT_DIR, SCENES_DIR, random_gaussians, requires_data
from tests.reference_significance import reference_significance_sums


@pytest.fixture(scope="module")
def fox():
    return read_scene(SCENES_DIR / "mjw_fox.ply")


@requires_data
def test_alpha_t_score_equals_the_gradient_of_a_one_channel_render(fox):
    cameras = sphere_cameras(fox.means, 3, 80, 60)
    scores = significance(fox, cameras, "alpha_t")
    p = scene_tensors(fox)
    expected = torch.zeros(len(fox), dtype=torch.float64)
    for camera in cameras:
        ones = torch.ones(len(fox), 1, requires_grad=True)
        rasterize(p["means"], p["quats"], p["scales"], p["opacities"], ones, camera).rgb.sum().backward()
        expected += ones.grad[:, 0].double()
    assert expected.sum() > 100
    np.testing.assert_allclose(scores, expected.numpy(), rtol=1e-4, atol=1e-5)


@requires_data
def test_significance_sums_are_the_readable_reference_bit_for_bit():
    """The compiled scoring path (whole-scene projection, parallel tile sort, one column composited) gives the
    same float64 sums as the reference, so scores, and the files compressed with them, do not change."""
    scene = random_gaussians(SCENES_DIR / "mjw_fox.ply", 6000, 0)
    means, opacities = torch.from_numpy(scene.means), torch.from_numpy(scene.opacities())
    covars = covariances(torch.from_numpy(scene.unit_quats()), torch.from_numpy(scene.scales()))
    cameras = sphere_cameras(scene.means, 2, 48, 40) + orbit_cameras(scene.means, 1, 37, 29, up="+y")
    scorer = ViewScorer(scene.means, covars.numpy(), scene.opacities())
    for camera in cameras:
        for by_alpha in (True, False):
            ours = scorer.sums(camera, by_alpha)
            expected = reference_significance_sums(means, covars, opacities, camera, by_alpha)
            assert np.sum(expected > 0) > 1000
            assert np.array_equal(ours, expected)


@requires_data
def test_sigma_t_score_bounds_alpha_t_and_counts_pixels(fox):
    cameras = sphere_cameras(fox.means, 2, 80, 60)
    alpha_t = significance(fox, cameras, "alpha_t")
    sigma_t = significance(fox, cameras, "sigma_t")
    touched = sigma_t > 0
    assert touched.sum() > 1000
    # alpha = opacity * exp(-sigma) <= opacity, so every alpha*T term is at most opacity*T.
    assert np.all(alpha_t <= sigma_t + 1e-6)
    assert np.array_equal(alpha_t > 0, touched)
    # A Gaussian made invisible gets no score at all.
    hidden = fox.subset(slice(None))
    hidden.opacity_logits[:100] = -30.0
    assert np.all(significance(hidden, cameras, "sigma_t")[:100] == 0)


def test_unknown_variant_is_rejected():
    with pytest.raises(ValueError, match="unknown significance variant"):
        significance(None, [], "volume")


@requires_data
@pytest.mark.parametrize("name", ["mjw_fox.ply", "gs3d_lod1_tile_0_0.5x.ply"])
def test_occupied_cell_count_matches_a_unique_count(name):
    """voxel_size_for's hash-set test of 'more than `limit` occupied cells' against np.unique on the keys."""
    from exgs_core.ugc.sampling import _cell_keys, _more_cells_than, _origin

    means = read_scene(SCENES_DIR / name).means
    origin = _origin(means)
    extent = float(np.ptp(means, axis=0).max())
    for voxel_size in extent * np.array([1e-5, 1e-3, 0.01, 0.05, 0.3, 3.0]):
        cells = len(np.unique(_cell_keys(means, origin, voxel_size)))
        for limit in {0, 1, cells - 1, cells, cells + 1, len(means)}:
            if limit >= 0:
                assert _more_cells_than(means, origin, voxel_size, limit) == (cells > limit), (voxel_size, limit)


def test_voxel_sampling_hits_the_count_exactly_and_keeps_one_per_voxel():
    rng = np.random.default_rng(0)
    dense = rng.normal(0.0, 0.05, size=(9000, 3))
    sparse = rng.uniform(-3, 3, size=(1000, 3))
    means = np.concatenate([dense, sparse])
    scores = np.concatenate([rng.uniform(1, 2, 9000), rng.uniform(0, 0.1, 1000)])  # sparse region scores low
    for keep in (50, 500, 1234, 5000):
        sample = voxel_sample(means, scores, keep)
        assert len(sample.keep) == keep == len(np.unique(sample.keep))
    sample = voxel_sample(means, scores, 1000, voxel_size=1.0)
    _, counts = voxel_keys(means, 1.0)
    must_keep = np.flatnonzero(counts >= 2)
    kept_voxels = np.unique(sample.voxel_of[sample.keep])
    assert set(must_keep) <= set(kept_voxels)
    # Plain top-k by score would keep none of the low-scoring sparse points; voxel sampling keeps coverage.
    top_k = np.argsort(-scores)[:1000]
    assert np.sum(top_k >= 9000) == 0 and np.sum(sample.keep >= 9000) > 50
    # Inside one voxel the best scores survive.
    voxel = sample.voxel_of[sample.keep[0]]
    members = np.flatnonzero(sample.voxel_of == voxel)
    kept = np.intersect1d(members, sample.keep)
    assert scores[kept].min() >= np.sort(scores[members])[::-1][len(kept) - 1]


def test_voxel_sampling_with_far_floaters_and_tiny_budgets():
    rng = np.random.default_rng(1)
    means = np.concatenate([rng.normal(size=(5000, 3)), rng.normal(size=(10, 3)) * 1e6])
    scores = rng.uniform(size=len(means))
    sample = voxel_sample(means, scores, 3)  # fewer than the voxels that would each want one
    assert len(sample.keep) == 3
    sample = voxel_sample(means, scores, 4000)
    assert len(sample.keep) == 4000
    ratio = local_prune_ratio(means, sample.keep, sample.voxel_size)
    assert ratio.shape == (4000,) and ratio.min() >= 1.0
    voxel = sample.voxel_of[sample.keep[0]]
    in_voxel, kept_in_voxel = np.sum(sample.voxel_of == voxel), np.sum(sample.voxel_of[sample.keep] == voxel)
    assert ratio[0] == in_voxel / kept_in_voxel


@requires_data
def test_amplification_grows_scales_and_compounds_opacity():
    scene = read_scene(MESH2SPLAT_DIR / "spot.splat").subset(slice(0, 1000))
    ratio = np.linspace(1, 16, 1000)
    out = amplify(scene, ratio, Amplification(scale_power=0.5, opacity_power=1.0, max_scale_gain=3.0))
    gain = np.exp(out.log_scales - scene.log_scales)
    np.testing.assert_allclose(gain[:, 0], np.minimum(ratio**0.5, 3.0), rtol=1e-5)
    o, o2 = scene.opacities(), out.opacities()
    finite = np.isfinite(scene.opacity_logits) & (o < 0.99)
    np.testing.assert_allclose(o2[finite], (1 - (1 - o[finite]) ** ratio[finite]).clip(1e-7, 1 - 1e-7), rtol=1e-4)
    unchanged = amplify(scene, ratio, Amplification())
    assert np.array_equal(unchanged.log_scales, scene.log_scales)


@requires_data
def test_write_tiled_ply_streams_the_same_gaussians_as_tile_scene(tmp_path):
    """The scale benchmark's inputs (10-20M Gaussians) are written a few copies at a time: the same file as
    write_ply(tile_scene(...)), and a count that is no count writes nothing."""
    from exgs_core.io.ply import write_ply
    from exgs_core.synthetic import tile_scene, write_tiled_ply

    scene = read_scene(SCENES_DIR / "gs3d_lod1_tile_0_0.5x.ply")
    write_tiled_ply(scene, 50_001, tmp_path / "streamed.ply", copies_per_chunk=2)
    write_ply(tile_scene(scene, 50_001), tmp_path / "whole.ply")
    assert (tmp_path / "streamed.ply").read_bytes() == (tmp_path / "whole.ply").read_bytes()
    with pytest.raises(ValueError, match="count must be positive"):
        write_tiled_ply(scene, 0, tmp_path / "none.ply")
    assert not (tmp_path / "none.ply").exists()


@requires_data
def test_check_views_refuse_a_released_scene():
    """compress(release_input=True) drops SH bands only where no check view renders the whole scene; should one
    be asked for anyway, it fails saying why instead of comparing against the wrong references."""
    from exgs_core.ugc.compress import _CheckViews

    scene = read_scene(SCENES_DIR / "mjw_fox.ply").subset(slice(0, 500))
    checks = _CheckViews(scene, sphere_cameras(scene.means, 4, 32, 32), released=True)
    with pytest.raises(RuntimeError, match="check views on a scene whose SH bands were released"):
        checks.error(scene)


@requires_data
def test_tile_scene_makes_exact_counts_of_non_overlapping_copies():
    from exgs_core.synthetic import tile_scene

    scene = read_scene(MESH2SPLAT_DIR / "bob.splat")
    big = tile_scene(scene, 250_001)
    assert len(big) == 250_001
    lo, hi = scene.bounds()
    assert np.all(big.means.max(0) - big.means.min(0) >= (hi - lo) - 1e-4)
    assert np.array_equal(big.sh[: len(scene)], scene.sh)
    shift = big.means[len(scene): 2 * len(scene)] - big.means[: len(scene)]
    assert np.abs(shift - np.median(shift, axis=0)).max() > 0  # jittered, not an exact translated copy


def test_voxel_sampling_without_proportional_share_fills_by_global_score():
    rng = np.random.default_rng(2)
    means = rng.uniform(-1, 1, size=(20000, 3))
    scores = rng.uniform(size=20000) + (means[:, 0] > 0.5)  # one slab scores much higher
    sample = voxel_sample(means, scores, 2000, voxel_size=0.5, proportional=0.0)
    assert len(sample.keep) == 2000
    must_keep = np.flatnonzero(sample.voxel_counts >= 2)
    assert set(must_keep) <= set(sample.voxel_of[sample.keep])  # coverage: every voxel keeps one
    # Beyond the one per voxel, the high-scoring slab takes the budget (proportional sharing would not).
    share_in_slab = np.mean(means[sample.keep, 0] > 0.5)
    proportional = voxel_sample(means, scores, 2000, voxel_size=0.5, proportional=1.0)
    assert share_in_slab > 0.9 and np.mean(means[proportional.keep, 0] > 0.5) < 0.4


def test_a_voxel_grid_reused_for_many_counts_samples_like_a_fresh_one():
    from exgs_core.ugc.sampling import VoxelGrid, _cell_keys, _origin

    rng = np.random.default_rng(3)
    means = np.concatenate([rng.normal(size=(6000, 3)), rng.normal(size=(5, 3)) * 1e6]).astype(np.float32)
    scores = np.round(rng.uniform(size=len(means)), 2)  # ties: the order among equal scores must hold too
    grid = VoxelGrid(means, scores, 0.4)
    for keep, proportional in ((10, 1.0), (700, 0.5), (2500, 0.0), (6005, 1.0)):
        sample = grid.sample(keep, proportional=proportional)
        fresh = voxel_sample(means, scores, keep, voxel_size=0.4, proportional=proportional)
        assert np.array_equal(sample.keep, fresh.keep) and len(sample.keep) == keep
        np.testing.assert_array_equal(grid.prune_ratio(sample.keep), local_prune_ratio(means, sample.keep, 0.4))
    # The compiled voxel keys are the numpy formula, floaters clipped into the border cells.
    origin = _origin(means)
    for size in (1e-6, 0.4, 1e7):
        cells = np.clip(np.floor((means - origin) / size) + (1 << 20), 0, (1 << 21) - 1).astype(np.int64)
        expected = (cells[:, 0] << 42) | (cells[:, 1] << 21) | cells[:, 2]
        assert np.array_equal(_cell_keys(means, origin, size), expected)
