"""Merging pruned Gaussians into kept ones (exgs_core/ugc/merge.py) and the merge method of compress()."""

from __future__ import annotations

import numpy as np
import pytest

from exgs_core.camera import sphere_cameras
from exgs_core.io.exgs import decode_exgs
from exgs_core.metrics import psnr
from exgs_core.render import render
from exgs_core.ugc import merge
from exgs_core.ugc.compress import CompressSettings, Target, compress
from exgs_core.ugc.significance import significance
from tests.conftest import SCENES_DIR, random_gaussians, requires_data


@pytest.fixture(scope="module")
def fox_part():
    return random_gaussians(SCENES_DIR / "mjw_fox.ply", 3000, seed=1)


def _groups(count: int, groups: int, seed: int) -> np.ndarray:
    """Owner of each of `count` Gaussians: every group non-empty, some dropped (-1)."""
    rng = np.random.default_rng(seed)
    owner = rng.integers(-1, groups, size=count)
    owner[:groups] = np.arange(groups)
    return owner


def _covariance(scene, i: int) -> np.ndarray:
    return merge.covariances(scene.subset([i]))[0]


@requires_data
def test_merged_moments_equal_the_mixture_moments(fox_part):
    owner = _groups(len(fox_part), 200, seed=0)
    merged = merge.merge_groups(fox_part, owner, 200)
    reference = merge.merge_groups_reference(fox_part, owner, 200)
    np.testing.assert_allclose(merged.means, reference.means, rtol=0, atol=1e-6)
    np.testing.assert_allclose(merged.sh, reference.sh, rtol=0, atol=1e-6)
    np.testing.assert_allclose(merged.opacities(), reference.opacities(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(merge.covariances(merged), merge.covariances(reference), rtol=1e-4, atol=1e-9)

    # Independently of both: the mixture's mean and covariance as E[x] and E[xx'] - E[x]E[x]'.
    weight = merge.masses(fox_part)
    means = fox_part.means.astype(np.float64)
    for g in (0, 17, 199):
        idx = np.flatnonzero(owner == g)
        assert len(idx) > 3
        p = weight[idx] / weight[idx].sum()
        mean = p @ means[idx]
        second = sum(p[k] * (_covariance(fox_part, i) + np.outer(means[i], means[i])) for k, i in enumerate(idx))
        np.testing.assert_allclose(merged.means[g], mean, atol=1e-6)
        np.testing.assert_allclose(_covariance(merged, g), second - np.outer(mean, mean), rtol=1e-3, atol=1e-9)
        np.testing.assert_allclose(merged.sh[g], np.einsum("k,kcj->cj", p, fox_part.sh[idx]), atol=1e-6)


@requires_data
def test_merging_in_blocks_of_groups_gives_the_same_bits(fox_part, monkeypatch):
    """merge_groups works through the groups in blocks of about CHUNK members (memory on 10M-Gaussian scenes),
    and the Merger reads float32 means and 6-value covariances: the same result as in one piece, to the bit."""
    owner = _groups(len(fox_part), 200, seed=3)
    whole = merge.merge_groups(fox_part, owner, 200, merge.covariances(fox_part))
    monkeypatch.setattr(merge, "CHUNK", 37)  # blocks of a few groups, and groups larger than a block
    blocks = merge.merge_groups(fox_part, owner, 200)
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
        assert np.array_equal(getattr(whole, name), getattr(blocks, name)), name
    keep = np.sort(np.random.default_rng(0).choice(len(fox_part), 700, replace=False))
    chunked = merge.Merger(fox_part).merge(keep)
    monkeypatch.setattr(merge, "CHUNK", 1 << 18)
    single = merge.Merger(fox_part).merge(keep)
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
        assert np.array_equal(chunked.__dict__[name], single.__dict__[name]), name


@requires_data
def test_merging_conserves_opacity_mass_and_leaves_lone_gaussians_alone(fox_part):
    owner = _groups(len(fox_part), 600, seed=2)
    owner[owner == 5] = -1
    owner[5] = 5  # group 5 holds one Gaussian
    merged = merge.merge_groups(fox_part, owner, 600)
    mass_in = np.bincount(owner[owner >= 0], merge.masses(fox_part)[owner >= 0], minlength=600)
    mass_out = merge.masses(merged)
    below_cap = merged.opacities() < merge.OPACITY_CAP * 0.999
    assert below_cap.sum() > 300
    np.testing.assert_allclose(mass_out[below_cap], mass_in[below_cap], rtol=1e-4)
    assert np.all(mass_out <= mass_in * (1 + 1e-4))  # capped groups lose mass, none gains
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
        assert np.array_equal(getattr(merged, name)[5], getattr(fox_part, name)[5])


def test_vectorised_quaternions_match_the_single_matrix_conversion():
    from exgs_core.scene import quat_to_rotation, rotation_to_quat

    rotations = quat_to_rotation(np.random.default_rng(3).normal(size=(500, 4)))
    quats = merge.rotations_to_quats(rotations)
    expected = np.array([rotation_to_quat(r) for r in rotations])
    expected *= np.sign(expected[:, :1])
    np.testing.assert_allclose(quats, expected, atol=1e-9)


@requires_data
def test_every_seen_pruned_gaussian_joins_a_nearby_kept_one(fox_part):
    cameras = sphere_cameras(fox_part.means, 6, 64, 64)
    scores = significance(fox_part, cameras)
    keep = np.sort(np.argsort(-scores)[:600])
    owner = merge.assign_to_kept(fox_part, keep, scores)
    assert np.array_equal(owner[keep], np.arange(600))
    pruned_seen = np.setdiff1d(np.flatnonzero(scores > 0), keep)
    assert (owner[pruned_seen] >= 0).mean() > 0.95
    assert np.all(owner[scores == 0] == -1)
    joined = pruned_seen[owner[pruned_seen] >= 0]
    distance = np.linalg.norm(fox_part.means[joined] - fox_part.means[keep[owner[joined]]], axis=1)
    nearest = np.min(np.linalg.norm(fox_part.means[joined, None] - fox_part.means[keep][None], axis=2), axis=1)
    assert np.median(distance) < 3 * np.median(nearest) + 1e-6


@requires_data
def test_nearby_sizes_of_a_real_scene_give_non_decreasing_quality():
    scene = random_gaussians(SCENES_DIR / "mjw_fox.ply", 20000, seed=4)
    cameras = sphere_cameras(scene.means, 8, 96, 96)
    scores = significance(scene, cameras)
    tests = sphere_cameras(scene.means, 5, 128, 128)  # other views than the scoring ones
    references = [render(scene, c, backend="torch").rgb for c in tests]
    values = []
    for ratio in (110.0, 100.0, 90.0):
        result = compress(scene, Target("ratio", ratio), cameras, CompressSettings(), scores=scores)
        values.append(float(np.mean([psnr(render(result.scene, c, backend="torch").rgb, r)
                                     for c, r in zip(tests, references)])))
    assert values[0] <= values[1] + 0.05 and values[1] <= values[2] + 0.05, values


@requires_data
def test_a_merged_scene_round_trips_through_exgs(fox_part):
    cameras = sphere_cameras(fox_part.means, 6, 64, 64)
    result = compress(fox_part, Target("keep", 0.2), cameras, CompressSettings(method="merge"))
    decoded = decode_exgs(result.data)
    assert len(decoded) == len(result.kept) == 600
    assert result.stats["method"] == "merge"
    scores = significance(fox_part, cameras)
    unpacked = merge.merge_pruned(fox_part, result.kept, scores)
    assert not np.allclose(unpacked.means, fox_part.means[result.kept])  # something was merged
    view = sphere_cameras(fox_part.means, 2, 128, 128)[1]
    assert float(psnr(render(decoded, view, backend="torch").rgb, render(unpacked, view, backend="torch").rgb)) > 35


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="unknown compression method"):
        CompressSettings(method="cluster")
