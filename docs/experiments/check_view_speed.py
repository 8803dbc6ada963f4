"""Seconds per check-view error call (compress's _CheckViews.error: 8 views at 192 px) on the crop of a large
scene, for a random 44% of the crop at SH 0 (what the searches render at 100x), and a profile of where they go
(scale_log.md, series 6):

    python docs/experiments/check_view_speed.py big.ply
"""

import cProfile
import pstats
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from exgs_core.io import read_scene  # noqa: E402
from exgs_core.render.rasterize import torch_single_threaded  # noqa: E402
from exgs_core.ugc import compress as C  # noqa: E402


def main() -> None:
    scene = read_scene(sys.argv[1])
    proxy = scene.subset(C.proxy_crop(scene))
    checks = C._CheckViews(proxy, C.scoring_cameras(proxy, 24))
    keep = np.sort(np.random.default_rng(0).choice(len(proxy), int(0.44 * len(proxy)), replace=False))
    candidate = proxy.subset(keep).with_sh_degree(0)
    with torch_single_threaded():
        checks.error(candidate)  # the references, and numba's kernels loaded
        start = time.perf_counter()
        for _ in range(5):
            error = checks.error(candidate)
        print(f"{(time.perf_counter() - start) / 5:.3f} s per error call (error {error:.6f})")
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(5):
            checks.error(candidate)
        profile.disable()
    pstats.Stats(profile).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
