"""GaussianScene: the in-memory 3DGS scene every other part of exgs works on.

Parameters are stored as in the INRIA .ply (the convention of every trainer): means, quaternions (w, x, y, z;
not necessarily unit length, as real files hold them), log-scales, opacity logits (may be +inf), and SH
coefficients (N, K, 3) with K = (degree+1)^2, coefficient 0 being the DC term (f_dc).
Arrays are numpy float32 so the scene works inside Blender without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from exgs_core.sh import f_rest_name, num_sh_bases, rotate_sh, sh0_to_rgb, sh_degree_for_bases


# Gaussians per step of the per-Gaussian computations that make float64 or several temporaries: they stay a
# few tens of MB whatever the scene's size (a 10M-Gaussian scene is 2.4 GB at SH degree 3), with the same values.
CHUNK = 1 << 18


@dataclass
class GaussianScene:
    means: np.ndarray  # (N, 3)
    quats: np.ndarray  # (N, 4) w, x, y, z
    log_scales: np.ndarray  # (N, 3)
    opacity_logits: np.ndarray  # (N,)
    sh: np.ndarray  # (N, K, 3)
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.means = np.ascontiguousarray(self.means, dtype=np.float32)
        self.quats = np.ascontiguousarray(self.quats, dtype=np.float32)
        self.log_scales = np.ascontiguousarray(self.log_scales, dtype=np.float32)
        self.opacity_logits = np.ascontiguousarray(self.opacity_logits, dtype=np.float32).reshape(-1)
        self.sh = np.ascontiguousarray(self.sh, dtype=np.float32)
        n = self.means.shape[0]
        expected = {
            "means": (self.means, (n, 3)),
            "quats": (self.quats, (n, 4)),
            "log_scales": (self.log_scales, (n, 3)),
            "opacity_logits": (self.opacity_logits, (n,)),
        }
        for name, (array, shape) in expected.items():
            if array.shape != shape:
                raise ValueError(f"GaussianScene.{name} has shape {array.shape}, expected {shape}")
        if self.sh.ndim != 3 or self.sh.shape[0] != n or self.sh.shape[2] != 3:
            raise ValueError(f"GaussianScene.sh has shape {self.sh.shape}, expected ({n}, K, 3)")
        sh_degree_for_bases(self.sh.shape[1])

    # --- basic facts -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int:
        return sh_degree_for_bases(self.sh.shape[1])

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned bounding box of the means (min, max)."""
        return self.means.min(axis=0), self.means.max(axis=0)

    # --- activations ---------------------------------------------------------------------------
    def opacities(self) -> np.ndarray:
        """sigmoid(logit) in [0, 1]; +inf gives 1, -inf gives 0, without overflow warnings.

        Computed in float64 a chunk at a time, so the temporaries stay small on scenes of millions."""
        out = np.empty(len(self), np.float32)
        for start in range(0, len(self), CHUNK):
            logits = self.opacity_logits[start:start + CHUNK].astype(np.float64)
            part = np.empty_like(logits)
            positive = logits >= 0
            part[positive] = 1.0 / (1.0 + np.exp(-logits[positive]))
            exp_neg = np.exp(logits[~positive])
            part[~positive] = exp_neg / (1.0 + exp_neg)
            out[start:start + CHUNK] = part
        return out

    def scales(self) -> np.ndarray:
        return np.exp(self.log_scales)

    def unit_quats(self) -> np.ndarray:
        """Normalised quaternions; a zero quaternion becomes the identity rotation (a chunk at a time)."""
        out = np.empty((len(self), 4), np.float32)
        for start in range(0, len(self), CHUNK):
            quats = self.quats[start:start + CHUNK]
            norms = np.linalg.norm(quats, axis=1, keepdims=True)
            unit = quats / np.maximum(norms, 1e-12)
            unit[norms[:, 0] < 1e-12] = (1.0, 0.0, 0.0, 0.0)
            out[start:start + CHUNK] = unit
        return out

    def base_colors(self) -> np.ndarray:
        """View-independent RGB (the DC term), clamped to [0, 1]."""
        return np.clip(sh0_to_rgb(self.sh[:, 0, :]), 0.0, 1.0)

    # --- editing ---------------------------------------------------------------------------------
    def subset(self, index: np.ndarray | Sequence[int] | slice) -> "GaussianScene":
        """The Gaussians selected by a boolean mask, an index array or a slice."""
        if not isinstance(index, slice):
            index = np.asarray(index)
        return GaussianScene(
            self.means[index],
            self.quats[index],
            self.log_scales[index],
            self.opacity_logits[index],
            self.sh[index],
            dict(self.metadata),
        )

    def with_sh_degree(self, degree: int) -> "GaussianScene":
        """The same scene with SH bands above `degree` dropped, or zero bands added up to it."""
        k = num_sh_bases(degree)
        if k <= self.sh.shape[1]:
            sh = self.sh[:, :k, :]
        else:
            sh = np.zeros((len(self), k, 3), np.float32)
            sh[:, : self.sh.shape[1]] = self.sh
        return GaussianScene(self.means, self.quats, self.log_scales, self.opacity_logits, sh, dict(self.metadata))

    @staticmethod
    def concatenate(scenes: Iterable["GaussianScene"]) -> "GaussianScene":
        """One scene holding all Gaussians; SH is padded with zeros to the highest degree among them."""
        scenes = list(scenes)
        if not scenes:
            raise ValueError("concatenate needs at least one scene")
        degree = max(s.sh_degree for s in scenes)
        padded = [s.with_sh_degree(degree) for s in scenes]
        return GaussianScene(
            np.concatenate([s.means for s in padded]),
            np.concatenate([s.quats for s in padded]),
            np.concatenate([s.log_scales for s in padded]),
            np.concatenate([s.opacity_logits for s in padded]),
            np.concatenate([s.sh for s in padded]),
            dict(scenes[0].metadata),
        )

    def transformed(self, matrix: np.ndarray) -> "GaussianScene":
        """The scene under a 4x4 similarity transform (rotation, uniform scale, translation).

        Means, orientations and scales move with the transform, and the SH coefficients are rotated so that
        view-dependent colour follows the object.
        """
        rotation, scale, translation = decompose_similarity(matrix)
        means = (self.means.astype(np.float64) @ (scale * rotation).T + translation).astype(np.float32)
        quats = quat_multiply(rotation_to_quat(rotation)[None, :], self.unit_quats())
        log_scales = self.log_scales + np.float32(np.log(scale))
        sh = rotate_sh(self.sh, rotation) if self.sh_degree > 0 else self.sh.copy()
        return GaussianScene(means, quats, log_scales, self.opacity_logits.copy(), sh, dict(self.metadata))


