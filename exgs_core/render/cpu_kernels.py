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


@numba.njit(cache=True)
def sigma_cuts(opacities):
    """(N,) float64: per Gaussian, the sigma beyond which opacity * exp(-sigma) < 1/255 (with a margin)."""
    return np.log(np.maximum(opacities, 1e-30) / MIN_ALPHA) + 1e-4


@numba.njit(cache=True, inline="always")
def _pixel_box(conic_a, conic_b, conic_c, mean_x, mean_y, sigma_cut, x0, y0, x1, y1):
    """Pixels (x_lo, x_hi, y_lo, y_hi; inclusive) of the tile [x0, x1) x [y0, y1) where alpha can reach 1/255.

    Outside the ellipse sigma <= sigma_cut alpha is below 1/255, so skipping those pixels changes nothing:
    the box holds the pixels whose centre (+0.5) is within the ellipse's reach, and a small margin on the
    reach absorbs rounding (sigma is evaluated in float64 from the same values; conics are at most 1 / eps2d,
    so its rounding errors are far below the margin). An empty box has x_lo > x_hi; a degenerate conic gets
    the whole tile.
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
    x_lo = max(x0, int(math.ceil(mean_x - reach_x - 0.5)))
    x_hi = min(x1 - 1, int(math.floor(mean_x + reach_x - 0.5)))
    y_lo = max(y0, int(math.ceil(mean_y - reach_y - 0.5)))
    y_hi = min(y1 - 1, int(math.floor(mean_y + reach_y - 0.5)))
    return x_lo, x_hi, y_lo, y_hi


@numba.njit(parallel=True, cache=True)
def composite_forward(means2d, conics, opacities, colors, flatten_ids, tile_offsets, width, height, tile_size,
                      tiles_x, n_workers):
    """Accumulated colours (H, W, C) without background, final transmittance (H, W), last index used (H, W).

    Gaussian-major within a tile: each Gaussian (front to back) updates only the pixels of its footprint,
    and a pixel that would saturate is marked done, so every pixel sees exactly the sequence the pixel-major
    loop of gsplat gives it, at a fraction of the cost when most Gaussians cover a few pixels.
    """
    channels = colors.shape[1]
    out = np.zeros((height, width, channels), np.float32)
    final_t = np.ones((height, width), np.float32)
    last = np.full((height, width), -1, np.int64)
    sigma_cut = sigma_cuts(opacities)
    n_tiles = len(tile_offsets) - 1
    # Worker w takes tiles w, w + n_workers, ...: prange's contiguous halves left one thread idle when the
    # object filled one half of a small image (each tile is computed alone, so the pixels are the same).
    for worker in numba.prange(n_workers):
        t_pixel = np.empty((tile_size, tile_size), np.float64)
        done = np.empty((tile_size, tile_size), np.bool_)
        for tile in range(worker, n_tiles, n_workers):
            start, end = tile_offsets[tile], tile_offsets[tile + 1]
            if start == end:
                continue
            x0, y0 = (tile % tiles_x) * tile_size, (tile // tiles_x) * tile_size
            x1, y1 = min(x0 + tile_size, width), min(y0 + tile_size, height)
            t_pixel[:, :] = 1.0
            done[:, :] = False
            remaining = (y1 - y0) * (x1 - x0)
            for i in range(start, end):
                g = flatten_ids[i]
                a, b, c = conics[g, 0], conics[g, 1], conics[g, 2]
                x_lo, x_hi, y_lo, y_hi = _pixel_box(a, b, c, means2d[g, 0], means2d[g, 1], sigma_cut[g], x0, y0,
                                                    x1, y1)
                for py in range(y_lo, y_hi + 1):
                    for px in range(x_lo, x_hi + 1):
                        if done[py - y0, px - x0]:
                            continue
                        alpha = _alpha(a, b, c, means2d[g, 0] - (px + 0.5), means2d[g, 1] - (py + 0.5),
                                       opacities[g], sigma_cut[g])
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
    sigma_cut = sigma_cuts(opacities)
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


@numba.njit(parallel=True, cache=True, error_model="numpy")
def composite_significance(means2d, conics, opacities, sigma_cut, flatten_ids, tile_offsets, width, height,
                           tile_size, tiles_x, by_alpha, scores):
    """(N,) float64 per Gaussian: the sum of alpha * T (`by_alpha`) or opacity * T over the pixels it reaches.

    Same traversal as composite_forward (a pixel stops where the forward pass stops). alpha * T is the
    Gaussian's blend weight; opacity * T is the ExGS / LightGaussian significance term sigma_j * T_j. Worker w
    takes tiles w, w + n_workers, ...; its sums are added in worker order, so the floats do not depend on timing.
    Gaussians without intersections (e.g. not in view) get 0. sigma_cut: sigma_cuts(opacities); scores:
    (n_workers, N) float64, overwritten; returns scores[0].
    """
    n_workers, n_tiles = len(scores), len(tile_offsets) - 1
    for worker in numba.prange(n_workers):
        scores[worker, :] = 0.0
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
                a, b, c, opacity, cut = conics[g, 0], conics[g, 1], conics[g, 2], opacities[g], sigma_cut[g]
                x_lo, x_hi, y_lo, y_hi = _pixel_box(a, b, c, means2d[g, 0], means2d[g, 1], cut, x0, y0, x1, y1)
                for py in range(y_lo, y_hi + 1):
                    for px in range(x_lo, x_hi + 1):
                        if done[py - y0, px - x0]:
                            continue
                        alpha = _alpha(a, b, c, means2d[g, 0] - (px + 0.5), means2d[g, 1] - (py + 0.5), opacity, cut)
                        if alpha < 0.0:
                            continue
                        t = t_pixel[py - y0, px - x0]
                        next_t = t * (1.0 - alpha)
                        if next_t <= MIN_TRANSMITTANCE:
                            done[py - y0, px - x0] = True
                            remaining -= 1
                            continue
                        scores[worker, g] += (alpha if by_alpha else opacity) * t
                        t_pixel[py - y0, px - x0] = next_t
                if remaining == 0:
                    break
    total = scores[0]  # the workers' sums added in place, in worker order (as scores.sum(axis=0) adds them)
    for worker in range(1, n_workers):
        total += scores[worker]
    return total


def project_gaussians(means, covars, viewmat, K, width, height, eps2d, near_plane, far_plane, opacities,
                      alpha_threshold):
    """EWA projection of every Gaussian (see projection.project): means2d, conics, depths, radii.

    One pass per Gaussian in float64 (results stored as float32), instead of a chain of (N, 3, 3) tensors.
    `opacities` of length 0 means the plain 3.33-sigma box. (Python, not compiled: a cached compiled caller of
    a parallel kernel crashes when numba loads it from its cache.)
    """
    n = len(means)
    means2d = np.empty((n, 2), np.float32)
    conics = np.empty((n, 3), np.float32)
    depths = np.empty(n, np.float32)
    radii = np.empty((n, 2), np.int32)
    project_gaussians_into(means, covars, viewmat, K, width, height, eps2d, near_plane, far_plane, opacities,
                           alpha_threshold, means2d, conics, depths, radii)
    return means2d, conics, depths, radii


@numba.njit(parallel=True, cache=True, error_model="numpy")
def project_gaussians_into(means, covars, viewmat, K, width, height, eps2d, near_plane, far_plane, opacities,
                           alpha_threshold, means2d, conics, depths, radii):
    """project_gaussians writing into given arrays (which views of many Gaussians reuse: fresh memory costs a
    page fault per 4 KiB when first written, as much as the projection itself at millions of Gaussians)."""
    n = len(means)
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
        else:
            radii[g, 0], radii[g, 1] = 0, 0


@numba.njit(cache=True, inline="always")
def _tile_box(means2d, radii, g, tile_size, tiles_x, tiles_y):
    """Tiles [x_lo, x_hi) x [y_lo, y_hi) that Gaussian g's pixel box overlaps, none when it is culled (a radius
    0). float32 arithmetic, as gsplat computes the box: mean / tile_size -+ radius / tile_size, floor / ceil."""
    if radii[g, 0] <= 0 or radii[g, 1] <= 0:
        return 0, 0, 0, 0
    size = np.float32(tile_size)
    mean_x, mean_y = means2d[g, 0] / size, means2d[g, 1] / size
    radius_x, radius_y = np.float32(radii[g, 0]) / size, np.float32(radii[g, 1]) / size
    x_lo = min(max(math.floor(mean_x - radius_x), 0), tiles_x)
    x_hi = min(max(math.ceil(mean_x + radius_x), 0), tiles_x)
    y_lo = min(max(math.floor(mean_y - radius_y), 0), tiles_y)
    y_hi = min(max(math.ceil(mean_y + radius_y), 0), tiles_y)
    return x_lo, x_hi, y_lo, y_hi


@numba.njit(parallel=True, cache=True, error_model="numpy")
def count_tiles(means2d, radii, tiles_x, tiles_y, tile_size, n_chunks):
    """The first pass of fill_tiles' counting sort: (tile_offsets (tiles + 1,), starts (n_chunks, tiles)).

    means2d (N, 2) float32, radii (N, 2) int32 (0: culled). Each of `n_chunks` index ranges is counted by
    one thread; starts[c, t] is where chunk c's first entry of tile t goes (tile-major, chunks in order).
    """
    n, n_tiles = len(radii), tiles_x * tiles_y
    chunk = (n + n_chunks - 1) // n_chunks
    counts = np.zeros((n_chunks, n_tiles), np.int64)
    for part in numba.prange(n_chunks):
        for g in range(part * chunk, min(n, (part + 1) * chunk)):
            x_lo, x_hi, y_lo, y_hi = _tile_box(means2d, radii, g, tile_size, tiles_x, tiles_y)
            for ty in range(y_lo, y_hi):
                for tx in range(x_lo, x_hi):
                    counts[part, ty * tiles_x + tx] += 1
    tile_offsets = np.empty(n_tiles + 1, np.int64)
    starts = np.empty((n_chunks, n_tiles), np.int64)
    total = 0
    for tile in range(n_tiles):
        tile_offsets[tile] = total
        for part in range(n_chunks):
            starts[part, tile] = total
            total += counts[part, tile]
    tile_offsets[n_tiles] = total
    return tile_offsets, starts


@numba.njit(parallel=True, cache=True, error_model="numpy")
def fill_tiles(means2d, radii, depth_bits, tiles_x, tiles_y, tile_size, tile_offsets, starts, flatten_ids):
    """Tile intersections in gsplat's order: by tile, then depth bits (uint32), then Gaussian index.

    depth_bits (N,) uint32: the float32 depths' bits; tile_offsets, starts: count_tiles' (same chunks);
    flatten_ids: uint64, at least tile_offsets[-1] long, filled with the Gaussian of each intersection. A
    counting sort by tile, then each tile's run sorted by the key depth bits << 32 | index: the keys are
    unique, so the order is the same whatever the thread timing.
    """
    n, n_chunks = len(radii), len(starts)
    chunk = (n + n_chunks - 1) // n_chunks
    for part in numba.prange(n_chunks):
        fill = starts[part]
        for g in range(part * chunk, min(n, (part + 1) * chunk)):
            x_lo, x_hi, y_lo, y_hi = _tile_box(means2d, radii, g, tile_size, tiles_x, tiles_y)
            key = (np.uint64(depth_bits[g]) << np.uint64(32)) | np.uint64(g)
            for ty in range(y_lo, y_hi):
                for tx in range(x_lo, x_hi):
                    tile = ty * tiles_x + tx
                    flatten_ids[fill[tile]] = key
                    fill[tile] += 1
    for tile in numba.prange(tiles_x * tiles_y):
        run = flatten_ids[tile_offsets[tile]:tile_offsets[tile + 1]]
        _sort_keys(run)
        for i in range(len(run)):
            run[i] &= np.uint64(0xFFFFFFFF)  # the key's index part: the flatten id


@numba.njit(cache=True)
def _sort_keys(keys):
    """Sort unique uint64 keys (depth bits << 32 | index) that are in index order already, in place.

    A stable LSD radix sort on the depth bits (11-bit digits; a digit all keys share is skipped, as the top
    bits of similar depths are), several times faster than a comparison sort; short runs by insertion.
    """
    n = len(keys)
    if n < 64:
        for i in range(1, n):
            key, j = keys[i], i - 1
            while j >= 0 and keys[j] > key:
                keys[j + 1] = keys[j]
                j -= 1
            keys[j + 1] = key
        return
    source, target = keys, np.empty(n, np.uint64)
    swapped = False
    for shift in (32, 43, 54):
        counts = np.zeros(2049, np.int64)
        for i in range(n):
            counts[((source[i] >> np.uint64(shift)) & np.uint64(2047)) + 1] += 1
        if counts[((source[0] >> np.uint64(shift)) & np.uint64(2047)) + 1] == n:
            continue
        for digit in range(2048):
            counts[digit + 1] += counts[digit]
        for i in range(n):
            digit = (source[i] >> np.uint64(shift)) & np.uint64(2047)
            target[counts[digit]] = source[i]
            counts[digit] += 1
        source, target = target, source
        swapped = not swapped
    if swapped:
        keys[:] = source
