"""PlayCanvas SOG v2 writing: a bundled .sog zip, or meta.json with its WebP images beside it.

The layout is the one exgs_core.io.sog reads (and splat-transform 3.7.0 writes): Gaussians in Morton order, one
per pixel of width x height textures (both multiples of 4); means as 16-bit log-encoded x, y, z split into
means_l/means_u; quats as the three smallest components and 252 + the index of the largest; scales and sh0 as
indices into 256-entry codebooks (sh0 alpha = sigmoid(opacity) * 255); higher SH as a palette of k-means
centroids, each coefficient an index into a 256-entry codebook, and a 16-bit palette label per Gaussian.

Codebooks are the least-squares split of a group's values (summarised in 1024 bins, weighted by the square root
of their counts, as splat-transform weights them) into 256 runs; exact when a group has at most 256 distinct values,
as in ExGS-quantised scenes. The SH palette holds every distinct SH row when there are few enough; otherwise it is a
k-means palette whose size follows splat-transform's rule, capped so one assignment pass stays about 4e10
multiply-adds (512 entries for a million Gaussians at SH degree 3; splat-transform, on a GPU, uses up to 65536).

Images are lossless WebP, encoded by Pillow unless the caller passes its own `encode_image` (RGBA must be kept
exactly, also under alpha 0).
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from exgs_core.fileio import atomic_write
from exgs_core.io.pcply import morton_order
from exgs_core.scene import GaussianScene

# Encodes (height, width, 4) uint8 RGBA, top row first, as lossless WebP bytes.
ImageEncoder = Callable[[np.ndarray], bytes]

CODEBOOK_SIZE = 256
PALETTE_ROW = 64
MAX_WEBP_SIDE = 16383
SH_COEFFICIENTS = {1: 3, 2: 8, 3: 15}
KMEANS_BUDGET = 4e10  # multiply-adds per assignment pass of the SH palette k-means
KMEANS_ITERATIONS = 6
GENERATOR = "exgs"


def encode_sog(scene: GaussianScene, encode_image: ImageEncoder | None = None) -> dict[str, bytes]:
    """The files of a SOG scene by name: meta.json and the WebP images."""
    encode = encode_image or _encode_with_pillow
    n = len(scene)
    order = morton_order(scene.means)
    width = int(math.ceil(math.sqrt(n) / 4) * 4)
    height = int(math.ceil(n / width / 4) * 4)
    if max(width, height) > MAX_WEBP_SIDE:
        raise ValueError(f"{n} Gaussians need {width}x{height} textures, beyond WebP's {MAX_WEBP_SIDE} pixels a side")

    def texture(pixels: np.ndarray) -> bytes:
        image = np.zeros((width * height, 4), np.uint8)
        image[:n] = pixels[order]
        return encode(image.reshape(height, width, 4))

    files: dict[str, bytes] = {}
    mins, maxs, low, high = _encode_means(scene.means)
    files["means_l.webp"], files["means_u.webp"] = texture(low), texture(high)
    files["quats.webp"] = texture(_encode_quats(scene.unit_quats()))
    scale_codebook, scale_labels = quantize_1d(scene.log_scales)
    files["scales.webp"] = texture(_with_alpha(scale_labels, 255))
    dc_codebook, dc_labels = quantize_1d(scene.sh[:, 0, :])
    files["sh0.webp"] = texture(_with_alpha(dc_labels, _bytes(scene.opacities() * 255.0)))
    meta = {
        "version": 2,
        "asset": {"generator": GENERATOR},
        "count": n,
        "means": {"mins": mins, "maxs": maxs, "files": ["means_l.webp", "means_u.webp"]},
        "scales": {"codebook": scale_codebook, "files": ["scales.webp"]},
        "quats": {"files": ["quats.webp"]},
        "sh0": {"codebook": dc_codebook, "files": ["sh0.webp"]},
    }
    if scene.sh_degree > 0:
        meta["shN"] = _encode_shn(scene, files, texture, encode)
    files["meta.json"] = json.dumps(meta, separators=(",", ":")).encode("utf-8")
    return files


def _bytes(values: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.nan_to_num(values, nan=0.0)), 0, 255).astype(np.uint8)


def _with_alpha(rgb: np.ndarray, alpha: np.ndarray | int) -> np.ndarray:
    out = np.empty((len(rgb), 4), np.uint8)
    out[:, :3] = rgb
    out[:, 3] = alpha
    return out


def _encode_means(means: np.ndarray) -> tuple[list[float], list[float], np.ndarray, np.ndarray]:
    logged = np.sign(means.astype(np.float64)) * np.log1p(np.abs(means.astype(np.float64)))
    lo, hi = logged.min(axis=0), logged.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    q = np.clip(np.round((logged - lo) / span * 65535.0), 0, 65535).astype(np.uint32)
    low = _with_alpha((q & 0xFF).astype(np.uint8), 255)
    high = _with_alpha((q >> 8).astype(np.uint8), 255)
    return [float(v) for v in lo], [float(v) for v in hi], low, high


def _encode_quats(unit: np.ndarray) -> np.ndarray:
    """Smallest three of (w, x, y, z), largest made positive, in [-1/sqrt2, 1/sqrt2] -> 0..255; alpha 252 + index."""
    q = unit.astype(np.float64)
    largest = np.argmax(np.abs(q), axis=1)
    q = q * np.where(q[np.arange(len(q)), largest] < 0, -1.0, 1.0)[:, None]
    others = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])[largest]
    small = np.take_along_axis(q, others, axis=1) * np.sqrt(2.0)
    return _with_alpha(_bytes((small * 0.5 + 0.5) * 255.0), (252 + largest).astype(np.uint8))


def quantize_1d(values: np.ndarray, size: int = CODEBOOK_SIZE) -> tuple[list[float], np.ndarray]:
    """A codebook of at most `size` floats for all values together and the uint8 index of each value (same shape).

    Exact when there are at most `size` distinct values. Otherwise the values are summarised in 1024 bins, each
    weighted by the square root of its count, and the bins are split into `size` runs minimising the weighted
    squared error exactly (dynamic programming); each entry is its run's weighted mean. The square root is
    splat-transform's idea: by counts alone nearly every entry would go to the dense middle, leaving rare large
    values, such as big Gaussians' scales, far from any entry. Non-finite values (-inf log-scales) are clamped to
    the finite range first.
    """
    flat = np.asarray(values, np.float64).reshape(-1)
    finite = flat[np.isfinite(flat)]
    lo, hi = (finite.min(), finite.max()) if len(finite) else (0.0, 0.0)
    flat = np.clip(np.nan_to_num(flat, nan=0.0, posinf=hi, neginf=lo), lo, hi)
    distinct = np.unique(flat)
    if len(distinct) <= size:
        centroids = distinct
    else:
        centroids = _optimal_runs(*_weighted_summary(np.sort(flat)), size)
    labels = _nearest_sorted(centroids, flat)
    codebook = centroids.astype(np.float32)
    return [float(v) for v in codebook], labels.astype(np.uint8).reshape(np.shape(values))


def _optimal_runs(centres: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    """Weighted means of the split of sorted `centres` into at most `size` runs of least weighted squared error."""
    h = len(centres)
    size = min(size, h)
    w = np.concatenate([[0.0], np.cumsum(weights)])
    wx = np.concatenate([[0.0], np.cumsum(weights * centres)])
    wxx = np.concatenate([[0.0], np.cumsum(weights * centres**2)])
    last, first = np.arange(h)[:, None], np.arange(h)[None, :]  # [j, a]: the run of bins a..j
    run_w = w[last + 1] - w[first]
    run_wx = wx[last + 1] - wx[first]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        cost = np.where(last >= first, wxx[last + 1] - wxx[first] - run_wx**2 / run_w, np.inf)
    best = cost[:, 0].copy()  # best[j]: least error of bins 0..j split into the runs so far
    after = np.ascontiguousarray(cost[:, 1:])  # [j, s]: the run s+1..j
    total = np.empty_like(after)
    rows = np.arange(h)
    splits = []
    for _ in range(1, size):
        np.add(after, best[None, :-1], out=total)  # [j, s]: the best split of bins 0..s, then the run s+1..j
        choice = np.argmin(total, axis=1)
        best = total[rows, choice]
        splits.append(choice)
    means, end = [], h - 1
    for choice in reversed(splits):
        start = choice[end] + 1
        means.append((wx[end + 1] - wx[start]) / (w[end + 1] - w[start]))
        end = start - 1
    means.append(wx[end + 1] / w[end + 1])
    return np.unique(np.array(means))


def _weighted_summary(ordered: np.ndarray, bins: int = 1024, alpha: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(mean of each non-empty bin, count ** alpha) of sorted values; bins mix quantile and uniform spacing."""
    n, lo, hi = len(ordered), ordered[0], ordered[-1]
    spread = (ordered[(3 * n) // 4] - ordered[n // 4]) / (hi - lo)
    beta = min(0.999, max(0.5, 1.0 - spread))  # a long tail (small spread) gets more uniform bins
    position = beta * np.arange(n) / n + (1.0 - beta) * (ordered - lo) / (hi - lo)
    index = np.minimum((position * bins).astype(np.int64), bins - 1)
    counts = np.bincount(index, minlength=bins)
    sums = np.bincount(index, ordered, bins)
    used = counts > 0
    return sums[used] / counts[used], counts[used].astype(np.float64) ** alpha


def _nearest_sorted(centroids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of the nearest entry of a sorted array, for each value."""
    midpoints = (centroids[1:] + centroids[:-1]) / 2.0
    return np.searchsorted(midpoints, values)


def _encode_shn(scene: GaussianScene, files: dict[str, bytes], texture, encode: ImageEncoder) -> dict:
    coefficients = SH_COEFFICIENTS[scene.sh_degree]
    # rows of (coefficient, channel) values; the palette texture stores coefficient j of entry i at pixel j
    rows = np.nan_to_num(scene.sh[:, 1:, :].astype(np.float32)).reshape(len(scene), -1)
    palette, labels = sh_palette(rows)
    codebook, indices = quantize_1d(palette)
    indices = indices.reshape(len(palette), coefficients, 3)
    entries = len(palette)
    lines = -(-entries // PALETTE_ROW)
    centroid_pixels = np.zeros((lines * PALETTE_ROW, coefficients, 4), np.uint8)
    centroid_pixels[:entries, :, :3] = indices
    centroid_pixels[:entries, :, 3] = 255
    files["shN_centroids.webp"] = encode(centroid_pixels.reshape(lines, PALETTE_ROW * coefficients, 4))
    label_pixels = np.zeros((len(scene), 4), np.uint8)
    label_pixels[:, 0] = labels & 0xFF
    label_pixels[:, 1] = labels >> 8
    label_pixels[:, 3] = 255
    files["shN_labels.webp"] = texture(label_pixels)
    return {"count": entries, "bands": scene.sh_degree, "codebook": codebook,
            "files": ["shN_centroids.webp", "shN_labels.webp"]}


def palette_size(n: int, dims: int) -> int:
    """splat-transform's palette size for n Gaussians, capped by the k-means budget; a power of two, 256..65536."""
    rule = min(64, 2 ** math.floor(math.log2(max(n, 1) / 1024))) * 1024 if n >= 1024 else 256
    budget = 2 ** max(8, math.floor(math.log2(KMEANS_BUDGET / max(n * dims, 1))))
    return int(max(256, min(rule, budget, 1 << 16)))


def sh_palette(rows: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(palette (K, D) float32, label of each row (N,) uint32): the distinct rows if at most the palette size,
    else k-means centroids."""
    n, dims = rows.shape
    size = palette_size(n, dims)
    found = distinct_rows(rows, size)
    if found is not None:
        distinct, inverse = found
        return distinct.astype(np.float32), inverse.astype(np.uint32)
    rng = np.random.default_rng(seed)
    centroids = rows[rng.choice(n, size, replace=False)].astype(np.float32)
    for _ in range(KMEANS_ITERATIONS):
        labels = _assign(rows, centroids)
        sums = np.stack([np.bincount(labels, rows[:, d], size) for d in range(dims)], axis=1)
        counts = np.bincount(labels, minlength=size)
        empty = counts == 0
        centroids[~empty] = (sums[~empty] / counts[~empty, None]).astype(np.float32)
        if empty.any():  # restart empty clusters on random rows
            centroids[empty] = rows[rng.choice(n, int(empty.sum()), replace=False)]
    labels = _assign(rows, centroids)
    return centroids, labels.astype(np.uint32)


def distinct_rows(rows: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray] | None:
    """np.unique(rows, axis=0, return_inverse=True) of float rows when they hold at most `limit` distinct rows,
    else None. Rows are grouped by a 64-bit hash of their bits (checked row by row against their group's first
    row), so a scene of distinct rows is told apart without np.unique's sort of every row as a record (6 s for
    300k rows of SH 3)."""
    rows = np.ascontiguousarray(rows + rows.dtype.type(0.0))  # -0.0 as 0.0: np.unique compares values
    words = rows.view(np.uint32 if rows.dtype.itemsize == 4 else np.uint64)
    hashes = np.full(len(rows), 0xCBF29CE484222325, np.uint64)  # FNV-1a over the row's words
    for column in words.T:
        hashes = (hashes ^ column.astype(np.uint64)) * np.uint64(0x100000001B3)
    unique_hashes, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    if len(unique_hashes) > limit:
        return None
    representatives = rows[first]
    if not np.array_equal(representatives[inverse.reshape(-1)], rows):  # two rows with one hash: no shortcut
        distinct, inverse = np.unique(rows, axis=0, return_inverse=True)
        return distinct, inverse.reshape(-1)
    order = np.lexsort(representatives.T[::-1])  # np.unique's order: by the first column, then the next, ...
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return representatives[order], rank[inverse.reshape(-1)]


def _assign(rows: np.ndarray, centroids: np.ndarray, chunk: int = 8192) -> np.ndarray:
    norms = (centroids.astype(np.float32) ** 2).sum(axis=1)
    labels = np.empty(len(rows), np.int64)
    for start in range(0, len(rows), chunk):
        block = rows[start:start + chunk].astype(np.float32)
        distances = norms[None, :] - 2.0 * (block @ centroids.T)
        labels[start:start + chunk] = np.argmin(distances, axis=1)
    return labels


def _encode_with_pillow(rgba: np.ndarray) -> bytes:
    try:
        from PIL import Image
    except ImportError:
        problem = "writing SOG needs Pillow (WebP images), which this Python lacks: pip install pillow"
        raise RuntimeError(problem) from None
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba), "RGBA").save(buffer, "WEBP", lossless=True, exact=True, quality=100)
    return buffer.getvalue()


def write_sog(scene: GaussianScene, path: str | os.PathLike, encode_image: ImageEncoder | None = None) -> None:
    """A bundled .sog zip (any name but meta.json), or meta.json with the images beside it."""
    path = Path(path)
    files = encode_sog(scene, encode_image)
    if path.name.lower() == "meta.json":
        for name, data in files.items():
            if name != "meta.json":
                with atomic_write(path.parent / name) as handle:
                    handle.write(data)
        with atomic_write(path) as handle:  # last, so a reader never finds meta.json without its images
            handle.write(files["meta.json"])
        return
    with atomic_write(path) as handle:
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as archive:
            for name in ["meta.json"] + sorted(n for n in files if n != "meta.json"):
                # a fixed date, not the clock's: the same scene gives the same file (farms, caches, diffs)
                archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), files[name])
