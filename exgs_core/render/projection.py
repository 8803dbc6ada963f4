"""EWA projection of 3D Gaussians to the image plane, and their tile intersections.

Same maths as gsplat's `_fully_fused_projection` and `_isect_tiles` (pinhole camera), one numba pass per
Gaussian (float64 inside, so conics of thin Gaussians are a little more exact than gsplat's float32) and a
counting sort for the intersections; tests compare against those references. With `opacities` given, the
screen-space box is the opacity-aware one of gsplat's CUDA kernel (same pixels above the 1/255 alpha
threshold, fewer tiles).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import torch
import torch.nn.functional as F

from exgs_core.render import cpu_kernels

ALPHA_THRESHOLD = 1.0 / 255.0
TILE_SIZE = 16
EPS2D, NEAR_PLANE, FAR_PLANE = 0.3, 0.01, 1e10  # gsplat's defaults


@dataclass
class Projection:
    means2d: torch.Tensor  # (N, 2) pixel coordinates
    conics: torch.Tensor  # (N, 3) inverse 2D covariance (a, b, c) of [[a, b], [b, c]]
    depths: torch.Tensor  # (N,) camera-space z
    radii: torch.Tensor  # (N, 2) int32 box half-sizes in pixels; 0 = culled


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    w, x, y, z = torch.unbind(F.normalize(quats, p=2, dim=-1), dim=-1)
    rows = [
        1 - 2 * (y**2 + z**2), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x**2 + z**2), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x**2 + y**2),
    ]
    return torch.stack(rows, dim=-1).reshape(quats.shape[:-1] + (3, 3))


def covariances(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """World-space covariance R S S^T R^T, (N, 3, 3)."""
    m = quat_to_rotmat(quats) * scales[..., None, :]
    return torch.einsum("...ij,...kj->...ik", m, m)


def project(
    means: torch.Tensor,
    covars: torch.Tensor,
    viewmat: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    eps2d: float = EPS2D,
    near_plane: float = NEAR_PLANE,
    far_plane: float = FAR_PLANE,
    opacities: torch.Tensor | None = None,
) -> Projection:
    """Project Gaussians (N,3 means, N,3,3 covariances) through a pinhole camera (4x4 world-to-camera, 3x3 K).

    Computed per Gaussian by a numba kernel (float64 inside, float32 out); `project_reference` is the same
    maths as tensor operations, kept as the readable statement of it.
    """
    means2d, conics, depths, radii = cpu_kernels.project_gaussians(
        _as_array(means, (-1, 3)), _as_array(covars, (-1, 3, 3)), viewmat.detach().double().numpy(),
        K.detach().double().numpy(), width, height, eps2d, near_plane, far_plane,
        _as_array(opacities, (-1,)) if opacities is not None else np.zeros(0, np.float32), ALPHA_THRESHOLD,
    )
    return Projection(torch.from_numpy(means2d), torch.from_numpy(conics), torch.from_numpy(depths),
                      torch.from_numpy(radii))


def camera_matrices(camera) -> tuple[np.ndarray, np.ndarray]:
    """The camera's world-to-camera (4, 4) and K (3, 3) as project_gaussians takes them: float32 values (what
    project() is given by the render path) in float64 arrays."""
    return (np.asarray(camera.world_to_camera, dtype=np.float32).astype(np.float64),
            np.asarray(camera.K, dtype=np.float32).astype(np.float64))


def _as_array(t: torch.Tensor, shape: tuple[int, ...]) -> np.ndarray:
    return np.ascontiguousarray(t.detach().reshape(shape).numpy(), dtype=np.float32)


def project_reference(
    means: torch.Tensor,
    covars: torch.Tensor,
    viewmat: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    eps2d: float = EPS2D,
    near_plane: float = NEAR_PLANE,
    far_plane: float = FAR_PLANE,
    opacities: torch.Tensor | None = None,
) -> Projection:
    """project() as tensor operations, in gsplat's float32 order."""
    rotation, translation = viewmat[:3, :3], viewmat[:3, 3]
    means_c = means @ rotation.T + translation
    covars_c = torch.einsum("ij,njk,lk->nil", rotation, covars, rotation)
    means2d, covars2d = _perspective(means_c, covars_c, K, width, height)

    covars2d = covars2d + torch.eye(2, dtype=means.dtype) * eps2d
    det = (covars2d[:, 0, 0] * covars2d[:, 1, 1] - covars2d[:, 0, 1] * covars2d[:, 1, 0]).clamp(min=1e-10)
    conics = torch.stack(
        [covars2d[:, 1, 1] / det, -(covars2d[:, 0, 1] + covars2d[:, 1, 0]) / 2.0 / det, covars2d[:, 0, 0] / det],
        dim=-1,
    )
    depths = means_c[:, 2]

    extend = torch.full_like(depths, 3.33)
    if opacities is not None:
        ratio = (opacities / ALPHA_THRESHOLD).clamp(min=1.0)
        extend = torch.minimum(extend, torch.sqrt(2.0 * torch.log(ratio)))
        extend = torch.where(opacities < ALPHA_THRESHOLD, torch.zeros_like(extend), extend)
    radius = torch.stack(
        [torch.ceil(extend * torch.sqrt(covars2d[:, 0, 0])), torch.ceil(extend * torch.sqrt(covars2d[:, 1, 1]))],
        dim=-1,
    )
    valid = (det > 0) & (depths > near_plane) & (depths < far_plane)
    inside = (
        (means2d[:, 0] + radius[:, 0] > 0)
        & (means2d[:, 0] - radius[:, 0] < width)
        & (means2d[:, 1] + radius[:, 1] > 0)
        & (means2d[:, 1] - radius[:, 1] < height)
    )
    radius = torch.where((valid & inside)[:, None], radius, torch.zeros_like(radius))
    radius = torch.nan_to_num(radius, nan=0.0, posinf=0.0)
    return Projection(means2d, conics, depths, radius.int())


