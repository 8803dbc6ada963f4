"""Merging what is pruned into what is kept (moment matching), instead of dropping it.

UGC's significance and voxel sampling still decide which K Gaussians carry the budget. Every pruned Gaussian
that a scoring view saw is then merged into one kept neighbour (unseen ones are dropped: they have no visible
colour to give):

- Partner: the kept neighbour, among the 8 nearest in the 27 cells around it on a grid over the kept
  Gaussians (or the next rings of cells when those hold none), whose merge changes the emitted field least.
  Each Gaussian emits alpha * (r, g, b, 1) * G(x) with G the unnormalised kernel exp(-x'S^-1x/2) (the fourth
  channel is coverage); the L2 error of replacing a pair by its merge has a closed form in Gaussian-Gaussian
  products
  <G_a, G_b> = (2pi)^1.5 sqrt|S_a| sqrt|S_b| / sqrt|S_a+S_b| exp(-d'(S_a+S_b)^-1 d/2).
  Merging every seen Gaussian measured better than dropping those whose merge costs more than their own
  field energy (docs/method.md).
- Moments: a kept Gaussian and everything merged into it become one Gaussian with the group's opacity mass
  (alpha x ellipsoid surface area, the view-averaged footprint) as weight: mass-weighted mean, covariance by
  the law of total variance (sum of w (S_k + d_k d_k') / W), colour and every SH coefficient mass-weighted,
  opacity W / area(merged) (mass conserved), capped just below 1. A kept Gaussian that absorbs nothing is
  unchanged bit for bit.

`merge_groups_reference` is the plain per-group loop the tests compare the vectorised `merge_groups` against.
"""

from __future__ import annotations

import numba
import numpy as np

from exgs_core.numba_cache import configure_numba_cache
from exgs_core.scene import CHUNK, GaussianScene, quat_to_rotation, rotation_to_quat
from exgs_core.sh import sh0_to_rgb
from exgs_core.ugc.sampling import voxel_size_for

configure_numba_cache(__file__)

OPACITY_CAP = 0.999
ELLIPSOID_P = 1.6075  # Knud Thomsen's surface-area approximation (within about 1%)
EPS_COV = 1e-12
_CELL_OFFSET = 1 << 20
_MAX_CANDIDATES = 64  # kept neighbours looked at per pruned Gaussian
_NEAREST = 8  # of which the nearest are costed
_REACH = 3  # cells searched outwards at most when the nearer ones hold no kept Gaussian


def covariances(scene: GaussianScene) -> np.ndarray:
    """(N, 3, 3) float64 covariances R diag(s^2) R'."""
    return covariances_of(scene.quats, scene.log_scales)


def covariances_of(quats: np.ndarray, log_scales: np.ndarray) -> np.ndarray:
    """covariances() of Gaussians given by their quaternions and log-scales (row by row, the same values)."""
    rotation = quat_to_rotation(quats.astype(np.float64))
    variance = np.exp(2.0 * log_scales.astype(np.float64))
    return np.einsum("nij,nj,nkj->nik", rotation, variance, rotation)


def _cov6(scene: GaussianScene) -> np.ndarray:
    """(N, 6) float64 upper triangles (xx, xy, xz, yy, yz, zz) of the covariances, a chunk at a time."""
    out = np.empty((len(scene), 6))
    for start in range(0, len(scene), CHUNK):
        part = slice(start, start + CHUNK)
        out[part] = covariances_of(scene.quats[part], scene.log_scales[part])[:, [0, 0, 0, 1, 1, 2], [0, 1, 2, 1, 2, 2]]
    return out


def ellipsoid_area(scales: np.ndarray) -> np.ndarray:
    """Surface area of the ellipsoids with semi-axes `scales` (..., 3)."""
    a, b, c = scales[..., 0], scales[..., 1], scales[..., 2]
    p = ELLIPSOID_P
    return 4.0 * np.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3.0) ** (1.0 / p)


def masses(scene: GaussianScene) -> np.ndarray:
    """Opacity mass alpha x surface area of each Gaussian (float64): the merge weight."""
    scales = np.exp(scene.log_scales.astype(np.float64))
    return scene.opacities().astype(np.float64) * ellipsoid_area(scales) + 1e-300


