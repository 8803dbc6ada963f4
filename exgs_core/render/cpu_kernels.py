"""Front-to-back alpha compositing on the CPU, compiled with numba.

The loops follow gsplat's rasterize_to_pixels forward and backward CUDA kernels one for one: per tile, per
pixel (centre at +0.5), the tile's Gaussians in depth order; alpha = min(0.999, opacity * exp(-sigma)),
skipped when sigma < 0 or alpha < 1/255; a pixel stops before the Gaussian that would bring its
transmittance to 1e-4 or below. Plain Python loops compiled by numba are several times faster here than
any vectorised torch formulation, which must materialise every (pixel, Gaussian) pair.

Forward and significance passes go Gaussian-major within a tile (each Gaussian visits only the pixels of
its footprint; per-pixel state says where a pixel stopped), which gives every pixel the same sequence as
the pixel-major loop. (Clipping each row to the ellipse's chord was tried: slower than the box.) Tiles run
in parallel. The backward pass scatters into per-Gaussian gradients, so each worker owns one gradient
buffer and the buffers are summed at the end (no atomics, deterministic).
"""

from __future__ import annotations

import math
import os

import numba
import numpy as np

from exgs_core.numba_cache import configure_numba_cache

configure_numba_cache(__file__)

# numba's default OpenMP threading layer leaves its threads spin-waiting after a parallel kernel, which slows
# every later torch op 10-100x on a 2-core machine; workqueue does not. It must be set before the first launch.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

MAX_ALPHA = 0.999
MIN_ALPHA = 1.0 / 255.0
MIN_TRANSMITTANCE = 1e-4


@numba.njit(cache=True, inline="always")
def _alpha(conic_a, conic_b, conic_c, dx, dy, opacity, sigma_cut):
    """Alpha of one Gaussian at one pixel, or -1 when gsplat would skip it."""
    sigma = 0.5 * (conic_a * dx * dx + conic_c * dy * dy) + conic_b * dx * dy
    if sigma < 0.0 or sigma > sigma_cut:  # sigma_cut: beyond it alpha < 1/255, so exp() is not needed
        return -1.0
    alpha = min(MAX_ALPHA, opacity * math.exp(-sigma))
    if alpha < MIN_ALPHA:
        return -1.0
    return alpha


@numba.njit(cache=True, inline="always")
def _pixel_box(conic_a, conic_b, conic_c, mean_x, mean_y, sigma_cut, x0, y0, x1, y1):
    """Pixels (x_lo, x_hi, y_lo, y_hi; inclusive) of the tile [x0, x1) x [y0, y1) where alpha can reach 1/255.

    Outside the ellipse sigma <= sigma_cut alpha is below 1/255, so skipping those pixels changes nothing;
    a small margin absorbs rounding (sigma is evaluated in float64 from the same values). An empty box has
    x_lo > x_hi; a degenerate conic gets the whole tile.
    """
    if sigma_cut < 0.0:
        return 1, 0, 1, 0
    a, b, c = np.float64(conic_a), np.float64(conic_b), np.float64(conic_c)  # float32 cancels for thin ellipses
    det = a * c - b * b
    if not det > 0.0:
        return x0, x1 - 1, y0, y1 - 1
    reach_x = math.sqrt(2.0 * sigma_cut * c / det) * (1.0 + 1e-6) + 1e-3
    reach_y = math.sqrt(2.0 * sigma_cut * a / det) * (1.0 + 1e-6) + 1e-3
    if not (reach_x < 1e7 and reach_y < 1e7 and abs(mean_x) < 1e7 and abs(mean_y) < 1e7):
        return x0, x1 - 1, y0, y1 - 1
    x_lo = max(x0, int(math.floor(mean_x - reach_x - 0.5)))
    x_hi = min(x1 - 1, int(math.ceil(mean_x + reach_x - 0.5)))
    y_lo = max(y0, int(math.floor(mean_y - reach_y - 0.5)))
    y_hi = min(y1 - 1, int(math.ceil(mean_y + reach_y - 0.5)))
    return x_lo, x_hi, y_lo, y_hi


