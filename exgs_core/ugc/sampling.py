"""Voxel-based sampling: keep the most significant Gaussians per voxel so sparse regions keep coverage.

ExGS keeps, in each voxel V holding n_V Gaussians, the top floor(n_V * rho) by score, and at least one
where the voxel holds enough Gaussians. We calibrate rho by bisection so the count never exceeds the
request, then fill the last few places with the best remaining scores, so the count is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from exgs_core.numba_cache import configure_numba_cache
from exgs_core.side_by_side import LARGE, run_side_by_side

configure_numba_cache(__file__)

_CELL_OFFSET = 1 << 20  # cells span [-2^20, 2^20) voxels around the scene's corner
_FIBONACCI = np.int64(-7046029254386353131)  # 2^64 / golden ratio, as int64 (multiplicative hashing)


@dataclass
class VoxelSample:
    keep: np.ndarray  # (K,) sorted indices of the kept Gaussians
    voxel_of: np.ndarray  # (N,) voxel index of every Gaussian
    voxel_counts: np.ndarray  # (V,) Gaussians per voxel before pruning
    kept_counts: np.ndarray  # (V,) Gaussians per voxel after pruning
    voxel_size: float
    rho: float


def voxel_keys(means: np.ndarray, voxel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """(voxel index per point, points per voxel).

    Cells are counted from the scene's 0.5th-percentile corner and clipped to 2^20 per axis, so one int64
    key (and one sort) identifies a voxel whatever the extent; far floaters share the border cells.
    """
    keys = _cell_keys(means, _origin(means), voxel_size)
    _, voxel_of, counts = np.unique(keys, return_inverse=True, return_counts=True)
    return voxel_of.reshape(-1), counts


def _origin(means: np.ndarray) -> np.ndarray:
    return np.percentile(means, 0.5, axis=0).astype(np.float64)


def _cell_keys(means: np.ndarray, origin: np.ndarray, voxel_size: float) -> np.ndarray:
    return _cell_keys_kernel(np.ascontiguousarray(means), np.asarray(origin, np.float64), float(voxel_size))


@numba.njit(cache=True)
def _cell_keys_kernel(means, origin, voxel_size):
    """floor((means - origin) / voxel_size) + offset, clipped, packed 21 bits per axis into one int64 key.

    numpy's float64 steps one point at a time (the array expression makes several (N, 3) temporaries and
    took most of the time of a unique-count on 1.5M Gaussians).
    """
    keys = np.empty(len(means), np.int64)
    top = 2.0 * _CELL_OFFSET - 1.0
    for i in range(len(means)):
        key = np.int64(0)
        for axis in range(3):
            cell = np.floor((np.float64(means[i, axis]) - origin[axis]) / voxel_size) + _CELL_OFFSET
            key = (key << 21) | np.int64(min(max(cell, 0.0), top))
        keys[i] = key
    return keys


def voxel_size_for(means: np.ndarray, occupied_voxels: int, iterations: int = 16) -> float:
    """The voxel size at which about `occupied_voxels` voxels are occupied (bisection in log space)."""
    lo_corner, hi_corner = np.percentile(means, 1, axis=0), np.percentile(means, 99, axis=0)
    extent = float(np.max(hi_corner - lo_corner)) or 1.0
    small, large = np.log(extent * 1e-5), np.log(extent * 2.0)
    origin = _origin(means)
    for _ in range(iterations):
        middle = 0.5 * (small + large)
        if _more_cells_than(means, origin, float(np.exp(middle)), occupied_voxels):
            small = middle
        else:
            large = middle
    return float(np.exp(large))


def _more_cells_than(means: np.ndarray, origin: np.ndarray, voxel_size: float, limit: int) -> bool:
    """Whether the points occupy more than `limit` cells (the cells of _cell_keys).

    Counted in a hash set of about 2 * (limit + 1) keys, stopping at the first cell past the limit: a
    unique-count sorted all N keys in each of voxel_size_for's 16 steps (about 1 s each at 10M points)."""
    bits = max(4, (2 * (limit + 1)).bit_length())
    return bool(_count_exceeds(_cell_keys(means, origin, voxel_size), limit, bits))


@numba.njit(cache=True)
def _count_exceeds(keys, limit, bits):
    """Whether `keys` (>= 0) hold more than `limit` distinct values: open addressing in 2^bits slots."""
    table = np.full(1 << bits, -1, np.int64)
    mask = (1 << bits) - 1
    count = 0
    for key in keys:
        slot = ((key * _FIBONACCI) >> (64 - bits)) & mask  # the product's top bits: the cells' bits all mix
        while table[slot] != -1 and table[slot] != key:
            slot = (slot + 1) & mask
        if table[slot] == -1:
            table[slot] = key
            count += 1
            if count > limit:
                return True
    return False


