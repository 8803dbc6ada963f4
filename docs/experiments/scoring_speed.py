"""Significance scoring speed and memory: this tree against an earlier commit, same scene and views, same run.

    python docs/experiments/scoring_speed.py [--scene /tmp/scoring_1.5M.ply] [--count 1500000] [--base dba506e]

The scene is the SH-3 real tile scene tiled to `--count` Gaussians (written first if `--scene` is absent).
Each tree scores in its own process (`--rounds` times each, alternating, the best time kept: the machine is
shared), after a warm-up that compiles its kernels; it reports seconds per view, the process's resident
memory before scoring and its peak, and the scores, which must be equal bit for bit.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCE_SCENE = REPO.parent / "shared" / "data" / "scenes" / "gs3d_lod1_tile_0_0.5x.ply"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", type=Path, default=Path("/tmp/scoring_1.5M.ply"))
    parser.add_argument("--count", type=int, default=1_500_000, help="Gaussians, when the scene is written")
    parser.add_argument("--base", default="dba506e", help="the commit to compare with")
    parser.add_argument("--views", type=int, default=6, help="the first views of the 24 scoring views")
    parser.add_argument("--variant", default="alpha_t")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)  # internal: score, save the scores here
    args = parser.parse_args()
    if args.worker:
        score(args.scene, args.views, args.variant, args.worker)
        return
    if not args.scene.exists():
        sys.path.insert(0, str(REPO))
        from exgs_core.io import read_scene
        from exgs_core.synthetic import write_tiled_ply

        write_tiled_ply(read_scene(SOURCE_SCENE), args.count, args.scene)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        base.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.base], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive.stdout, check=True)
        trees = {f"old ({args.base})": base, "new (this tree)": REPO}
        results: dict[str, list[dict]] = {name: [] for name in trees}
        for _ in range(args.rounds):
            for k, (name, tree) in enumerate(trees.items()):
                out = Path(tmp) / f"scores_{k}.npy"
                done = subprocess.run(
                    [sys.executable, str(Path(__file__).resolve()), "--worker", str(out), "--scene", str(args.scene),
                     "--views", str(args.views), "--variant", args.variant],
                    cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, check=True, capture_output=True, text=True)
                results[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
        import numpy as np

        same = np.array_equal(np.load(Path(tmp) / "scores_0.npy"), np.load(Path(tmp) / "scores_1.npy"))
    print(f"{args.scene.name}: {results[next(iter(results))][0]['gaussians']:,} Gaussians, {args.views} views "
          f"of {args.variant}")
    best = {}
    for name, runs in results.items():
        best[name] = min(run["seconds_per_view"] for run in runs)
        times = ", ".join(f"{run['seconds_per_view']:.3f}" for run in runs)
        cpu = min(run["cpu_seconds_per_view"] for run in runs)
        print(f"  {name:16s} {best[name]:.3f} s/view (runs: {times}; CPU {cpu:.3f} s/view); resident before scoring "
              f"{runs[0]['rss_before_mib']:.0f} MiB, peak while scoring {runs[0]['peak_rss_mib']:.0f} MiB")
    old, new = best.values()
    print(f"  speedup {old / new:.2f}x; scores bit-identical: {same}")


def score(scene_path: Path, views: int, variant: str, out: Path) -> None:
    import numpy as np

    from exgs_core.io import read_scene
    from exgs_core.ugc.compress import scoring_cameras
    from exgs_core.ugc.significance import significance

    scene = read_scene(scene_path)
    cameras = scoring_cameras(scene)[:views]
    significance(scene.subset(slice(0, 2000)), cameras[:1], variant)  # compile (or load) the kernels
    rss_before = _status_mib("VmRSS")
    _reset_peak_rss()
    start, start_cpu = time.perf_counter(), time.process_time()
    scores = significance(scene, cameras, variant)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    np.save(out, scores)
    print(json.dumps({"gaussians": len(scene), "seconds_per_view": seconds / len(cameras),
                      "cpu_seconds_per_view": cpu_seconds / len(cameras),
                      "rss_before_mib": rss_before,
                      "peak_rss_mib": _status_mib("VmHWM")}))


def _reset_peak_rss() -> None:
    """Start the peak (VmHWM) again from the current resident size: reading the scene peaks higher."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


if __name__ == "__main__":
    main()
