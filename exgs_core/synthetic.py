"""Synthetic large scenes for scale tests: tile and jitter a real scene up to any Gaussian count."""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from exgs_core.scene import GaussianScene


def tile_scene(scene: GaussianScene, count: int, seed: int = 0, jitter: float = 0.05) -> GaussianScene:
    """A scene of exactly `count` Gaussians: copies of `scene` on a square grid in its widest plane.

    Each copy is shifted by one scene extent (so copies do not overlap) and its positions jittered by
    `jitter` times the median nearest scale, so the copies are not bit-identical.
    """
    parts = []
    for means in _tiled_means(scene, count, seed, jitter):
        part = scene.subset(slice(None))
        part.means = means
        parts.append(part)
    return GaussianScene.concatenate(parts).subset(slice(0, count))


def write_tiled_ply(scene: GaussianScene, count: int, path, seed: int = 0, jitter: float = 0.05,
                    copies_per_chunk: int = 16) -> None:
    """Write tile_scene(scene, count, seed, jitter) as an INRIA .ply, a few copies at a time.

    The same Gaussians, bit for bit, as write_ply(tile_scene(...)), without holding the tiled scene (or its
    file's bytes) in memory: 20M Gaussians at SH degree 3 are 5 GB of file. For the scale benchmarks.
    """
    from pathlib import Path

    from exgs_core.fileio import atomic_write
    from exgs_core.io.ply import POSITION, _header_comments, inria_property_names, inria_rows

    copies = _tiled_means(scene, count, seed, jitter)  # checks the count before the file is touched
    template = inria_rows(scene)
    names = inria_property_names(scene.sh_degree)
    header = ["ply", "format binary_little_endian 1.0"]
    header += [f"comment {c}" for c in _header_comments(scene)]
    header += [f"element vertex {count}"] + [f"property float {name}" for name in names] + ["end_header", ""]
    with atomic_write(Path(path)) as handle:
        handle.write("\n".join(header).encode("ascii"))
        written, rows = 0, []
        for index, means in enumerate(copies, start=1):
            part = template.copy()
            for axis, name in enumerate(POSITION):
                part[name] = means[:, axis]
            rows.append(part)
            if index % copies_per_chunk == 0 or written + len(template) * len(rows) >= count:
                block = np.concatenate(rows)[: count - written]
                handle.write(block.tobytes())
                written, rows = written + len(block), []
            if written >= count:
                break


def _tiled_means(scene: GaussianScene, count: int, seed: int, jitter: float) -> Iterator[np.ndarray]:
    """The means of each copy tile_scene lays out, in order (float32; one seeded draw of noise per copy).
    ValueError for a count that is not positive, when called (before the first copy)."""
    if count <= 0:
        raise ValueError("count must be positive")
    return _copies(scene, count, seed, jitter)


def _copies(scene: GaussianScene, count: int, seed: int, jitter: float) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    copies = math.ceil(count / len(scene))
    side = math.ceil(math.sqrt(copies))
    lo, hi = scene.bounds()
    extent = (hi - lo).astype(np.float64)
    axes = np.argsort(extent)[::-1][:2]  # lay copies out along the two widest axes
    step = float(np.max(extent)) * 1.05
    noise = jitter * float(np.median(scene.scales()))
    for k in range(copies):
        offset = np.zeros(3)
        offset[axes[0]], offset[axes[1]] = (k % side) * step, (k // side) * step
        yield (scene.means + offset + rng.normal(0.0, noise, scene.means.shape)).astype(np.float32)