def _perspective(
    means_c: torch.Tensor, covars_c: torch.Tensor, K: torch.Tensor, width: int, height: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pinhole projection of camera-space means and the EWA (local affine) covariance."""
    tx, ty, tz = torch.unbind(means_c, dim=-1)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    # Clamp far off-screen centres so their Jacobian does not explode (as gsplat does).
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    tx = tz * torch.clamp(tx / tz, min=-lim_x_neg, max=lim_x_pos)
    ty = tz * torch.clamp(ty / tz, min=-lim_y_neg, max=lim_y_pos)

    zero = torch.zeros_like(tz)
    jacobian = torch.stack([fx / tz, zero, -fx * tx / tz**2, zero, fy / tz, -fy * ty / tz**2], dim=-1)
    jacobian = jacobian.reshape(-1, 2, 3)
    covars2d = torch.einsum("nij,njk,nlk->nil", jacobian, covars_c, jacobian)
    means2d = (means_c @ K[:2, :3].T) / means_c[:, 2:3]
    return means2d, covars2d


@dataclass
class TileIntersections:
    isect_ids: torch.Tensor  # (M,) int64 sorted keys: tile_id << 32 | depth bits
    flatten_ids: torch.Tensor  # (M,) int64 Gaussian index per intersection, front to back within a tile
    tile_offsets: torch.Tensor  # (tiles + 1,) int64 start of each tile's run in flatten_ids
    tiles_x: int
    tiles_y: int


@torch.no_grad()
def intersect_tiles(
    means2d: torch.Tensor, radii: torch.Tensor, depths: torch.Tensor, width: int, height: int,
    tile_size: int = TILE_SIZE,
) -> TileIntersections:
    """Every (tile, Gaussian) pair whose box overlaps the tile, sorted by tile then depth (gsplat's keys), equal
    keys in index order (as one stable sort of the keys would give)."""
    tiles_x, tiles_y = (width + tile_size - 1) // tile_size, (height + tile_size - 1) // tile_size
    depth_bits = np.ascontiguousarray(depths.numpy(), dtype=np.float32).view(np.uint32)
    flatten_ids, tile_offsets, _ = tile_bins(means2d.numpy(), radii.numpy(), depth_bits, tiles_x, tiles_y, tile_size)
    isect_ids = np.repeat(np.arange(tiles_x * tiles_y, dtype=np.int64) << 32, np.diff(tile_offsets))
    isect_ids |= depth_bits[flatten_ids]  # (the render path drops these keys: their temporaries stay small)
    return TileIntersections(torch.from_numpy(isect_ids), torch.from_numpy(flatten_ids), torch.from_numpy(tile_offsets),
                             tiles_x, tiles_y)


def tile_bins(means2d: np.ndarray, radii: np.ndarray, depth_bits: np.ndarray, tiles_x: int, tiles_y: int,
              tile_size: int = TILE_SIZE, buffer: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flatten_ids (M,) int64, tile_offsets (tiles + 1,) int64, the uint64 buffer holding flatten_ids): the
    Gaussians of each tile front to back.

    means2d (N, 2) float32, radii (N, 2) int32 (0: culled), depth_bits (N,) uint32. The ids go in `buffer`
    when it holds them, else in a new array (with 25% to spare when a buffer was given: the caller reuses it).
    """
    means2d = np.ascontiguousarray(means2d, dtype=np.float32)
    radii = np.ascontiguousarray(radii, dtype=np.int32)
    chunks = 4 * numba.get_num_threads()  # a few per thread: even shares when culled Gaussians cluster
    tile_offsets, starts = cpu_kernels.count_tiles(means2d, radii, tiles_x, tiles_y, tile_size, chunks)
    count = int(tile_offsets[-1])
    if buffer is None:
        buffer = np.empty(count, np.uint64)
    elif len(buffer) < count:
        buffer = np.empty(count + count // 4, np.uint64)
    cpu_kernels.fill_tiles(means2d, radii, depth_bits, tiles_x, tiles_y, tile_size, tile_offsets, starts,
                           buffer[:count])
    return buffer[:count].view(np.int64), tile_offsets, buffer  # ids below 2^32: the same values as int64
