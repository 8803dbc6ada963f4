"""Significance scoring speed and memory: this tree against an earlier commit, same scene and views, same run.

    python docs/experiments/scoring_speed.py [--scene /tmp/scoring_1.5M.ply] [--count 1500000] [--base dba506e]

The scene is the SH-3 real tile scene tiled to `--count` Gaussians (written first if `--scene` is absent).
Each tree scores in its own process (kernels compiled or loaded first, on a small scene). The machine is
shared, so the two take turns view by view (each waits while the other scores a view): both see the same
load. Reported: seconds per view (the first view, which also computes the covariances, left out), the
process's resident memory before scoring and its peak while scoring, and whether the scores are equal bit
for bit.
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
    parser.add_argument("--views", type=int, default=8, help="the first views of the 24 scoring views")
    parser.add_argument("--variant", default="alpha_t")
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
        workers = {name: subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", str(Path(tmp) / f"{k}.npy"),
             "--scene", str(args.scene), "--views", str(args.views), "--variant", args.variant],
            cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True) for k, (name, tree) in enumerate(trees.items())}
        for worker in workers.values():
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        seconds: dict[str, list[float]] = {name: [] for name in workers}
        for _ in range(args.views):  # one view each in turn
            for name, worker in workers.items():
                assert worker.stdin is not None and worker.stdout is not None
                worker.stdin.write("go\n")
                worker.stdin.flush()
                seconds[name].append(float(worker.stdout.readline()))
        reports = {}
        for name, worker in workers.items():
            assert worker.stdin is not None and worker.stdout is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
            reports[name] = json.loads(worker.stdout.readline())
            worker.wait()
        import numpy as np

        same = np.array_equal(np.load(Path(tmp) / "0.npy"), np.load(Path(tmp) / "1.npy"))
    print(f"{args.scene.name}: {reports[next(iter(reports))]['gaussians']:,} Gaussians, views 2-{args.views} of "
          f"24 scoring views ({args.variant})")
    per_view = {}
    for name, report in reports.items():
        per_view[name] = sum(seconds[name][1:]) / (args.views - 1)
        print(f"  {name:16s} {per_view[name]:.3f} s/view; resident before scoring {report['rss_before_mib']:.0f} "
              f"MiB, peak while scoring {report['peak_rss_mib']:.0f} MiB")
    old, new = per_view.values()
    print(f"  speedup {old / new:.2f}x; scores bit-identical: {same}")


def score(scene_path: Path, views: int, variant: str, out: Path) -> None:
    """Score the first `views` scoring views, each when stdin says go; print each view's seconds."""
    import numpy as np

    from exgs_core.io import read_scene
    from exgs_core.ugc.compress import scoring_cameras
    from exgs_core.ugc.significance import significance

    scene = read_scene(scene_path)
    cameras = scoring_cameras(scene)[:views]
    significance(scene.subset(slice(0, 2000)), cameras[:1], variant)  # compile (or load) the kernels
    rss_before = _status_mib("VmRSS")
    _reset_peak_rss()
    started = 0.0

    def take_turn(_: int = -1) -> None:
        nonlocal started
        if started:
            print(time.perf_counter() - started, flush=True)
        sys.stdin.readline()
        started = time.perf_counter()

    print("ready", flush=True)
    take_turn()
    scores = significance(scene, cameras, variant, on_view=take_turn)
    np.save(out, scores)
    print(json.dumps({"gaussians": len(scene), "rss_before_mib": rss_before, "peak_rss_mib": _status_mib("VmHWM")}))


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
