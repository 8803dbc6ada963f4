"""render(scene, camera): RGB, alpha and expected depth, with gsplat's `rasterization` semantics.

Backends: "gsplat" (CUDA) when available, otherwise "torch", our CPU backend (torch projection and SH,
numba compositing). The torch backend is differentiable with respect to per-Gaussian colours and
opacities, which is what significance scoring needs.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import numba
import numpy as np
import torch

from exgs_core.render import cpu_kernels
from exgs_core.render.projection import (
    ALPHA_THRESHOLD, EPS2D, FAR_PLANE, NEAR_PLANE, TILE_SIZE, camera_matrices, covariances, intersect_tiles, project,
    tile_bins,
)
from exgs_core.scene import CHUNK
from exgs_core.sh import evaluate_sh

BACKENDS = ("auto", "torch", "gsplat")


@dataclass
class RenderOutput:
    rgb: torch.Tensor  # (H, W, 3) display-referred colours, background composited
    alpha: torch.Tensor  # (H, W) accumulated opacity
    depth: torch.Tensor  # (H, W) expected depth (camera z), 0 where nothing was hit
    coverage: torch.Tensor | None = None  # (H, W, K): what each of render()'s `groups` adds to alpha


def resolve_backend(backend: str = "auto") -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown render backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "gsplat" if gsplat_available() else "torch"
    if backend == "gsplat" and not gsplat_available():
        raise RuntimeError("the gsplat backend needs CUDA and the gsplat package; use --backend torch on this machine")
    return backend


@contextmanager
def torch_single_threaded() -> Iterator[None]:
    """torch on one thread for the duration. On the CPU backend torch's work is glue between numba kernels (which
    have their own threads); with two threads its small per-chunk ops spin more than they gain: 1.5M Gaussians
    at 1080p took 15.7 s CPU for 2 frames with 2 threads and 4.9 s with one (same pixels)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def gsplat_available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


def render(scene, camera, background: Sequence[float] = (0.0, 0.0, 0.0), sh_degree: int | None = None,
           backend: str = "auto", groups: Sequence[tuple[int, int]] = ()) -> RenderOutput:
    """Render a GaussianScene from a Camera (OpenCV convention); tensors are on the CPU.

    `groups`: Gaussian index ranges [start, stop) (e.g. the objects of a concatenated scene). RenderOutput.coverage
    then holds, per range, the opacity its Gaussians add to each pixel (the sum of alpha_i T_i over them, so
    what it shows behind whatever is in front of it; ranges covering the scene sum to alpha), from the same
    compositing pass as the colours.
    """
    degree = scene.sh_degree if sh_degree is None else min(sh_degree, scene.sh_degree)
    params = scene_tensors(scene)
    membership = group_membership(len(scene), groups)
    if resolve_backend(backend) == "gsplat":
        return _render_gsplat(params, camera, background, degree, membership)
    with torch_single_threaded():
        colors = view_colors(params["means"], params["sh"], camera, degree)
        if membership is None:
            return rasterize(params["means"], params["quats"], params["scales"], params["opacities"], colors, camera,
                             background)
        out = rasterize(params["means"], params["quats"], params["scales"], params["opacities"],
                        torch.cat([colors, membership], dim=1), camera, background)
    return RenderOutput(out.rgb[..., :3], out.alpha, out.depth, out.rgb[..., 3:])


def render_views(scene, cameras: Sequence, background: Sequence[float] = (0.0, 0.0, 0.0),
                 backend: str = "auto") -> Iterator[RenderOutput]:
    """render(scene, camera) for each of `cameras`, the same pixels, with the scene's activated parameters and
    covariances computed once instead of per view: compress's check views (8 views of 44k Gaussians at 192 px)
    took 0.20-0.27 s instead of 0.35 s."""
    if resolve_backend(backend) == "gsplat":
        for camera in cameras:
            yield render(scene, camera, background, backend="gsplat")
        return
    params = scene_tensors(scene)
    with torch_single_threaded():  # chunked as project_visible chunks them: the same values
        covars = torch.cat([covariances(params["quats"][start:start + CHUNK], params["scales"][start:start + CHUNK])
                            for start in range(0, max(len(scene), 1), CHUNK)])
    del params["quats"], params["scales"]
    for camera in cameras:
        with torch_single_threaded():
            colors = view_colors(params["means"], params["sh"], camera, scene.sh_degree)
            out = rasterize(params["means"], None, None, params["opacities"], colors, camera, background, covars)
        yield out


