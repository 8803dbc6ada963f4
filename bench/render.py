"""Benchmark: our CPU rasteriser against gsplat's pure-PyTorch reference path, same scenes and views, one run.

The reference path is gsplat's `_fully_fused_projection` + `_spherical_harmonics` (gsplat.cuda._torch_impl)
followed by the brute-force front-to-back compositor of tests/reference_render.py (gsplat's own pixel
compositing reference needs CUDA). Also times a 1.5M-Gaussian synthetic scene at 1920x1080 and reports its
peak memory, measured in a child process so nothing else is counted.

    python bench/render.py [--size 512] [--views 2] [--scenes N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.timing import best_of  # noqa: E402

import torch  # noqa: E402

from exgs_core.camera import orbit_cameras  # noqa: E402
from exgs_core.io import read_scene  # noqa: E402
from exgs_core.render import render  # noqa: E402
from tests.conftest import real_scene_paths  # noqa: E402
from tests.reference_render import reference_render  # noqa: E402


def compare_on_scenes(size: int, n_views: int, max_scenes: int | None) -> None:
    paths = real_scene_paths()[:max_scenes]
    print(f"CPU backend vs gsplat pure-PyTorch reference path, {size}x{size}, {n_views} views per scene, "
          f"torch threads {torch.get_num_threads()}")
    print("| scene | Gaussians | ours ms/frame | reference ms/frame | speed-up |")
    print("|---|---:|---:|---:|---:|")
    ratios = []
    for path in paths:
        scene = read_scene(path)
        cameras = orbit_cameras(scene.means, n_views, size, size, up="+z", opacities=scene.opacities())
        render(scene, cameras[0], backend="torch")  # compile / warm up
        ours = sum(best_of(lambda c=c: render(scene, c, backend="torch"), 3) for c in cameras) / n_views
        ref = sum(best_of(lambda c=c: reference_render(scene, c), 1) for c in cameras) / n_views
        ratios.append(ref / ours)
        name = path.parent.name if path.name == "meta.json" else path.name
        print(f"| {name} | {len(scene):,} | {ours * 1e3:.0f} | {ref * 1e3:.0f} | {ref / ours:.1f}x |")
    geo = 1.0
    for r in ratios:
        geo *= r
    print(f"geometric-mean speed-up: {geo ** (1 / len(ratios)):.1f}x over {len(ratios)} scenes")


LARGE_SCENE_CHILD = """
import resource, sys, time
sys.path.insert(0, {root!r})
from exgs_core.camera import orbit_cameras
from exgs_core.io import read_scene
from exgs_core.render import render
from exgs_core.synthetic import tile_scene
scene = tile_scene(read_scene({source!r}), 1_500_000)
camera = orbit_cameras(scene.means, 1, 1920, 1080, up="-y", opacities=scene.opacities())[0]
render(scene, camera, backend="torch")
start = time.perf_counter()
out = render(scene, camera, backend="torch")
elapsed = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
print(f"{{len(scene)}} {{elapsed:.2f}} {{peak:.2f}} {{float(out.alpha.mean()):.3f}}")
"""


def large_scene() -> None:
    source = ROOT.parent / "shared" / "data" / "scenes" / "splats_plant.splat"
    code = LARGE_SCENE_CHILD.format(root=str(ROOT), source=str(source))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    count, seconds, peak_gib, coverage = result.stdout.split()
    print(f"1.5M Gaussians (splats_plant tiled) at 1920x1080: {float(seconds):.2f} s/frame, "
          f"peak memory {float(peak_gib):.2f} GiB (whole process, scene included), coverage {coverage}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--scenes", type=int, default=None, help="only the first N scenes")
    parser.add_argument("--skip-large", action="store_true")
    args = parser.parse_args()
    compare_on_scenes(args.size, args.views, args.scenes)
    if not args.skip_large:
        large_scene()


if __name__ == "__main__":
    main()
