"""The test oracle of significance scoring: one view's sums as readable tensor code and Python loops.

Projection by project() (tested against gsplat's reference), the visible Gaussians gathered, their tile boxes
in float32 tensor arithmetic, one stable sort of gsplat's (tile << 32 | depth bits) keys, then each tile
composited pixel by pixel front to back. The fast path (render.rasterize.ViewScorer) must give the same
floats, so this adds them in its order: worker w takes tiles w, w + workers, ...; within a tile, each
Gaussian's pixels row by row; the workers' sums added in worker order. Slow: for small views only.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

from exgs_core.render.projection import TILE_SIZE, project

MAX_ALPHA, MIN_ALPHA, MIN_TRANSMITTANCE = 0.999, 1.0 / 255.0, 1e-4


def reference_significance_sums(means: torch.Tensor, covars: torch.Tensor, opacities: torch.Tensor, camera,
                                by_alpha: bool = True) -> np.ndarray:
    width, height = int(camera.width), int(camera.height)
    viewmat = torch.as_tensor(camera.world_to_camera, dtype=torch.float32)
    K = torch.as_tensor(camera.K, dtype=torch.float32)
    proj = project(means, covars, viewmat, K, width, height, opacities=opacities)
    visible = torch.nonzero((proj.radii > 0).all(dim=-1)).squeeze(1)
    flatten_ids, tile_offsets, tiles_x = _sorted_intersections(proj.means2d[visible], proj.radii[visible],
                                                               proj.depths[visible], width, height)
    sums = _composite(proj.means2d[visible].numpy(), proj.conics[visible].numpy(), opacities[visible].numpy(),
                      flatten_ids, tile_offsets, width, height, tiles_x, by_alpha)
    out = np.zeros(len(means), np.float64)
    out[visible.numpy()] = sums
    return out


def _sorted_intersections(means2d, radii, depths, width, height):
    tiles_x, tiles_y = (width + TILE_SIZE - 1) // TILE_SIZE, (height + TILE_SIZE - 1) // TILE_SIZE
    lo = torch.floor(means2d / TILE_SIZE - radii / TILE_SIZE).int()
    hi = torch.ceil(means2d / TILE_SIZE + radii / TILE_SIZE).int()
    limits = torch.tensor([tiles_x, tiles_y], dtype=torch.int32)
    lo, hi = torch.minimum(lo.clamp(min=0), limits), torch.minimum(hi.clamp(min=0), limits)
    depth_bits = depths.view(torch.int32).long() & 0xFFFFFFFF
    keys, ids = [], []
    for g in range(len(means2d)):
        for ty in range(int(lo[g, 1]), int(hi[g, 1])):
            for tx in range(int(lo[g, 0]), int(hi[g, 0])):
                keys.append(((ty * tiles_x + tx) << 32) | int(depth_bits[g]))
                ids.append(g)
    keys_t = torch.tensor(keys, dtype=torch.int64)
    order = torch.sort(keys_t, stable=True).indices  # equal keys stay in index order
    tiles = (keys_t[order] >> 32).numpy()
    tile_offsets = np.searchsorted(tiles, np.arange(tiles_x * tiles_y + 1))
    return np.asarray(ids, np.int64)[order.numpy()], tile_offsets, tiles_x


def _composite(means2d, conics, opacities, flatten_ids, tile_offsets, width, height, tiles_x, by_alpha):
    workers = numba.get_num_threads()
    scores = np.zeros((workers, len(opacities)), np.float64)
    for worker in range(workers):
        for tile in range(worker, len(tile_offsets) - 1, workers):
            x0, y0 = (tile % tiles_x) * TILE_SIZE, (tile // tiles_x) * TILE_SIZE
            xs = np.arange(x0, min(x0 + TILE_SIZE, width))
            ys = np.arange(y0, min(y0 + TILE_SIZE, height))
            transmittance = np.ones((len(ys), len(xs)))
            done = np.zeros((len(ys), len(xs)), bool)
            for g in flatten_ids[tile_offsets[tile]:tile_offsets[tile + 1]]:
                a, b, c = (float(v) for v in conics[g])
                opacity = float(opacities[g])
                dx = float(means2d[g, 0]) - (xs[None, :] + 0.5)
                dy = float(means2d[g, 1]) - (ys[:, None] + 0.5)
                sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
                # Only pixels where alpha could reach 1/255 need the exact test (1 sigma of slack).
                near = (sigma >= 0.0) & (sigma <= math.log(max(opacity, 1e-30) / MIN_ALPHA) + 1.0)
                for row, col in zip(*np.nonzero(near)):  # row by row
                    if done[row, col]:
                        continue
                    alpha = min(MAX_ALPHA, opacity * math.exp(-float(sigma[row, col])))
                    if alpha < MIN_ALPHA:
                        continue
                    t = transmittance[row, col]
                    if t * (1.0 - alpha) <= MIN_TRANSMITTANCE:
                        done[row, col] = True
                        continue
                    scores[worker, g] += (alpha if by_alpha else opacity) * t
                    transmittance[row, col] = t * (1.0 - alpha)
    total = scores[0]
    for worker in range(1, workers):
        total += scores[worker]
    return total
