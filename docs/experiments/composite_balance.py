"""composite_forward of this tree against an earlier commit's, on the check renders of the crop that compress
chooses on (docs/results.md, "Scale" series 4): milliseconds a render, alternating the two kernels on the
same inputs in one process, and whether their outputs are equal bit for bit.

    python docs/experiments/composite_balance.py [--base 947eaa8] [--scene /tmp/scale/s1.5M.ply]

The scene: the SH-3 real tile scene tiled to 1.5M (by exgs_core.synthetic.tile_scene when --scene is absent);
the candidate: every other Gaussian of its 100k crop at SH degree 0; the views: compress's 8 check views.
Measured 2026-12-06 (base 947eaa8): 25.8 ms before, 17.5 ms after, 1.47x, equal.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from exgs_core.io import read_scene  # noqa: E402
from exgs_core.render import cpu_kernels, render  # noqa: E402
from exgs_core.render.rasterize import torch_single_threaded  # noqa: E402
from exgs_core.synthetic import tile_scene  # noqa: E402
from exgs_core.ugc.compress import _CheckViews, proxy_crop, scoring_cameras  # noqa: E402

SOURCE_SCENE = REPO.parent / "shared" / "data" / "scenes" / "gs3d_lod1_tile_0_0.5x.ply"


def base_kernels(commit: str):
    """The base commit's cpu_kernels module, compiled without numba's on-disk cache."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:exgs_core/render/cpu_kernels.py"],
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "base_cpu_kernels.py"
    path.write_text(source.replace("configure_numba_cache(__file__)", ""))
    spec = importlib.util.spec_from_file_location("base_cpu_kernels", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="947eaa8")
    parser.add_argument("--scene", type=Path)
    args = parser.parse_args()
    scene = read_scene(args.scene) if args.scene else tile_scene(read_scene(SOURCE_SCENE), 1_500_000)
    crop = scene.subset(proxy_crop(scene))
    candidate = crop.subset(np.arange(0, len(crop), 2)).with_sh_degree(0)
    cameras = _CheckViews(crop, scoring_cameras(crop, 24)).cameras
    inputs = []  # the arguments of each check render's compositing
    current = cpu_kernels.composite_forward
    cpu_kernels.composite_forward = lambda *a: inputs.append(a) or current(*a)
    with torch_single_threaded():
        for camera in cameras:
            render(candidate, camera, backend="torch")
    cpu_kernels.composite_forward = current
    base = base_kernels(args.base).composite_forward
    base(*inputs[0][:-1]), current(*inputs[0])  # compiled before timing
    seconds = {"base": 0.0, "this tree": 0.0}
    repeats = 5
    for _ in range(repeats):
        for arguments in inputs:
            start = time.perf_counter()
            before = base(*arguments[:-1])  # the base kernel had no n_workers argument
            seconds["base"] += time.perf_counter() - start
            start = time.perf_counter()
            after = current(*arguments)
            seconds["this tree"] += time.perf_counter() - start
            assert all(np.array_equal(a, b) for a, b in zip(before, after)), "the pixels differ"
    each = {name: 1000 * total / repeats / len(inputs) for name, total in seconds.items()}
    print(f"composite_forward per check render: base {each['base']:.1f} ms, this tree {each['this tree']:.1f} ms, "
          f"{each['base'] / each['this tree']:.2f}x; outputs equal bit for bit")


if __name__ == "__main__":
    main()