class VoxelGrid:
    """Gaussians binned into voxels of one size, with their rank by score inside their voxel.

    Binning and ranking cost a sort each; build one grid per voxel size and sample from it many times.
    """

    def __init__(self, means: np.ndarray, scores: np.ndarray, voxel_size: float):
        self.means, self.scores, self.voxel_size = means, scores, float(voxel_size)
        sorts = run_side_by_side({"voxels": lambda: voxel_keys(means, voxel_size),  # two sorts of N (1 s each at 10M)
                                  "order": lambda: np.argsort(-scores, kind="stable")}, len(means) >= LARGE)
        (self.voxel_of, self.counts), self.best_first = sorts["voxels"], sorts["order"]
        self.rank = _rank_within_voxel(self.voxel_of, self.best_first)

    def sample(self, keep_count: int, min_points: int = 2, proportional: float = 1.0) -> VoxelSample:
        """Indices of exactly `keep_count` Gaussians (see voxel_sample)."""
        n, counts, voxel_of = len(self.means), self.counts, self.voxel_of
        if not 0 < keep_count <= n:
            raise ValueError(f"keep_count must be in 1..{n}, got {keep_count}")

        def kept_per_voxel(rho: float) -> np.ndarray:
            k = np.floor(counts * rho).astype(np.int64)
            return np.where(counts >= min_points, np.maximum(k, 1), k)

        budget = max(int(proportional * keep_count), int(kept_per_voxel(0.0).sum()))
        lo, hi = 0.0, 1.0
        for _ in range(40):
            middle = 0.5 * (lo + hi)
            if kept_per_voxel(middle).sum() <= budget:
                lo = middle
            else:
                hi = middle
        per_voxel = kept_per_voxel(lo)
        if per_voxel.sum() > keep_count:
            per_voxel = _best_voxels_only(voxel_of, self.scores, self.rank, counts, keep_count)
        selected = self.rank < per_voxel[voxel_of]
        selected = _fill_with_best(selected, self.best_first, keep_count)
        keep = np.flatnonzero(selected)
        kept_counts = np.bincount(voxel_of[keep], minlength=len(counts))
        return VoxelSample(keep, voxel_of, counts, kept_counts, self.voxel_size, lo)

    def prune_ratio(self, keep: np.ndarray) -> np.ndarray:
        """For each kept Gaussian, n_V / k_V of its voxel (see local_prune_ratio)."""
        kept_counts = np.bincount(self.voxel_of[keep], minlength=len(self.counts))
        voxels = self.voxel_of[keep]
        return self.counts[voxels] / np.maximum(kept_counts[voxels], 1)


def voxel_sample(means: np.ndarray, scores: np.ndarray, keep_count: int, voxel_size: float | None = None,
                 coverage: float = 0.25, min_points: int = 2, proportional: float = 1.0) -> VoxelSample:
    """Indices of exactly `keep_count` Gaussians chosen per voxel by score.

    voxel_size: by default chosen so that about `coverage * keep_count` voxels are occupied, so the
    "at least one per voxel" rule spends a `coverage` share of the budget on spatial coverage.
    min_points: voxels with at least this many Gaussians keep at least one.
    proportional: share of the budget given out per voxel as floor(n_V * rho) (the paper's rule, 1.0);
    what it leaves goes to the best remaining scores anywhere.
    """
    n = len(means)
    if not 0 < keep_count <= n:
        raise ValueError(f"keep_count must be in 1..{n}, got {keep_count}")
    if voxel_size is None:
        voxel_size = voxel_size_for(means, max(1, int(coverage * keep_count)))
    return VoxelGrid(means, scores, voxel_size).sample(keep_count, min_points, proportional)


def _rank_within_voxel(voxel_of: np.ndarray, best_first: np.ndarray) -> np.ndarray:
    """0 for the best-scoring Gaussian of each voxel, 1 for the next, ... (`best_first`: indices by score)."""
    order = best_first[np.argsort(voxel_of[best_first], kind="stable")]  # by voxel, then by score
    sorted_voxels = voxel_of[order]
    starts = np.flatnonzero(np.r_[True, sorted_voxels[1:] != sorted_voxels[:-1]])
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order)) - run_start
    return rank


def _best_voxels_only(voxel_of, scores, rank, counts, keep_count) -> np.ndarray:
    """When even one per voxel is too many: one Gaussian in each of the voxels with the best top score."""
    best_in_voxel = np.full(len(counts), -np.inf)
    leaders = rank == 0
    best_in_voxel[voxel_of[leaders]] = scores[leaders]
    chosen = np.argsort(-best_in_voxel, kind="stable")[:keep_count]
    per_voxel = np.zeros(len(counts), np.int64)
    per_voxel[chosen] = 1
    return per_voxel


def _fill_with_best(selected: np.ndarray, best_first: np.ndarray, keep_count: int) -> np.ndarray:
    """Select the best-scoring unselected Gaussians (`best_first`: all indices by score, stable) up to the count."""
    missing = keep_count - int(selected.sum())
    if missing > 0:
        candidates = best_first[~selected[best_first]]
        selected = selected.copy()
        selected[candidates[:missing]] = True
    return selected


def local_prune_ratio(means: np.ndarray, keep: np.ndarray, voxel_size: float) -> np.ndarray:
    """For each kept Gaussian, n_V / k_V of its voxel: how many Gaussians each survivor there stands for."""
    voxel_of, counts = voxel_keys(means, voxel_size)
    kept_counts = np.bincount(voxel_of[keep], minlength=len(counts))
    return counts[voxel_of[keep]] / np.maximum(kept_counts[voxel_of[keep]], 1)
