"""restore(render, alpha, painter): one frame in, one restored frame out, at any resolution."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from exgs_core.painter.weights import Restorer


def restore(render: np.ndarray | torch.Tensor, alpha: np.ndarray | torch.Tensor, painter: Restorer,
            strength: float = 1.0) -> np.ndarray | torch.Tensor:
    """Restore a raw render (H, W, 3) in [0, 1] of a compressed scene, given its alpha (H, W).

    `strength` scales the painter's correction (0: the raw render, 1: the painter's output); see
    strength_for_ratio().

    Any size works: the frame is padded (reflect, or edge-replicate when too small to reflect) to the model's
    grid and cropped back. Returns (H, W, 3) in [0, 1]: a numpy float32 array for numpy input, otherwise a
    float32 CPU tensor.
    """
    as_numpy = isinstance(render, np.ndarray)
    rgb, mask = frame_tensors(render, alpha)
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


def restore_batch(rgb: torch.Tensor, mask: torch.Tensor, painter: Restorer, strength: float = 1.0) -> torch.Tensor:
    """(B, 3, H, W) colour + (B, 1, H, W) mask -> (B, 3, H, W) restored in [0, 1], float32 on rgb's device."""
    if strength <= 0.0:
        return rgb.float().clamp(0.0, 1.0)
    param = next(painter.parameters())
    height, width = rgb.shape[-2:]
    x = pad_to_multiple(torch.cat([rgb, mask], dim=1), painter.pad_multiple)
    x = x.to(param.device, param.dtype)
    if param.device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        out = painter(x[:, :3], x[:, 3:])
    out = out[..., :height, :width].float().to(rgb.device)
    if strength < 1.0:
        out = rgb.float() + strength * (out - rgb.float())
    return out.clamp(0.0, 1.0)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad (B, C, H, W) at the bottom and right to multiples of `multiple` (at least one multiple)."""
    height, width = x.shape[-2:]
    pad_h = max(multiple, math.ceil(height / multiple) * multiple) - height
    pad_w = max(multiple, math.ceil(width / multiple) * multiple) - width
    if pad_h == 0 and pad_w == 0:
        return x
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