@dataclass
class SplitScene:
    """A scene whose higher SH coefficients are loose columns, so that whatever copies the scene elsewhere can
    let each column go as soon as it is copied (take, take_coefficient). They are 82% of an SH-3 scene: a 10M
    Gaussian import into Blender held all 1.8 GB of them beside Blender's own copy.

    `base` holds every Gaussian with its DC colour only (SH degree 0) and the scene's metadata. `rest` holds the
    INRIA .ply's f_rest_i columns by name, each (N,) float32, channel-major as in the file: f_rest_i is colour
    channel i // (K - 1) of SH coefficient 1 + i % (K - 1). io.read_split_scene reads a binary .ply, .spz,
    .compressed.ply, SOG and glTF into separate columns (to_fill); those of a whole scene (SplitScene.of) are views
    of its SH block.
    """

    base: GaussianScene
    rest: dict[str, np.ndarray]
    sh_degree: int = field(init=False)  # of the whole scene, however many columns were taken since

    def __post_init__(self) -> None:
        k = 1 + len(self.rest) // 3
        self.sh_degree = sh_degree_for_bases(k)
        if sorted(self.rest) != sorted(f"f_rest_{i}" for i in range(3 * (k - 1))):
            raise ValueError(f"SplitScene.rest holds {len(self.rest)} columns, not f_rest_0.. of one SH degree")

    @staticmethod
    def of(scene: "GaussianScene | SplitScene") -> "SplitScene":
        """`scene` split without copying its SH (the columns are views of it); a SplitScene as it is."""
        if isinstance(scene, SplitScene):
            return scene
        base = GaussianScene(scene.means, scene.quats, scene.log_scales, scene.opacity_logits, scene.sh[:, :1],
                             scene.metadata)
        return SplitScene(base, _rest_views(scene.sh))

    @staticmethod
    def to_fill(base: GaussianScene, num_bases: int,
                split: bool) -> "tuple[GaussianScene | SplitScene, dict[str, np.ndarray]]":
        """For a reader that decodes the SH coefficients one f_rest column at a time: `base` (its SH the DC term
        only) with room for `num_bases` coefficients, and the empty f_rest columns to fill, by name. When `split`,
        a SplitScene whose columns are separate arrays (each goes once taken, and no (N, K, 3) block is ever
        made); else a GaussianScene whose columns are views of its SH block (read_scene's scene, the same values)."""
        count = len(base)
        if split:
            rest = {f_rest_name(channel, coefficient, num_bases): np.empty(count, np.float32)
                    for channel in range(3) for coefficient in range(1, num_bases)}
            return SplitScene(base, rest), rest
        if num_bases == base.sh.shape[1]:
            return base, {}
        sh = np.empty((count, num_bases, 3), np.float32)
        sh[:, :1] = base.sh
        whole = GaussianScene(base.means, base.quats, base.log_scales, base.opacity_logits, sh, base.metadata)
        return whole, _rest_views(sh)

    def __len__(self) -> int:
        return len(self.base)

    @property
    def metadata(self) -> dict:
        return self.base.metadata

    def take(self, name: str) -> np.ndarray:
        """The f_rest column `name` as a contiguous float32 array, no longer held here."""
        return np.ascontiguousarray(self.rest.pop(name), np.float32)

    def take_coefficient(self, coefficient: int) -> np.ndarray:
        """SH coefficient `coefficient` (1 <= coefficient < K) of every Gaussian, (N, 3) float32 as
        GaussianScene.sh[:, coefficient, :] holds it; its three columns are no longer held here."""
        k = num_sh_bases(self.sh_degree)
        out = np.empty((len(self), 3), np.float32)
        for channel in range(3):
            out[:, channel] = self.rest.pop(f_rest_name(channel, coefficient, k))
        return out


