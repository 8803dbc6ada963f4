"""PSNR and SSIM in torch, for (B, C, H, W) batches or single (H, W, C) frames, images in [0, 1].

SSIM is the standard Wang et al. 2004 form: 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, computed
per channel over valid windows and averaged; images smaller than the window use a window as large as fits.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _batch(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(image).float()
    if t.ndim == 2:
        return t[None, None]
    if t.ndim == 3:  # (H, W, C)
        return t.permute(2, 0, 1)[None]
    return t


def psnr(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, per_image: bool = False) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB (peak 1); the mean over the batch unless per_image."""
    x, y = _batch(a), _batch(b)
    mse = ((x - y) ** 2).flatten(1).mean(dim=1).clamp_min(1e-10)
    values = -10.0 * torch.log10(mse)
    return values if per_image else values.mean()


def _window(size: int, sigma: float, channels: int, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, per_image: bool = False,
         window_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity (differentiable); the mean over the batch unless per_image."""
    x, y = _batch(a), _batch(b)
    channels = x.shape[1]
    size = min(window_size, x.shape[-2], x.shape[-1])
    size = size if size % 2 == 1 else size - 1
    window = _window(size, sigma, channels, x.device, x.dtype)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=channels)

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    values = ssim_map.flatten(1).mean(dim=1)
    return values if per_image else values.mean()