def group_membership(count: int, groups: Sequence[tuple[int, int]]) -> torch.Tensor | None:
    """(count, K) float32: 1 where Gaussian i is in range k, else 0; None without groups."""
    if not groups:
        return None
    membership = torch.zeros(count, len(groups), dtype=torch.float32)
    for k, (start, stop) in enumerate(groups):
        if not 0 <= start <= stop <= count:
            raise ValueError(f"group {k} [{start}, {stop}) is outside the scene's {count} Gaussians")
        membership[start:stop, k] = 1.0
    return membership


def scene_tensors(scene) -> dict[str, torch.Tensor]:
    """Activated parameters as float32 tensors: means, unit quats, scales, opacities, sh."""
    return {
        "means": torch.from_numpy(scene.means),
        "quats": torch.from_numpy(scene.unit_quats()),
        "scales": torch.from_numpy(scene.scales()),
        "opacities": torch.from_numpy(scene.opacities()),
        "sh": torch.from_numpy(scene.sh),
    }


def view_colors(means: torch.Tensor, sh: torch.Tensor, camera, degree: int) -> torch.Tensor:
    """RGB per Gaussian seen from the camera: SH + 0.5 clamped at 0 (gsplat's rule)."""
    position = torch.as_tensor(camera.position, dtype=means.dtype)
    out = torch.empty(means.shape[0], 3, dtype=means.dtype)
    for start in range(0, means.shape[0], CHUNK):  # evaluate_sh makes (n, K, 3) temporaries: 192 B/G at SH 3
        stop = start + CHUNK
        dirs = torch.nn.functional.normalize(means[start:stop] - position, p=2, dim=-1)
        out[start:stop] = torch.clamp_min(evaluate_sh(sh[start:stop], dirs, degree) + 0.5, 0.0)
    return out


def rasterize(means: torch.Tensor, quats: torch.Tensor | None, scales: torch.Tensor | None, opacities: torch.Tensor,
              colors: torch.Tensor, camera, background: Sequence[float] = (0.0, 0.0, 0.0),
              covars: torch.Tensor | None = None) -> RenderOutput:
    """Composite Gaussians with per-Gaussian `colors` (N, C>=1) on the CPU (geometry from `covars` when given,
    otherwise from `quats` and `scales`).

    Differentiable with respect to `colors` and `opacities`; geometry is treated as constant.
    Returns every channel as rgb (the background composited into the first three), alpha and expected depth.
    """
    width, height = int(camera.width), int(camera.height)
    with torch.no_grad():
        if covars is None:
            quats, scales = quats.detach(), scales.detach()
        visible, means2d, conics, depths, radii = project_visible(means.detach(), opacities.detach(), camera,
                                                                  quats, scales, covars)
        isects = intersect_tiles(means2d, radii, depths, width, height)
        isects.isect_ids = None  # the sort keys: compositing needs the order only (8 B per intersection)
        del radii

    channels = torch.cat([colors[visible], depths[:, None]], dim=-1)
    del depths
    accumulated, final_t = _Composite.apply(means2d, conics, opacities[visible], channels, isects, width, height)
    alpha = 1.0 - final_t
    bg = torch.zeros(colors.shape[1], dtype=torch.float32)
    shown = min(3, colors.shape[1])
    bg[:shown] = torch.as_tensor(background, dtype=torch.float32)[:shown]
    color_channels = accumulated[..., : colors.shape[1]] + final_t[..., None] * bg
    depth = accumulated[..., -1] / alpha.clamp(min=1e-10)
    return RenderOutput(rgb=color_channels, alpha=alpha, depth=depth)