@numba.njit(parallel=True, cache=True)
def composite_forward(means2d, conics, opacities, colors, flatten_ids, tile_offsets, width, height, tile_size,
                      tiles_x):
    """Accumulated colours (H, W, C) without background, final transmittance (H, W), last index used (H, W).

    Gaussian-major within a tile: each Gaussian (front to back) updates only the pixels of its footprint,
    and a pixel that would saturate is marked done, so every pixel sees exactly the sequence the pixel-major
    loop of gsplat gives it, at a fraction of the cost when most Gaussians cover a few pixels.
    """
    channels = colors.shape[1]
    out = np.zeros((height, width, channels), np.float32)
    final_t = np.ones((height, width), np.float32)
    last = np.full((height, width), -1, np.int64)
    sigma_cut = np.log(np.maximum(opacities, 1e-30) / MIN_ALPHA) + 1e-4
    n_tiles = len(tile_offsets) - 1
    for tile in numba.prange(n_tiles):
        start, end = tile_offsets[tile], tile_offsets[tile + 1]
        if start == end:
            continue
        x0, y0 = (tile % tiles_x) * tile_size, (tile // tiles_x) * tile_size
        x1, y1 = min(x0 + tile_size, width), min(y0 + tile_size, height)
        t_pixel = np.ones((y1 - y0, x1 - x0), np.float64)
        done = np.zeros((y1 - y0, x1 - x0), np.bool_)
        remaining = (y1 - y0) * (x1 - x0)
        for i in range(start, end):
            g = flatten_ids[i]
            a, b, c = conics[g, 0], conics[g, 1], conics[g, 2]
            x_lo, x_hi, y_lo, y_hi = _pixel_box(a, b, c, means2d[g, 0], means2d[g, 1], sigma_cut[g], x0, y0, x1, y1)
            for py in range(y_lo, y_hi + 1):
                for px in range(x_lo, x_hi + 1):
                    if done[py - y0, px - x0]:
                        continue
                    alpha = _alpha(a, b, c, means2d[g, 0] - (px + 0.5), means2d[g, 1] - (py + 0.5), opacities[g],
                                   sigma_cut[g])
                    if alpha < 0.0:
                        continue
                    t = t_pixel[py - y0, px - x0]
                    next_t = t * (1.0 - alpha)
                    if next_t <= MIN_TRANSMITTANCE:
                        done[py - y0, px - x0] = True
                        remaining -= 1
                        continue
                    weight = alpha * t
                    for ch in range(channels):
                        out[py, px, ch] += colors[g, ch] * weight
                    last[py, px] = i
                    t_pixel[py - y0, px - x0] = next_t
            if remaining == 0:
                break
        for py in range(y0, y1):
            for px in range(x0, x1):
                final_t[py, px] = t_pixel[py - y0, px - x0]
    return out, final_t, last


@numba.njit(parallel=True, cache=True)
def composite_backward(means2d, conics, opacities, colors, flatten_ids, tile_offsets, width, height, tile_size,
                       tiles_x, final_t, last, grad_out, grad_final_t, n_workers):
    """Gradients of the loss with respect to colours (N, C) and opacities (N,), given d/d(out) and d/d(final_t)."""
    n, channels = colors.shape
    grad_colors = np.zeros((n_workers, n, channels), np.float32)
    grad_opacities = np.zeros((n_workers, n), np.float32)
    sigma_cut = np.log(np.maximum(opacities, 1e-30) / MIN_ALPHA) + 1e-4
    n_tiles = len(tile_offsets) - 1
    behind = np.zeros((n_workers, channels), np.float64)
    for worker in numba.prange(n_workers):
        for tile in range(worker, n_tiles, n_workers):
            start = tile_offsets[tile]
            x0, y0 = (tile % tiles_x) * tile_size, (tile // tiles_x) * tile_size
            for py in range(y0, min(y0 + tile_size, height)):
                for px in range(x0, min(x0 + tile_size, width)):
                    t_final = final_t[py, px]
                    t = t_final
                    behind[worker, :] = 0.0
                    for i in range(last[py, px], start - 1, -1):
                        g = flatten_ids[i]
                        alpha = _alpha(conics[g, 0], conics[g, 1], conics[g, 2], means2d[g, 0] - (px + 0.5),
                                       means2d[g, 1] - (py + 0.5), opacities[g], sigma_cut[g])
                        if alpha < 0.0:
                            continue
                        inv_one_minus = 1.0 / (1.0 - alpha)
                        t = t * inv_one_minus  # transmittance in front of Gaussian g
                        weight = alpha * t
                        grad_alpha = -t_final * inv_one_minus * grad_final_t[py, px]
                        for c in range(channels):
                            grad_colors[worker, g, c] += weight * grad_out[py, px, c]
                            grad_alpha += (colors[g, c] * t - behind[worker, c] * inv_one_minus) * grad_out[py, px, c]
                            behind[worker, c] += colors[g, c] * weight
                        if alpha < MAX_ALPHA:  # a clamped alpha does not depend on the opacity
                            grad_opacities[worker, g] += grad_alpha * alpha / opacities[g]
    return grad_colors.sum(axis=0), grad_opacities.sum(axis=0)


@numba.njit(parallel=True, cache=True)
def composite_significance(means2d, conics, opacities, flatten_ids, tile_offsets, width, height, tile_size,
                           tiles_x, n_workers):
    """Per-Gaussian sums over the pixels it contributes to: (alpha * T, opacity * T, pixel count).

    Same traversal as composite_forward (a pixel stops where the forward pass stops). alpha * T is the
    Gaussian's blend weight; opacity * T is the ExGS / LightGaussian significance term sigma_j * T_j.
    """
    n = len(opacities)
    scores = np.zeros((n_workers, n, 3), np.float64)
    sigma_cut = np.log(np.maximum(opacities, 1e-30) / MIN_ALPHA) + 1e-4
    n_tiles = len(tile_offsets) - 1
    for worker in numba.prange(n_workers):
        t_pixel = np.empty((tile_size, tile_size), np.float64)
        done = np.empty((tile_size, tile_size), np.bool_)
        for tile in range(worker, n_tiles, n_workers):
            start, end = tile_offsets[tile], tile_offsets[tile + 1]
            x0, y0 = (tile % tiles_x) * tile_size, (tile // tiles_x) * tile_size
            x1, y1 = min(x0 + tile_size, width), min(y0 + tile_size, height)
            t_pixel[:, :] = 1.0
            done[:, :] = False
            remaining = (y1 - y0) * (x1 - x0)
            for i in range(start, end):
                g = flatten_ids[i]
                a, b, c = conics[g, 0], conics[g, 1], conics[g, 2]
                x_lo, x_hi, y_lo, y_hi = _pixel_box(a, b, c, means2d[g, 0], means2d[g, 1], sigma_cut[g], x0, y0, x1,
                                                    y1)
                for py in range(y_lo, y_hi + 1):
                    for px in range(x_lo, x_hi + 1):
                        if done[py - y0, px - x0]:
                            continue
                        alpha = _alpha(a, b, c, means2d[g, 0] - (px + 0.5), means2d[g, 1] - (py + 0.5), opacities[g],
                                       sigma_cut[g])
                        if alpha < 0.0:
                            continue
                        t = t_pixel[py - y0, px - x0]
                        next_t = t * (1.0 - alpha)
                        if next_t <= MIN_TRANSMITTANCE:
                            done[py - y0, px - x0] = True
                            remaining -= 1
                            continue
                        scores[worker, g, 0] += alpha * t
                        scores[worker, g, 1] += opacities[g] * t
                        scores[worker, g, 2] += 1.0
                        t_pixel[py - y0, px - x0] = next_t
                if remaining == 0:
                    break
    total = scores[0]  # the workers' sums added in place, in worker order (as scores.sum(axis=0) adds them)
    for worker in range(1, n_workers):
        total += scores[worker]
    return total


@numba.njit(parallel=True, cache=True, error_model="numpy")
def project_gaussians(means, covars, viewmat, K, width, height, eps2d, near_plane, far_plane, opacities,
                      alpha_threshold):
    """EWA projection of every Gaussian (see projection.project): means2d, conics, depths, radii.

    One pass per Gaussian in float64 (results stored as float32), instead of a chain of (N, 3, 3) tensors.
    `opacities` of length 0 means the plain 3.33-sigma box.
    """
    n = len(means)
    means2d = np.empty((n, 2), np.float32)
    conics = np.empty((n, 3), np.float32)
    depths = np.empty(n, np.float32)
    radii = np.zeros((n, 2), np.int32)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * 0.5 * width / fx, cx / fx + 0.3 * 0.5 * width / fx
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * 0.5 * height / fy, cy / fy + 0.3 * 0.5 * height / fy
    r = viewmat
    for g in numba.prange(n):
        x, y, z = means[g, 0], means[g, 1], means[g, 2]
        mx = r[0, 0] * x + r[0, 1] * y + r[0, 2] * z + r[0, 3]
        my = r[1, 0] * x + r[1, 1] * y + r[1, 2] * z + r[1, 3]
        tz = r[2, 0] * x + r[2, 1] * y + r[2, 2] * z + r[2, 3]
        tx = tz * min(max(mx / tz, -lim_x_neg), lim_x_pos)
        ty = tz * min(max(my / tz, -lim_y_neg), lim_y_pos)
        # rows a, b of J @ R (J: the perspective Jacobian at the clamped centre); cov2d = (JR) covar (JR)^T
        ax, bx = fx / tz, -fx * tx / (tz * tz)
        ay, by = fy / tz, -fy * ty / (tz * tz)
        a0, a1, a2 = ax * r[0, 0] + bx * r[2, 0], ax * r[0, 1] + bx * r[2, 1], ax * r[0, 2] + bx * r[2, 2]
        b0, b1, b2 = ay * r[1, 0] + by * r[2, 0], ay * r[1, 1] + by * r[2, 1], ay * r[1, 2] + by * r[2, 2]
        s00, s01, s02 = covars[g, 0, 0], covars[g, 0, 1], covars[g, 0, 2]
        s11, s12, s22 = covars[g, 1, 1], covars[g, 1, 2], covars[g, 2, 2]
        sa0 = s00 * a0 + s01 * a1 + s02 * a2
        sa1 = s01 * a0 + s11 * a1 + s12 * a2
        sa2 = s02 * a0 + s12 * a1 + s22 * a2
        c00 = a0 * sa0 + a1 * sa1 + a2 * sa2
        c01 = b0 * sa0 + b1 * sa1 + b2 * sa2
        c11 = b0 * (s00 * b0 + s01 * b1 + s02 * b2) + b1 * (s01 * b0 + s11 * b1 + s12 * b2) + b2 * (
            s02 * b0 + s12 * b1 + s22 * b2)
        c00 += eps2d
        c11 += eps2d
        det = max(c00 * c11 - c01 * c01, 1e-10)
        u = (fx * mx + K[0, 1] * my + cx * tz) / tz
        v = (K[1, 0] * mx + fy * my + cy * tz) / tz
        means2d[g, 0], means2d[g, 1] = u, v
        conics[g, 0], conics[g, 1], conics[g, 2] = c11 / det, -c01 / det, c00 / det
        depths[g] = tz
        extend = 3.33
        if len(opacities) > 0:
            opacity = opacities[g]
            extend = 0.0 if opacity < alpha_threshold else min(extend, math.sqrt(2.0 * math.log(
                max(opacity / alpha_threshold, 1.0))))
        rx = math.ceil(extend * math.sqrt(c00))
        ry = math.ceil(extend * math.sqrt(c11))
        visible = (det > 0.0 and near_plane < tz < far_plane and u + rx > 0 and u - rx < width and v + ry > 0
                   and v - ry < height and rx < 2.0**31 and ry < 2.0**31)
        if visible:
            radii[g, 0], radii[g, 1] = int(rx), int(ry)
    return means2d, conics, depths, radii


@numba.njit(cache=True)
def bin_tiles(lo, hi, order, depth_bits, tiles_x, n_tiles):
    """Tile intersections in gsplat's order (tile, then depth, then Gaussian index) by counting sort.

    lo, hi: (N, 2) tile box per Gaussian ([lo, hi) per axis); order: Gaussians by depth (stable).
    Returns isect_ids (tile << 32 | depth bits), flatten_ids, tile_offsets.
    """
    counts = np.zeros(n_tiles + 1, np.int64)
    for g in range(len(lo)):
        for ty in range(lo[g, 1], hi[g, 1]):
            for tx in range(lo[g, 0], hi[g, 0]):
                counts[ty * tiles_x + tx + 1] += 1
    offsets = np.cumsum(counts)
    fill = offsets[:-1].copy()
    isect_ids = np.empty(offsets[-1], np.int64)
    flatten_ids = np.empty(offsets[-1], np.int64)
    for g in order:
        for ty in range(lo[g, 1], hi[g, 1]):
            for tx in range(lo[g, 0], hi[g, 0]):
                tile = np.int64(ty) * tiles_x + tx
                isect_ids[fill[tile]] = (tile << 32) | depth_bits[g]
                flatten_ids[fill[tile]] = g
                fill[tile] += 1
    return isect_ids, flatten_ids, offsets


@numba.njit(cache=True)
def stable_argsort_uint32(keys):
    """Indices that sort `keys` (int64 holding values in [0, 2^32)), equal keys in index order.

    LSD radix sort, four 8-bit passes: several times faster than a comparison sort on millions of depths,
    and single-threaded (torch's parallel sort stalls on a busy machine).
    """
    n = len(keys)
    order = np.arange(n)
    scratch = np.empty(n, np.int64)
    for shift in range(0, 32, 8):
        counts = np.zeros(257, np.int64)
        for i in range(n):
            counts[((keys[i] >> shift) & 0xFF) + 1] += 1
        for b in range(256):
            counts[b + 1] += counts[b]
        for i in range(n):
            g = order[i]
            digit = (keys[g] >> shift) & 0xFF
            scratch[counts[digit]] = g
            counts[digit] += 1
        order, scratch = scratch, order
    return order
