"""Front-to-back alpha compositing on the CPU, compiled with numba.

The loops follow gsplat's rasterize_to_pixels forward and backward CUDA kernels one for one: per tile, per
pixel (centre at +0.5), the tile's Gaussians in depth order; alpha = min(0.999, opacity * exp(-sigma)),
skipped when sigma < 0 or alpha < 1/255; a pixel stops before the Gaussian that would bring its
transmittance to 1e-4 or below. Plain Python loops compiled by numba are several times faster here than
any vectorised torch formulation, which must materialise every (pixel, Gaussian) pair.

Tiles run in parallel. The backward pass scatters into per-Gaussian gradients, so each worker owns one
gradient buffer and the buffers are summed at the end (no atomics, deterministic).
"""

from __future__ import annotations

import math
import os

import numba
import numpy as np

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


@numba.njit(parallel=True, cache=True)
def composite_forward(means2d, conics, opacities, colors, flatten_ids, tile_offsets, width, height, tile_size,
                      tiles_x):
    """Accumulated colours (H, W, C) without background, final transmittance (H, W), last index used (H, W)."""
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
        for py in range(y0, min(y0 + tile_size, height)):
            for px in range(x0, min(x0 + tile_size, width)):
                t = 1.0
                fx, fy = px + 0.5, py + 0.5
                for i in range(start, end):
                    g = flatten_ids[i]
                    alpha = _alpha(conics[g, 0], conics[g, 1], conics[g, 2], means2d[g, 0] - fx,
                                   means2d[g, 1] - fy, opacities[g], sigma_cut[g])
                    if alpha < 0.0:
                        continue
                    next_t = t * (1.0 - alpha)
                    if next_t <= MIN_TRANSMITTANCE:
                        break
                    weight = alpha * t
                    for c in range(channels):
                        out[py, px, c] += colors[g, c] * weight
                    last[py, px] = i
                    t = next_t
                final_t[py, px] = t
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
        for tile in range(worker, n_tiles, n_workers):
            start, end = tile_offsets[tile], tile_offsets[tile + 1]
            x0, y0 = (tile % tiles_x) * tile_size, (tile // tiles_x) * tile_size
            for py in range(y0, min(y0 + tile_size, height)):
                for px in range(x0, min(x0 + tile_size, width)):
                    t = 1.0
                    for i in range(start, end):
                        g = flatten_ids[i]
                        alpha = _alpha(conics[g, 0], conics[g, 1], conics[g, 2], means2d[g, 0] - (px + 0.5),
                                       means2d[g, 1] - (py + 0.5), opacities[g], sigma_cut[g])
                        if alpha < 0.0:
                            continue
                        next_t = t * (1.0 - alpha)
                        if next_t <= MIN_TRANSMITTANCE:
                            break
                        scores[worker, g, 0] += alpha * t
                        scores[worker, g, 1] += opacities[g] * t
                        scores[worker, g, 2] += 1.0
                        t = next_t
    return scores.sum(axis=0)