def project_visible(means: torch.Tensor, opacities: torch.Tensor, camera, quats: torch.Tensor | None = None,
                    scales: torch.Tensor | None = None, covars: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, ...]:
    """(indices, means2d, conics, depths, radii) of the Gaussians `camera` shows (radii > 0), projected a chunk
    at a time from `covars` or from `quats` and `scales`: the same values as one projection of the whole scene,
    without its (N, 3, 3) covariances and (N, ...) projections (about 100 B/Gaussian of temporaries)."""
    width, height = int(camera.width), int(camera.height)
    viewmat = torch.as_tensor(camera.world_to_camera, dtype=torch.float32)
    K = torch.as_tensor(camera.K, dtype=torch.float32)
    parts = []
    for start in range(0, max(len(means), 1), CHUNK):
        stop = start + CHUNK
        if covars is not None:
            cov = covars[start:stop]
        else:
            cov = covariances(quats[start:stop], scales[start:stop])
        proj = project(means[start:stop], cov, viewmat, K, width, height, opacities=opacities[start:stop])
        shown = torch.nonzero((proj.radii > 0).all(dim=-1)).squeeze(1)
        parts.append((shown + start, proj.means2d[shown], proj.conics[shown], proj.depths[shown], proj.radii[shown]))
    if len(parts) == 1:
        return parts[0]
    out = []
    for field in range(5):  # one field at a time, its parts freed as it is joined: not all of them twice
        out.append(torch.cat([part[field] for part in parts]))
        parts = [part[:field] + (None,) + part[field + 1:] for part in parts]
    return tuple(out)


class _Composite(torch.autograd.Function):
    """numba compositing as an autograd op: gradients flow to colours and opacities."""

    @staticmethod
    def forward(ctx, means2d, conics, opacities, channels, isects, width, height):
        arrays = _kernel_arrays(means2d, conics, opacities, channels, isects)
        out, final_t, last = cpu_kernels.composite_forward(*arrays, width, height, TILE_SIZE, isects.tiles_x,
                                                           numba.get_num_threads())
        ctx.saved = (arrays, width, height, isects.tiles_x, final_t, last)
        return torch.from_numpy(out), torch.from_numpy(final_t)

    @staticmethod
    def backward(ctx, grad_out, grad_final_t):
        arrays, width, height, tiles_x, final_t, last = ctx.saved
        grad_channels, grad_opacities = cpu_kernels.composite_backward(
            *arrays, width, height, TILE_SIZE, tiles_x, final_t, last,
            np.ascontiguousarray(grad_out.numpy(), dtype=np.float32),
            np.ascontiguousarray(grad_final_t.numpy(), dtype=np.float32),
            numba.get_num_threads(),
        )
        return (None, None, torch.from_numpy(grad_opacities), torch.from_numpy(grad_channels), None, None, None)


def _kernel_arrays(means2d, conics, opacities, channels, isects) -> tuple[np.ndarray, ...]:
    def as_numpy(t: torch.Tensor, dtype) -> np.ndarray:
        return np.ascontiguousarray(t.detach().numpy(), dtype=dtype)

    return (
        as_numpy(means2d, np.float32),
        as_numpy(conics, np.float32),
        as_numpy(opacities, np.float32),
        as_numpy(channels, np.float32),
        as_numpy(isects.flatten_ids, np.int64),
        as_numpy(isects.tile_offsets, np.int64),
    )


