"""The test oracle: gsplat's pure-PyTorch projection and SH, composited by brute force.

gsplat's own pixel compositing reference needs CUDA, so every Gaussian is paired here with the pixels inside
its screen-space box (3.33 sigma: outside it alpha < 1/255, so nothing is lost) and each pixel composites its
Gaussians front to back with gsplat's rules, in float64.
"""

from __future__ import annotations

import torch
from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci, _spherical_harmonics


def reference_render(scene, camera, background=(0.0, 0.0, 0.0), rows_per_chunk: int = 32, opacities=None,
                     colors=None):
    """rgb, alpha, depth of `scene`; `opacities` (N,) and `colors` (N, 3) may be given, e.g. to take gradients."""
    means = torch.from_numpy(scene.means)
    quats = torch.from_numpy(scene.quats)  # gsplat normalises them itself
    scales = torch.from_numpy(scene.scales())
    if opacities is None:
        opacities = torch.from_numpy(scene.opacities())
    viewmat = torch.as_tensor(camera.world_to_camera, dtype=torch.float32)
    K = torch.as_tensor(camera.K, dtype=torch.float32)
    W, H = int(camera.width), int(camera.height)

    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(means, covars, viewmat[None], K[None], W, H)
    radii, means2d, depths, conics = radii[0], means2d[0], depths[0], conics[0]
    dirs = means - torch.linalg.inv(viewmat)[:3, 3]
    if colors is None:
        colors = torch.clamp_min(_spherical_harmonics(scene.sh_degree, dirs, torch.from_numpy(scene.sh)) + 0.5, 0.0)

    visible = (radii > 0).all(dim=-1)
    bands = []
    for y0 in range(0, H, rows_per_chunk):
        y1 = min(H, y0 + rows_per_chunk)
        bands.append(_composite_rows(y0, y1, W, visible, means2d, radii, depths, conics, opacities, colors))
    image = torch.cat(bands, dim=0)  # rgb, depth, transmittance
    rgb = image[..., :3] + image[..., 4:5] * torch.tensor(background, dtype=torch.float64)
    alpha = 1.0 - image[..., 4]
    depth = image[..., 3] / alpha.clamp(min=1e-10)
    return rgb.float(), alpha.float(), depth.float()


def _composite_rows(y0, y1, W, visible, means2d, radii, depths, conics, opacities, colors):
    # Each Gaussian with the pixels of these rows whose centres (+0.5) lie inside its box.
    lo, hi = means2d - radii, means2d + radii
    x0 = torch.ceil(lo[:, 0] - 0.5).clamp(min=0).long()
    x1 = torch.floor(hi[:, 0] - 0.5).clamp(max=W - 1).long()
    ya = torch.ceil(lo[:, 1] - 0.5).clamp(min=y0).long()
    yb = torch.floor(hi[:, 1] - 0.5).clamp(max=y1 - 1).long()
    nx, ny = (x1 - x0 + 1).clamp(min=0), (yb - ya + 1).clamp(min=0)
    counts = nx * ny * visible
    band = torch.zeros((y1 - y0) * W, 5, dtype=torch.float64)
    band[:, 4] = 1.0
    if counts.sum() == 0:
        return band.reshape(y1 - y0, W, 5)
    g = torch.repeat_interleave(torch.arange(len(counts)), counts)
    local = torch.arange(len(g)) - (torch.cumsum(counts, 0) - counts)[g]
    px, py = x0[g] + local % nx[g], ya[g] + local // nx[g]
    p = (py - y0) * W + px

    dx = means2d[g, 0] - (px + 0.5)
    dy = means2d[g, 1] - (py + 0.5)
    sigma = 0.5 * (conics[g, 0] * dx * dx + conics[g, 2] * dy * dy) + conics[g, 1] * dx * dy
    alpha = torch.clamp_max(opacities[g] * torch.exp(-sigma), 0.999)
    keep = (sigma >= 0) & (alpha >= 1.0 / 255.0)
    g, p, alpha = g[keep], p[keep], alpha[keep].double()

    # Front to back per pixel; a pixel stops before the Gaussian that takes transmittance to 1e-4 or below.
    by_depth = torch.argsort(depths[g], stable=True)
    g, p, alpha = g[by_depth], p[by_depth], alpha[by_depth]
    by_pixel = torch.argsort(p, stable=True)
    g, p, alpha = g[by_pixel], p[by_pixel], alpha[by_pixel]
    log_t = torch.log1p(-alpha)
    cumulative = torch.cumsum(log_t, 0)
    segment_start = torch.searchsorted(p, p, right=False)
    before = torch.where(segment_start > 0, cumulative[segment_start - 1], torch.zeros_like(cumulative))
    t_after = torch.exp(cumulative - before)
    t_before = t_after / (1.0 - alpha)
    kept = t_after > 1e-4
    weight = torch.where(kept, alpha * t_before, torch.zeros_like(alpha))

    values = torch.cat([colors[g].double(), depths[g, None].double()], dim=-1) * weight[:, None]
    accumulated = torch.zeros((y1 - y0) * W, 4, dtype=torch.float64).index_add(0, p, values)
    final_t = torch.ones((y1 - y0) * W, dtype=torch.float64).scatter_reduce(
        0, p, torch.where(kept, t_after, torch.ones_like(t_after)), reduce="amin"
    )
    return torch.cat([accumulated, final_t[:, None]], dim=-1).reshape(y1 - y0, W, 5)