def _rest_views(sh: np.ndarray) -> dict[str, np.ndarray]:
    """The f_rest columns of an SH block (N, K, 3) by name, as views of it."""
    k = sh.shape[1]
    return {f_rest_name(channel, coefficient, k): sh[:, coefficient, channel]
            for channel in range(3) for coefficient in range(1, k)}


def decompose_similarity(matrix: np.ndarray, tolerance: float = 1e-4) -> tuple[np.ndarray, float, np.ndarray]:
    """Split a 4x4 similarity into (rotation 3x3, uniform scale, translation); ValueError if it is not one."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise ValueError("transform must be a finite 4x4 matrix")
    if not np.allclose(matrix[3], (0.0, 0.0, 0.0, 1.0), atol=tolerance):
        raise ValueError("transform has a projective part; only similarity transforms are supported")
    linear = matrix[:3, :3]
    det = np.linalg.det(linear)
    if det <= 0:
        raise ValueError("transform mirrors or collapses space; only rotations with uniform scale are supported")
    scale = float(np.cbrt(det))
    rotation = linear / scale
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=tolerance * 10):
        raise ValueError("transform has non-uniform scale or shear; only similarity transforms are supported")
    return rotation, scale, matrix[:3, 3].copy()


def rotation_to_quat(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) of a 3x3 rotation matrix (Shepperd's method, stable for all angles)."""
    r = np.asarray(rotation, dtype=np.float64)
    trace = np.trace(r)
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(r)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + r[i, i] - r[j, j] - r[k, k])
        q = [0.0, 0.0, 0.0, 0.0]
        q[0] = (r[k, j] - r[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (r[j, i] + r[i, j]) / s
        q[1 + k] = (r[k, i] + r[i, k]) / s
    q = np.array(q)
    return q / np.linalg.norm(q)


def quat_to_rotation(quats: np.ndarray) -> np.ndarray:
    """Rotation matrices (N, 3, 3) of quaternions (N, 4) w, x, y, z (normalised first)."""
    q = quats / np.maximum(np.linalg.norm(quats, axis=-1, keepdims=True), 1e-12)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        axis=-1,
    ).reshape(q.shape[:-1] + (3, 3))


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b of quaternions (..., 4) in w, x, y, z order."""
    aw, ax, ay, az = np.moveaxis(np.asarray(a, dtype=np.float64), -1, 0)
    bw, bx, by, bz = np.moveaxis(np.asarray(b, dtype=np.float64), -1, 0)
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    ).astype(np.float32)
