"""restore(render, alpha, painter): one frame in, one restored frame out, at any resolution.
restore_objects(): a frame of several objects, each restored by its own painter and strength where it shows.

Frames above TILE_ABOVE pixels go through the painter in overlapping tiles (TILE pixels square, TILE_OVERLAP
shared with each neighbour, blended with linear ramps), so memory stays bounded at any resolution: the whole
4000x4000 frame at once took 13.4 GB (issue 15), one 768x768 tile takes a few hundred MB.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from exgs_core.painter.weights import Restorer

TILE = 768  # tile side in pixels (a multiple of every painter's pad_multiple)
TILE_OVERLAP = 64  # pixels shared by neighbouring tiles, blended linearly
TILE_ABOVE = 1024 * 1024  # frames with more pixels than this are restored in tiles


Strength = float | np.ndarray | torch.Tensor  # one share of the correction for the frame, or one per pixel (H, W)


def restore(render: np.ndarray | torch.Tensor, alpha: np.ndarray | torch.Tensor, painter: Restorer,
            strength: Strength = 1.0) -> np.ndarray | torch.Tensor:
    """Restore a raw render (H, W, 3) in [0, 1] of a compressed scene, given its alpha (H, W).

    `strength` scales the painter's correction (0: the raw render, 1: the painter's output), for the whole
    frame or per pixel ((H, W); see restore_objects); see strength_for_ratio().

    Any size works: the frame is padded (reflect, or edge-replicate when too small to reflect) to the model's
    grid and cropped back. Returns (H, W, 3) in [0, 1]: a numpy float32 array for numpy input, otherwise a
    float32 CPU tensor.
    """
    as_numpy = isinstance(render, np.ndarray)
    rgb, mask = frame_tensors(render, alpha)
    if isinstance(strength, (np.ndarray, torch.Tensor)) and strength.ndim == 2:
        if tuple(strength.shape) != tuple(rgb.shape[1:]):
            raise ValueError(f"strength must be one number or (H, W) = {tuple(rgb.shape[1:])}, got shape "
                             f"{tuple(strength.shape)}")
        strength = torch.as_tensor(strength).to("cpu", torch.float32).reshape(1, 1, *rgb.shape[1:])
    else:
        strength = float(strength)
    out = restore_batch(rgb[None], mask[None], painter, strength)[0]
    out = out.permute(1, 2, 0).contiguous()
    return out.numpy() if as_numpy else out


def frame_tensors(render: np.ndarray | torch.Tensor, alpha: np.ndarray | torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, H, W) colour and (1, H, W) mask = 1 - alpha, float32 on the CPU, checked and clamped to [0, 1]."""
    rgb = torch.as_tensor(np.asarray(render) if isinstance(render, np.ndarray) else render).detach()
    a = torch.as_tensor(np.asarray(alpha) if isinstance(alpha, np.ndarray) else alpha).detach()
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"render must be (H, W, 3), got shape {tuple(rgb.shape)}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if tuple(a.shape) != tuple(rgb.shape[:2]):
        raise ValueError(f"alpha must be (H, W) = {tuple(rgb.shape[:2])}, got shape {tuple(a.shape)}")
    rgb = rgb.to("cpu", torch.float32).clamp(0.0, 1.0).permute(2, 0, 1)
    mask = (1.0 - a.to("cpu", torch.float32).clamp(0.0, 1.0))[None]
    return rgb, mask


def restore_batch(rgb: torch.Tensor, mask: torch.Tensor, painter: Restorer,
                  strength: float | torch.Tensor = 1.0) -> torch.Tensor:
    """(B, 3, H, W) colour + (B, 1, H, W) mask -> (B, 3, H, W) restored in [0, 1], float32 on rgb's device.
    `strength`: a number, or a (B, 1, H, W) tensor of one strength per pixel."""
    per_pixel = isinstance(strength, torch.Tensor)
    if (float(strength.max()) if per_pixel else strength) <= 0.0:
        return rgb.float().clamp(0.0, 1.0)
    height, width = rgb.shape[-2:]
    if height * width > TILE_ABOVE:
        out = _painted_tiles(rgb, mask, painter, TILE, TILE_OVERLAP)
    else:
        out = _painted(rgb, mask, painter)
    if per_pixel:
        out = rgb.float() + strength.to(out.device) * (out - rgb.float())
    elif strength < 1.0:
        out = rgb.float() + strength * (out - rgb.float())
    return out.clamp(0.0, 1.0)


