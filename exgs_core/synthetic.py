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


def write_tiled_ply(scene: GaussianScene, count: int, path, seed: int = 0, jitter: float = 0.05,
                    copies_per_chunk: int = 16) -> None:
    """Write tile_scene(scene, count, seed, jitter) as an INRIA .ply, a few copies at a time.

    The same Gaussians, bit for bit, as write_ply(tile_scene(...)), without holding the tiled scene (or its
    file's bytes) in memory: 20M Gaussians at SH degree 3 are 5 GB of file. For the scale benchmarks.
    """
    from pathlib import Path

    from exgs_core.fileio import atomic_write
    from exgs_core.io.ply import F_DC, POSITION, ROTATION, SCALES, _header_comments, inria_property_names

    if count <= 0:
        raise ValueError("count must be positive")
    rng = np.random.default_rng(seed)
    copies = math.ceil(count / len(scene))
    side = math.ceil(math.sqrt(copies))
    lo, hi = scene.bounds()
    extent = (hi - lo).astype(np.float64)
    axes = np.argsort(extent)[::-1][:2]
    step = float(np.max(extent)) * 1.05
    noise = jitter * float(np.median(scene.scales()))

    names = inria_property_names(scene.sh_degree)
    dtype = np.dtype([(name, "<f4") for name in names])
    template = np.zeros(len(scene), dtype)
    k = scene.sh.shape[1]
    for channel in range(3):
        template[F_DC[channel]] = scene.sh[:, 0, channel]
        for coefficient in range(1, k):
            template[f"f_rest_{channel * (k - 1) + coefficient - 1}"] = scene.sh[:, coefficient, channel]
    template["opacity"] = scene.opacity_logits
    for index, name in enumerate(SCALES):
        template[name] = scene.log_scales[:, index]
    for index, name in enumerate(ROTATION):
        template[name] = scene.quats[:, index]
    header = ["ply", "format binary_little_endian 1.0"]
    header += [f"comment {c}" for c in _header_comments(scene)]
    header += [f"element vertex {count}"] + [f"property float {name}" for name in names] + ["end_header", ""]
    with atomic_write(Path(path)) as handle:
        handle.write("\n".join(header).encode("ascii"))
        written = 0
        for start in range(0, copies, copies_per_chunk):
            rows = []
            for k_copy in range(start, min(copies, start + copies_per_chunk)):
                offset = np.zeros(3)
                offset[axes[0]], offset[axes[1]] = (k_copy % side) * step, (k_copy // side) * step
                part = template.copy()
                means = (scene.means + offset + rng.normal(0.0, noise, scene.means.shape)).astype(np.float32)
                for index, name in enumerate(POSITION):
                    part[name] = means[:, index]
                rows.append(part)
            block = np.concatenate(rows)[: count - written]
            handle.write(block.tobytes())
            written += len(block)
