"""Global significance of each Gaussian over a set of scoring views (ExGS Eq. 7, unnormalised).

Two variants, both summed over every pixel of every view that the Gaussian reaches (alpha >= 1/255,
before the pixel saturates):
- "sigma_t": opacity * transmittance, the paper's sigma_j * T_j (LightGaussian without its volume term);
- "alpha_t": alpha * transmittance, the Gaussian's actual blend weight (= d(image sum)/d(colour)).
The 1/(M H W) normalisation of the paper does not change the ranking and is left out.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from exgs_core.render.projection import covariances
from exgs_core.render.rasterize import ViewScorer
from exgs_core.scene import CHUNK, GaussianScene

VARIANTS = ("alpha_t", "sigma_t")


def significance(scene: GaussianScene, cameras: Sequence, variant: str = "alpha_t",
                 on_view: Callable[[int], None] | None = None) -> np.ndarray:
    """(N,) float64 scores summed over `cameras`; `on_view(i)` is called after each view (progress, cancel)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown significance variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    means = np.ascontiguousarray(scene.means, dtype=np.float32)
    opacities = np.ascontiguousarray(scene.opacities(), dtype=np.float32)
    total = np.zeros(len(scene), dtype=np.float64)
    with torch.no_grad():
        covars = torch.empty(len(scene), 3, 3, dtype=torch.float32)
        for start in range(0, len(scene), CHUNK):  # the rotation matrices' temporaries stay small
            part = scene.subset(slice(start, start + CHUNK))
            covars[start:start + CHUNK] = covariances(torch.from_numpy(part.unit_quats()),
                                                      torch.from_numpy(part.scales()))
    scorer = ViewScorer(means, covars.numpy(), opacities)
    for index, camera in enumerate(cameras):
        # in view order; a Gaussian the view does not show adds 0.0, which changes no float
        total += scorer.sums(camera, by_alpha=variant == "alpha_t")
        if on_view is not None:
            on_view(index)
    return total