def restore_objects(render: np.ndarray, alpha: np.ndarray, coverage: np.ndarray | None,
                    corrections: Sequence[tuple[Restorer, float]]) -> np.ndarray:
    """A frame of several objects, each object k corrected by its own painter at its own strength where it shows:
    out = raw + sum_k w_k s_k (painter_k(raw) - raw), w_k = object_share(alpha, coverage, k).

    `coverage` (H, W, K): what object k's Gaussians add to alpha (render(..., groups=...)); None when one
    correction covers the whole scene (w = 1: exactly restore(render, alpha, painter, strength)). Objects without
    a correction are not in `coverage`, so the pixels only they show stay raw. Each distinct painter runs once,
    with a per-pixel strength (the sum of its objects' w_k s_k); painting runs in tiles like restore().
    Returns (H, W, 3) float32 in [0, 1].
    """
    raw = np.asarray(render, np.float32)
    if coverage is None:
        if len(corrections) != 1:
            raise ValueError("without coverage exactly one correction applies to the frame")
        painter, strength = corrections[0]
        return np.asarray(restore(raw, alpha, painter, float(strength)), np.float32)
    if coverage.shape != raw.shape[:2] + (len(corrections),):
        raise ValueError(f"coverage must be (H, W, {len(corrections)}), got shape {coverage.shape}")
    alpha, coverage = np.asarray(alpha, np.float32), np.asarray(coverage, np.float32)
    strengths: dict[int, tuple[Restorer, np.ndarray]] = {}
    for k, (painter, strength) in enumerate(corrections):
        _, total = strengths.get(id(painter), (painter, np.zeros(raw.shape[:2], np.float32)))
        strengths[id(painter)] = (painter, total + float(strength) * object_share(alpha, coverage, k))
    out = raw.copy()
    for painter, strength_map in strengths.values():
        out += np.asarray(restore(raw, alpha, painter, strength_map), np.float32) - raw
    return np.clip(out, 0.0, 1.0)


def object_share(alpha: np.ndarray, coverage: np.ndarray, k: int) -> np.ndarray:
    """(H, W): how much of object k's correction each pixel gets (one object at a time: bounded memory).

    Where something shows (alpha > 0): coverage_k / alpha, the object's share of what the pixel shows. Not that
    share times alpha: a frame of one object is restored in full at every pixel, soft edges included (that is
    what its correction was fitted and validated on), so a pixel only one object shows gets that object's whole
    correction, whatever its alpha; pixels several objects show split it.
    Where nothing shows (alpha = 0): the object's share of the whole frame's coverage. So a frame of one object
    is restored exactly as when it is alone (its correction also paints the few pixels just past a compressed
    object's edge, where the full scene still had Gaussians), and objects that are not in the frame get nothing.
    """
    own = coverage[..., k]
    shown = np.clip(own / np.maximum(alpha, 1e-12), 0.0, 1.0)
    frame = float(own.sum(dtype=np.float64)) / max(float(alpha.sum(dtype=np.float64)), 1e-12)
    return np.where(alpha > 0, shown, np.float32(frame)).astype(np.float32)


def _painted(rgb: torch.Tensor, mask: torch.Tensor, painter: Restorer) -> torch.Tensor:
    """The painter's output for the whole (B, 3, H, W) frame at once, float32 on rgb's device (unclamped)."""
    param = next(painter.parameters())
    height, width = rgb.shape[-2:]
    x = pad_to_multiple(torch.cat([rgb, mask], dim=1), painter.pad_multiple)
    x = x.to(param.device, param.dtype)
    if param.device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        out = painter(x[:, :3], x[:, 3:])
    return out[..., :height, :width].float().to(rgb.device)


def _painted_tiles(rgb: torch.Tensor, mask: torch.Tensor, painter: Restorer, tile: int,
                   overlap: int) -> torch.Tensor:
    """_painted() tile by tile: tiles of `tile` pixels sharing `overlap` pixels, blended with linear ramps."""
    height, width = rgb.shape[-2:]
    out = torch.zeros(rgb.shape[0], 3, height, width, dtype=torch.float32, device=rgb.device)
    total = torch.zeros(height, width, dtype=torch.float32, device=rgb.device)
    for top in tile_starts(height, tile, overlap):
        for left in tile_starts(width, tile, overlap):
            window = (..., slice(top, top + tile), slice(left, left + tile))
            painted = _painted(rgb[window], mask[window], painter)
            h, w = painted.shape[-2:]
            weight = (_ramp(h, top > 0, top + h < height, overlap)[:, None]
                      * _ramp(w, left > 0, left + w < width, overlap)[None, :]).to(rgb.device)
            out[window] += painted * weight
            total[window] += weight
    return out / total


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of the fewest tiles covering [0, size) with at least `overlap` shared pixels at each seam."""
    if size <= tile:
        return [0]
    count = math.ceil((size - tile) / (tile - overlap)) + 1  # evenly spread: every seam shares >= overlap
    return [round(i * (size - tile) / (count - 1)) for i in range(count)]


def _ramp(length: int, rise: bool, fall: bool, overlap: int) -> torch.Tensor:
    """1 inside, rising from ~0 over the first `overlap` pixels (rise) and falling over the last (fall)."""
    weight = torch.ones(length, dtype=torch.float32)
    ramp = (torch.arange(overlap, dtype=torch.float32) + 0.5) / overlap
    n = min(overlap, length)
    if rise:
        weight[:n] = torch.minimum(weight[:n], ramp[:n])
    if fall:
        weight[length - n:] = torch.minimum(weight[length - n:], ramp[:n].flip(0))
    return weight


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad (B, C, H, W) at the bottom and right to multiples of `multiple` (at least one multiple)."""
    height, width = x.shape[-2:]
    pad_h = max(multiple, math.ceil(height / multiple) * multiple) - height
    pad_w = max(multiple, math.ceil(width / multiple) * multiple) - width
    if pad_h == 0 and pad_w == 0:
        return x
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
