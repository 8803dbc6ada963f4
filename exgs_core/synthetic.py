"""Synthetic large scenes for scale tests: tile and jitter a real scene up to any Gaussian count."""

from __future__ import annotations

import math

import numpy as np

from exgs_core.scene import GaussianScene


def tile_scene(scene: GaussianScene, count: int, seed: int = 0, jitter: float = 0.05) -> GaussianScene:
    """A scene of exactly `count` Gaussians: copies of `scene` on a square grid in its widest plane.

    Each copy is shifted by one scene extent (so copies do not overlap) and its positions jittered by
    `jitter` times the median nearest scale, so the copies are not bit-identical.
    """
    if count <= 0:
        raise ValueError("count must be positive")
    rng = np.random.default_rng(seed)
    copies = math.ceil(count / len(scene))
    side = math.ceil(math.sqrt(copies))
    lo, hi = scene.bounds()
    extent = (hi - lo).astype(np.float64)
    axes = np.argsort(extent)[::-1][:2]  # lay copies out along the two widest axes
    step = float(np.max(extent)) * 1.05
    noise = jitter * float(np.median(scene.scales()))

    parts = []
    for k in range(copies):
        offset = np.zeros(3)
        offset[axes[0]], offset[axes[1]] = (k % side) * step, (k // side) * step
        part = scene.subset(slice(None))
        part.means = (scene.means + offset + rng.normal(0.0, noise, scene.means.shape)).astype(np.float32)
        parts.append(part)
    return GaussianScene.concatenate(parts).subset(slice(0, count))
