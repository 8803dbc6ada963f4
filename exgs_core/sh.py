"""Real spherical harmonics in the 3DGS / gsplat convention (degree 0 to 3).

The basis works on numpy arrays and on torch tensors alike, so the scene code (numpy, no torch in Blender)
and the rasteriser (torch) evaluate exactly the same polynomials. Constants and index order follow
gsplat's `_eval_sh_bases_fast` (Sloan, "Efficient Spherical Harmonic Evaluation", JCGT 2013).
"""

from __future__ import annotations

from typing import Any

import numpy as np

SH_C0 = 0.28209479177387814
MAX_SH_DEGREE = 3


def num_sh_bases(degree: int) -> int:
    return (degree + 1) ** 2


def f_rest_name(channel: int, coefficient: int, num_bases: int) -> str:
    """The INRIA .ply property of SH coefficient `coefficient` (1..num_bases-1) of colour channel `channel`:
    f_rest is channel-major, all R coefficients, then G, then B."""
    return f"f_rest_{channel * (num_bases - 1) + coefficient - 1}"


def sh_degree_for_bases(num_bases: int) -> int:
    """Degree whose basis count is `num_bases` (1, 4, 9, 16); ValueError otherwise."""
    for degree in range(MAX_SH_DEGREE + 1):
        if num_sh_bases(degree) == num_bases:
            return degree
    raise ValueError(f"{num_bases} SH coefficients per channel is not a degree 0-3 layout")


def rgb_to_sh0(rgb: Any) -> Any:
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0: Any) -> Any:
    return sh0 * SH_C0 + 0.5


def sh_basis(dirs: Any, degree: int) -> Any:
    """SH basis at unit directions `dirs` (..., 3) -> (..., (degree+1)^2); numpy or torch in, same out."""
    x, y, z = dirs[..., 0], dirs[..., 1], dirs[..., 2]
    bases = [x * 0 + SH_C0]
    if degree >= 1:
        bases += [-0.48860251190292 * y, 0.48860251190292 * z, -0.48860251190292 * x]
    if degree >= 2:
        z2 = z * z
        c1, s1 = x * x - y * y, 2 * x * y
        bases += [
            0.5462742152960395 * s1,
            -1.092548430592079 * z * y,
            0.9461746957575601 * z2 - 0.3153915652525201,
            -1.092548430592079 * z * x,
            0.5462742152960395 * c1,
        ]
    if degree >= 3:
        c2, s2 = x * c1 - y * s1, x * s1 + y * c1
        tmp_c = -2.285228997322329 * z2 + 0.4570457994644658
        tmp_b = 1.445305721320277 * z
        bases += [
            -0.5900435899266435 * s2,
            tmp_b * s1,
            tmp_c * y,
            z * (1.865881662950577 * z2 - 1.119528997770346),
            tmp_c * x,
            tmp_b * c1,
            -0.5900435899266435 * c2,
        ]
    stack = np.stack if isinstance(dirs, np.ndarray) else _torch_stack
    return stack(bases, -1)


def _torch_stack(tensors: list, dim: int) -> Any:
    import torch

    return torch.stack(tensors, dim)


def evaluate_sh(sh: Any, dirs: Any, degree: int) -> Any:
    """Colour offsets (..., 3) from coefficients `sh` (..., K, 3) at unit directions `dirs` (..., 3).

    Uses the first (degree+1)^2 coefficients; add 0.5 and clamp at 0 for the rendered colour.
    """
    basis = sh_basis(dirs, degree)
    return (basis[..., None] * sh[..., : num_sh_bases(degree), :]).sum(-2)


def sh_rotation_matrices(rotation: np.ndarray, degree: int) -> list[np.ndarray]:
    """Per band l = 1..degree, the (2l+1)x(2l+1) matrix X with X @ c_l = coefficients of the rotated function.

    After rotating an object by `rotation` (3x3), its colour seen along world direction d is the old colour
    along R^T d. Each SH band is closed under rotation, so Y_l(R^T d) = X^T Y_l(d); X is solved exactly by
    least squares on a handful of directions (cheaper to maintain than closed-form Wigner matrices).
    """
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(64, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    basis = sh_basis(dirs, degree)
    basis_rotated = sh_basis(dirs @ rotation, degree)  # rows are R^T d
    matrices = []
    for band in range(1, degree + 1):
        lo, hi = num_sh_bases(band - 1), num_sh_bases(band)
        solution, *_ = np.linalg.lstsq(basis[:, lo:hi], basis_rotated[:, lo:hi], rcond=None)
        matrices.append(solution)
    return matrices


def rotate_sh(sh: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Rotate SH coefficients (N, K, 3) by a 3x3 rotation so view-dependent colour follows the object."""
    degree = sh_degree_for_bases(sh.shape[1])
    out = sh.copy()
    for band, matrix in enumerate(sh_rotation_matrices(rotation.astype(np.float64), degree), start=1):
        lo, hi = num_sh_bases(band - 1), num_sh_bases(band)
        out[:, lo:hi, :] = np.einsum("km,nmc->nkc", matrix, sh[:, lo:hi, :].astype(np.float64))
    return out.astype(sh.dtype)