# --- which kept Gaussian each pruned one joins ----------------------------------------------------------


class Merger:
    """Merges the pruned Gaussians of one scene into any kept set; per-Gaussian quantities are computed once.

    A pruned Gaussian merges into the kept neighbour whose merge costs least. It is dropped when no kept
    Gaussian is within 3 cells of it or, with `scores`, when no scoring view saw it (score 0), or when even the
    cheapest merge costs more than `drop_factor` x its own field energy (what dropping it costs; off by
    default: docs/method.md has the measurement).
    """

    def __init__(self, scene: GaussianScene, scores: np.ndarray | None = None, drop_factor: float = np.inf):
        self.scene, self.drop_factor = scene, float(drop_factor)
        self.seen = np.ones(len(scene), bool) if scores is None else np.asarray(scores) > 0
        # float32 means (the kernels widen each value to float64 as they read it: the same numbers as a float64
        # copy) and the covariances' 6 distinct values only: 96 bytes per Gaussian held, not 192
        self.means = scene.means
        self.cov6 = _cov6(scene)
        self.alpha = scene.opacities().astype(np.float64)
        colour = np.clip(sh0_to_rgb(scene.sh[:, 0, :].astype(np.float64)), 0, 1)
        self.amplitude = np.concatenate([colour, np.ones((len(scene), 1))], axis=1)
        self.mass = masses(scene)

    def owners(self, keep: np.ndarray) -> np.ndarray:
        """(N,) position in `keep` of the kept Gaussian each Gaussian merges into, or -1 where it is dropped."""
        n = len(self.scene)
        keep = np.asarray(keep, np.int64)
        owner = np.full(n, -1, np.int64)
        owner[keep] = np.arange(len(keep))
        if len(keep) == n or len(keep) == 0:
            return owner
        pruned = self.seen.copy()
        pruned[keep] = False
        queries = np.flatnonzero(pruned)
        kept_means = self.means[keep].astype(np.float64)
        cell = voxel_size_for(kept_means, max(1, len(keep) // 2))
        origin = np.percentile(kept_means, 0.5, axis=0)
        kept_keys = _keys(kept_means, origin, cell)
        order = np.argsort(kept_keys, kind="stable")
        best = _assign_kernel(self.means, self.cov6, self.alpha, self.amplitude, self.mass, queries, keep[order],
                              kept_keys[order], origin, cell, self.drop_factor)
        owner[queries] = np.where(best >= 0, order[np.maximum(best, 0)], -1)
        return owner

    def merge(self, keep: np.ndarray) -> GaussianScene:
        """The kept Gaussians (in `keep` order) with what was pruned merged into them."""
        return merge_groups(self.scene, self.owners(keep), len(keep), None, self.mass)


def assign_to_kept(scene: GaussianScene, keep: np.ndarray, scores: np.ndarray | None = None,
                   drop_factor: float = np.inf) -> np.ndarray:
    """Merger(scene, scores, drop_factor).owners(keep)."""
    return Merger(scene, scores, drop_factor).owners(keep)


def _keys(means: np.ndarray, origin: np.ndarray, cell: float) -> np.ndarray:
    cells = _cells(means, origin, cell)
    return (cells[:, 0] << 42) | (cells[:, 1] << 21) | cells[:, 2]


def _cells(means: np.ndarray, origin: np.ndarray, cell: float) -> np.ndarray:
    raw = np.floor((means - origin) / cell) + _CELL_OFFSET
    return np.clip(raw, 0, 2 * _CELL_OFFSET - 1).astype(np.int64)


@numba.njit(cache=True, parallel=True)
def _assign_kernel(means, cov6, alpha, amplitude, mass, queries, kept_sorted, keys_sorted, origin, cell, drop_factor):
    """For each query, the index into kept_sorted of its cheapest merge partner among the nearest (-1: none)."""
    best = np.full(len(queries), -1, np.int64)
    top = 2 * _CELL_OFFSET - 1
    for q in numba.prange(len(queries)):
        i = queries[q]
        mx, my, mz = np.float64(means[i, 0]), np.float64(means[i, 1]), np.float64(means[i, 2])
        bx = np.int64(min(max(np.floor((mx - origin[0]) / cell) + _CELL_OFFSET, 0.0), top))
        by = np.int64(min(max(np.floor((my - origin[1]) / cell) + _CELL_OFFSET, 0.0), top))
        bz = np.int64(min(max(np.floor((mz - origin[2]) / cell) + _CELL_OFFSET, 0.0), top))
        near = np.full(_NEAREST, -1, np.int64)  # the nearest kept candidates by distance, nearest first
        near_d2 = np.full(_NEAREST, np.inf)
        checked = 0
        for reach in range(1, _REACH + 1):  # the 27 cells around; farther only when they hold no kept one
            if near[0] >= 0:
                break
            for dx in range(-reach, reach + 1):
                for dy in range(-reach, reach + 1):
                    for dz in range(-reach, reach + 1):
                        if max(abs(dx), abs(dy), abs(dz)) < reach:
                            continue  # looked at already
                        cx, cy, cz = bx + dx, by + dy, bz + dz
                        if cx < 0 or cy < 0 or cz < 0 or cx > top or cy > top or cz > top:
                            continue
                        key = (cx << 42) | (cy << 21) | cz
                        k = np.searchsorted(keys_sorted, key)
                        while k < len(keys_sorted) and keys_sorted[k] == key and checked < _MAX_CANDIDATES:
                            j = kept_sorted[k]
                            d2 = ((mx - np.float64(means[j, 0])) ** 2 + (my - np.float64(means[j, 1])) ** 2
                                  + (mz - np.float64(means[j, 2])) ** 2)
                            checked += 1
                            slot = _NEAREST
                            while slot > 0 and near_d2[slot - 1] > d2:
                                if slot < _NEAREST:
                                    near_d2[slot], near[slot] = near_d2[slot - 1], near[slot - 1]
                                slot -= 1
                            if slot < _NEAREST:
                                near_d2[slot], near[slot] = d2, k
                            k += 1
        best_cost = np.inf
        if drop_factor < np.inf:
            det = _det6(cov6[i, 0], cov6[i, 1], cov6[i, 2], cov6[i, 3], cov6[i, 4], cov6[i, 5])
            norm2 = amplitude[i, 0] ** 2 + amplitude[i, 1] ** 2 + amplitude[i, 2] ** 2 + amplitude[i, 3] ** 2
            best_cost = drop_factor * alpha[i] ** 2 * norm2 * np.pi ** 1.5 * np.sqrt(max(det, 0.0))
        for slot in range(_NEAREST):
            k = near[slot]
            if k < 0:
                break
            cost = _merge_cost(i, kept_sorted[k], means, cov6, alpha, amplitude, mass)
            if cost < best_cost:
                best_cost, best[q] = cost, k
    return best


@numba.njit(cache=True)
def _det6(xx, xy, xz, yy, yz, zz):
    return xx * (yy * zz - yz * yz) - xy * (xy * zz - yz * xz) + xz * (xy * yz - yy * xz)


@numba.njit(cache=True)
def _overlap(sqrt_det_a, sqrt_det_b, xx, xy, xz, yy, yz, zz, dx, dy, dz):
    """<G_a, G_b> with (xx..zz) = S_a + S_b and d = mu_a - mu_b."""
    c00 = yy * zz - yz * yz
    c01 = xz * yz - xy * zz
    c02 = xy * yz - xz * yy
    c11 = xx * zz - xz * xz
    c12 = xy * xz - xx * yz
    c22 = xx * yy - xy * xy
    det = max(xx * c00 + xy * c01 + xz * c02, 1e-300)
    quad = (c00 * dx * dx + c11 * dy * dy + c22 * dz * dz + 2.0 * (c01 * dx * dy + c02 * dx * dz + c12 * dy * dz)) / det
    return (2.0 * np.pi) ** 1.5 * sqrt_det_a * sqrt_det_b / np.sqrt(det) * np.exp(-0.5 * quad)


@numba.njit(cache=True)
def _eigenvalues6(xx, xy, xz, yy, yz, zz):
    """Eigenvalues of a symmetric 3x3 matrix (trigonometric closed form)."""
    off = xy * xy + xz * xz + yz * yz
    if off <= 1e-300:
        return xx, yy, zz
    q = (xx + yy + zz) / 3.0
    p = np.sqrt(((xx - q) ** 2 + (yy - q) ** 2 + (zz - q) ** 2 + 2.0 * off) / 6.0)
    b00, b11, b22 = (xx - q) / p, (yy - q) / p, (zz - q) / p
    b01, b02, b12 = xy / p, xz / p, yz / p
    r = 0.5 * _det6(b00, b01, b02, b11, b12, b22)
    r = min(max(r, -1.0), 1.0)
    phi = np.arccos(r) / 3.0
    e0 = q + 2.0 * p * np.cos(phi)
    e2 = q + 2.0 * p * np.cos(phi + 2.0 * np.pi / 3.0)
    return e0, 3.0 * q - e0 - e2, e2


@numba.njit(cache=True)
def _merge_cost(i, j, means, cov6, alpha, amplitude, mass):
    """L2 field error of replacing Gaussians i and j by their moment-matched merge (scalars only: no allocation)."""
    w = mass[i] + mass[j]
    pi = mass[i] / w
    pj = 1.0 - pi
    dx = np.float64(means[i, 0]) - np.float64(means[j, 0])
    dy = np.float64(means[i, 1]) - np.float64(means[j, 1])
    dz = np.float64(means[i, 2]) - np.float64(means[j, 2])
    dix, diy, diz = pj * dx, pj * dy, pj * dz  # mu_i - mu_m
    djx, djy, djz = -pi * dx, -pi * dy, -pi * dz  # mu_j - mu_m
    ci, cj = cov6[i], cov6[j]
    mxx = pi * (dix * dix + ci[0]) + pj * (djx * djx + cj[0]) + EPS_COV
    mxy = pi * (dix * diy + ci[1]) + pj * (djx * djy + cj[1])
    mxz = pi * (dix * diz + ci[2]) + pj * (djx * djz + cj[2])
    myy = pi * (diy * diy + ci[3]) + pj * (djy * djy + cj[3]) + EPS_COV
    myz = pi * (diy * diz + ci[4]) + pj * (djy * djz + cj[4])
    mzz = pi * (diz * diz + ci[5]) + pj * (djz * djz + cj[5]) + EPS_COV
    det_m = max(_det6(mxx, mxy, mxz, myy, myz, mzz), 1e-300)
    e0, e1, e2 = _eigenvalues6(mxx, mxy, mxz, myy, myz, mzz)
    sa, sb, sc = np.sqrt(max(e0, 1e-300)), np.sqrt(max(e1, 1e-300)), np.sqrt(max(e2, 1e-300))
    p = ELLIPSOID_P
    area = 4.0 * np.pi * (((sa * sb) ** p + (sa * sc) ** p + (sb * sc) ** p) / 3.0) ** (1.0 / p)
    alpha_m = min(OPACITY_CAP, w / max(area, 1e-300))
    bii = 0.0
    bjj = 0.0
    bij = 0.0
    for c in range(4):
        bii += amplitude[i, c] * amplitude[i, c]
        bjj += amplitude[j, c] * amplitude[j, c]
        bij += amplitude[i, c] * amplitude[j, c]
    bim = pi * bii + pj * bij
    bjm = pi * bij + pj * bjj
    bmm = pi * pi * bii + 2.0 * pi * pj * bij + pj * pj * bjj
    sdi = np.sqrt(max(_det6(ci[0], ci[1], ci[2], ci[3], ci[4], ci[5]), 0.0))
    sdj = np.sqrt(max(_det6(cj[0], cj[1], cj[2], cj[3], cj[4], cj[5]), 0.0))
    sdm = np.sqrt(det_m)
    ai, aj = alpha[i], alpha[j]
    self_terms = np.pi ** 1.5 * (ai * ai * bii * sdi + aj * aj * bjj * sdj + alpha_m * alpha_m * bmm * sdm)
    cij = _overlap(sdi, sdj, ci[0] + cj[0], ci[1] + cj[1], ci[2] + cj[2], ci[3] + cj[3], ci[4] + cj[4],
                   ci[5] + cj[5], dx, dy, dz)
    cim = _overlap(sdi, sdm, ci[0] + mxx, ci[1] + mxy, ci[2] + mxz, ci[3] + myy, ci[4] + myz, ci[5] + mzz,
                   dix, diy, diz)
    cjm = _overlap(sdj, sdm, cj[0] + mxx, cj[1] + mxy, cj[2] + mxz, cj[3] + myy, cj[4] + myz, cj[5] + mzz,
                   djx, djy, djz)
    error = self_terms + 2.0 * ai * aj * bij * cij - 2.0 * ai * alpha_m * bim * cim - 2.0 * aj * alpha_m * bjm * cjm
    return max(error, 0.0)


# --- moment matching ---------------------------------------------------------------------------------


def merge_groups(scene: GaussianScene, owner: np.ndarray, count: int, cov: np.ndarray | None = None,
                 mass: np.ndarray | None = None) -> GaussianScene:
    """`count` Gaussians: group g is every Gaussian with owner == g (owner -1: dropped), moment-matched.

    Every group must hold at least one Gaussian; groups of one are returned unchanged. `cov` and `mass` are
    the scene's covariances() and masses() when the caller has them already.
    """
    owner = np.asarray(owner, np.int64)
    members = np.flatnonzero(owner >= 0)
    order = members[np.argsort(owner[members], kind="stable")]
    groups = owner[order]
    starts = np.searchsorted(groups, np.arange(count))
    sizes = np.diff(np.r_[starts, len(order)])
    if len(order) == 0 or np.any(sizes == 0):
        raise ValueError("every merge group needs at least one member")
    first = order[starts]
    out = scene.subset(first)
    merged = np.flatnonzero(sizes > 1)
    if len(merged) == 0:
        return out
    multi = np.isin(groups, merged)
    order, groups = order[multi], groups[multi]
    local = np.searchsorted(merged, groups)
    local_starts = np.searchsorted(local, np.arange(len(merged)))

    mass_all = masses(scene) if mass is None else mass
    bounds = np.r_[local_starts, len(order)]  # the members of merged group g are order[bounds[g]:bounds[g + 1]]
    g = 0
    while g < len(merged):  # blocks of whole groups, about CHUNK members each: the float64 temporaries stay small
        h = max(g + 1, int(np.searchsorted(bounds, bounds[g] + CHUNK, side="right")) - 1)
        span = slice(bounds[g], bounds[h])
        _merge_block(scene, out, merged[g:h], first[merged[g:h]], order[span], local[span] - g,
                     local_starts[g:h] - bounds[g], cov, mass_all)
        g = h
    return out


def _merge_block(scene: GaussianScene, out: GaussianScene, merged: np.ndarray, anchors: np.ndarray,
                 order: np.ndarray, local: np.ndarray, local_starts: np.ndarray, cov: np.ndarray | None,
                 mass: np.ndarray) -> None:
    """Moment-match the groups `merged` (their members `order`, member k in group local[k]) into `out`."""

    def group_sum(values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(values, local_starts, axis=0)

    weight = mass[order]
    total = group_sum(weight)
    p = weight / total[local]
    anchor = scene.means[anchors].astype(np.float64)
    offset = scene.means[order].astype(np.float64) - anchor[local]
    mean_offset = group_sum(p[:, None] * offset)
    delta = offset - mean_offset[local]
    member_cov = covariances_of(scene.quats[order], scene.log_scales[order]) if cov is None else cov[order]
    merged_cov = group_sum(p[:, None, None] * (member_cov + delta[:, :, None] * delta[:, None, :]))
    merged_cov += EPS_COV * np.eye(3)
    variance, vectors = np.linalg.eigh(merged_cov)
    vectors[np.linalg.det(vectors) < 0, :, 0] *= -1.0  # a proper rotation
    scales = np.sqrt(np.maximum(variance, 1e-300))
    opacity = np.minimum(total / ellipsoid_area(scales), OPACITY_CAP)
    sh = group_sum(p[:, None, None] * scene.sh[order].astype(np.float64))

    out.means[merged] = anchor + mean_offset
    out.quats[merged] = rotations_to_quats(vectors)
    out.log_scales[merged] = np.log(scales)
    out.opacity_logits[merged] = np.log(opacity / (1.0 - opacity))
    out.sh[merged] = sh


def rotations_to_quats(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternions (N, 4) w, x, y, z of rotation matrices (N, 3, 3) (vectorised Shepperd's method)."""
    r = np.asarray(rotation, np.float64)
    diag = np.stack([r[:, 0, 0] + r[:, 1, 1] + r[:, 2, 2], r[:, 0, 0], r[:, 1, 1], r[:, 2, 2]], axis=1)
    case = np.argmax(np.stack([diag[:, 0], diag[:, 1] - diag[:, 2] - diag[:, 3],
                               diag[:, 2] - diag[:, 1] - diag[:, 3], diag[:, 3] - diag[:, 1] - diag[:, 2]], 1), 1)
    q = np.empty((len(r), 4))
    a = 1.0 + diag[:, 0]
    t = np.where(case == 0, a, np.where(case == 1, 1 + 2 * diag[:, 1] - diag[:, 0],
                                        np.where(case == 2, 1 + 2 * diag[:, 2] - diag[:, 0],
                                                 1 + 2 * diag[:, 3] - diag[:, 0])))
    s = 0.5 / np.sqrt(np.maximum(t, 1e-300))
    w_ = r[:, 2, 1] - r[:, 1, 2]
    x_ = r[:, 0, 2] - r[:, 2, 0]
    y_ = r[:, 1, 0] - r[:, 0, 1]
    xy = r[:, 0, 1] + r[:, 1, 0]
    xz = r[:, 0, 2] + r[:, 2, 0]
    yz = r[:, 1, 2] + r[:, 2, 1]
    table = [
        (t, w_, x_, y_),  # case 0: w largest
        (w_, t, xy, xz),  # case 1: x largest
        (x_, xy, t, yz),  # case 2: y largest
        (y_, xz, yz, t),  # case 3: z largest
    ]
    for index, columns in enumerate(table):
        rows = case == index
        q[rows] = np.stack([c[rows] for c in columns], axis=1) * s[rows, None]
    q *= np.where(q[:, :1] < 0, -1.0, 1.0)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def merge_groups_reference(scene: GaussianScene, owner: np.ndarray, count: int) -> GaussianScene:
    """merge_groups as a plain loop over groups (the readable reference the tests compare against)."""
    means, quats, log_scales, logits, sh = [], [], [], [], []
    weight_all = masses(scene)
    cov_all = covariances(scene)
    for g in range(count):
        idx = np.flatnonzero(owner == g)
        if len(idx) == 1:
            i = idx[0]
            means.append(scene.means[i]), quats.append(scene.quats[i]), log_scales.append(scene.log_scales[i])
            logits.append(scene.opacity_logits[i]), sh.append(scene.sh[i])
            continue
        w = weight_all[idx]
        p = w / w.sum()
        mu = (p[:, None] * scene.means[idx].astype(np.float64)).sum(0)
        cov = np.zeros((3, 3))
        for k, i in enumerate(idx):
            d = scene.means[i].astype(np.float64) - mu
            cov += p[k] * (cov_all[i] + np.outer(d, d))
        cov += EPS_COV * np.eye(3)
        variance, vectors = np.linalg.eigh(cov)
        if np.linalg.det(vectors) < 0:
            vectors[:, 0] *= -1
        scales = np.sqrt(variance)
        opacity = min(w.sum() / ellipsoid_area(scales), OPACITY_CAP)
        means.append(mu), quats.append(rotation_to_quat(vectors)), log_scales.append(np.log(scales))
        logits.append(np.log(opacity / (1 - opacity)))
        sh.append((p[:, None, None] * scene.sh[idx].astype(np.float64)).sum(0))
    return GaussianScene(np.array(means), np.array(quats), np.array(log_scales), np.array(logits), np.array(sh),
                         dict(scene.metadata))


def merge_pruned(scene: GaussianScene, keep: np.ndarray, scores: np.ndarray | None = None) -> GaussianScene:
    """The kept Gaussians (in `keep` order) with what was pruned merged into them."""
    return Merger(scene, scores).merge(keep)