def _render_gsplat(params: dict[str, torch.Tensor], camera, background, degree: int,
                   membership: torch.Tensor | None = None) -> RenderOutput:
    """The same render through gsplat's CUDA rasteriser (coverage: a second pass with the memberships as
    colours, sh_degree None; not run on this project's CPU-only test machine)."""
    from gsplat import rasterization

    device = torch.device("cuda")
    p = {k: v.to(device) for k, v in params.items()}
    viewmat = torch.as_tensor(camera.world_to_camera, dtype=torch.float32, device=device)[None]
    K = torch.as_tensor(camera.K, dtype=torch.float32, device=device)[None]
    bg = torch.as_tensor(background, dtype=torch.float32, device=device)[None]
    colors, alphas, _ = rasterization(
        p["means"], p["quats"], p["scales"], p["opacities"], p["sh"][:, : (degree + 1) ** 2], viewmat, K,
        int(camera.width), int(camera.height), sh_degree=degree, backgrounds=bg, render_mode="RGB+ED",
        eps2d=0.3, near_plane=0.01, far_plane=1e10, packed=False, rasterize_mode="classic",
    )
    alpha = alphas[0, ..., 0].cpu()
    coverage = None
    if membership is not None:
        covered, _, _ = rasterization(
            p["means"], p["quats"], p["scales"], p["opacities"], membership.to(device), viewmat, K,
            int(camera.width), int(camera.height), sh_degree=None, render_mode="RGB",
            eps2d=0.3, near_plane=0.01, far_plane=1e10, packed=False, rasterize_mode="classic",
        )
        coverage = covered[0].cpu()
    return RenderOutput(rgb=colors[0, ..., :3].cpu(), alpha=alpha, depth=colors[0, ..., 3].cpu(), coverage=coverage)


class ViewScorer:
    """Per-Gaussian significance sums of one scene, one view after another (scoring, ugc.significance).

    means (N, 3), covars (N, 3, 3), opacities (N,), float32. A view's sums come from compiled kernels over the
    whole scene, without the render path's gathers of the visible Gaussians. The per-view buffers (the
    projection, 32 B per Gaussian; the intersections; the workers' sums, 8 B per Gaussian and thread) are
    made once and reused: written fresh, each view would spend as long in page faults as in projecting.
    """

    def __init__(self, means: np.ndarray, covars: np.ndarray, opacities: np.ndarray) -> None:
        n = len(means)
        self.means = np.ascontiguousarray(means, dtype=np.float32)
        self.covars = np.ascontiguousarray(covars, dtype=np.float32)
        self.opacities = np.ascontiguousarray(opacities, dtype=np.float32)
        self.sigma_cuts = cpu_kernels.sigma_cuts(self.opacities)
        self.means2d, self.conics = np.empty((n, 2), np.float32), np.empty((n, 3), np.float32)
        self.depths, self.radii = np.empty(n, np.float32), np.empty((n, 2), np.int32)
        self.intersections = np.empty(0, np.uint64)
        self.scores = np.empty((numba.get_num_threads(), n), np.float64)

    def sums(self, camera, by_alpha: bool = True) -> np.ndarray:
        """(N,) float64 over the view: per Gaussian, the sum of alpha*T (`by_alpha`) or of opacity*T over the
        pixels it contributes to; 0 for the Gaussians the view does not show. Valid until the next call.

        The alpha*T sums equal the gradient of a one-channel render of colour 1 with respect to the colours
        (tests check that), computed here in one forward traversal without a backward pass.
        """
        width, height = int(camera.width), int(camera.height)
        tiles_x, tiles_y = (width + TILE_SIZE - 1) // TILE_SIZE, (height + TILE_SIZE - 1) // TILE_SIZE
        cpu_kernels.project_gaussians_into(
            self.means, self.covars, *camera_matrices(camera), width, height, EPS2D, NEAR_PLANE, FAR_PLANE,
            self.opacities, ALPHA_THRESHOLD, self.means2d, self.conics, self.depths, self.radii)
        flatten_ids, tile_offsets, self.intersections = tile_bins(
            self.means2d, self.radii, self.depths.view(np.uint32), tiles_x, tiles_y, buffer=self.intersections)
        return cpu_kernels.composite_significance(self.means2d, self.conics, self.opacities, self.sigma_cuts,
                                                  flatten_ids, tile_offsets, width, height, TILE_SIZE, tiles_x,
                                                  by_alpha, self.scores)
