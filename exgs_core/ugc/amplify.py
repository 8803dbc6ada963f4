"""Adaptive amplification: survivors grow to cover what was pruned around them.

Each kept Gaussian knows its voxel's prune ratio r = n_V / k_V (Gaussians per survivor). Scales grow by
r ** scale_power (capped at max_scale_gain) and opacity compounds as 1 - (1 - o) ** (r ** opacity_power),
the opacity of r overlapping copies when the power is 1. Powers of 0 switch either part off.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from exgs_core.scene import GaussianScene


@dataclass(frozen=True)
class Amplification:
    scale_power: float = 0.0
    opacity_power: float = 0.0
    max_scale_gain: float = 2.0

    @property
    def enabled(self) -> bool:
        return self.scale_power > 0 or self.opacity_power > 0


def amplify(scene: GaussianScene, prune_ratio: np.ndarray, settings: Amplification) -> GaussianScene:
    """A copy of `scene` (the kept Gaussians) with scales and opacities amplified by `prune_ratio` (K,)."""
    ratio = np.maximum(np.asarray(prune_ratio, dtype=np.float64), 1.0)
    out = scene.subset(slice(None))
    if settings.scale_power > 0:
        gain = np.minimum(ratio ** settings.scale_power, settings.max_scale_gain)
        out.log_scales = (scene.log_scales + np.log(gain)[:, None]).astype(np.float32)
    if settings.opacity_power > 0:
        exponent = ratio ** settings.opacity_power
        opacity = scene.opacities().astype(np.float64)
        amplified = 1.0 - (1.0 - opacity) ** exponent
        amplified = np.clip(amplified, 1e-7, 1.0 - 1e-7)
        logits = np.log(amplified / (1.0 - amplified))
        out.opacity_logits = np.where(np.isposinf(scene.opacity_logits), np.inf, logits).astype(np.float32)
    return out
