"""Benchmark: is quality monotone in bytes? A fine sweep of ratios per scene, for each compress --method.

For each scene, compress at every ratio of the sweep (e.g. 80x to 130x in steps of 5) and report PSNR on the
held-out views of bench/compress.py, and the largest loss of PSNR when the file grows (0 when monotone).

    python bench/monotone.py --scenes fox,donut [--sweep 80:130:5] [--methods auto,merge,paper] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402

from compress import quality, scene_name, test_cameras  # noqa: E402
from exgs_core.io import read_scene  # noqa: E402
from exgs_core.render import render  # noqa: E402
from exgs_core.ugc.compress import CompressSettings, Target, compress, scoring_cameras  # noqa: E402
from exgs_core.ugc.significance import significance  # noqa: E402
from tests.conftest import real_scene_paths  # noqa: E402


def worst_loss(points: list[tuple[int, float]]) -> float:
    """The largest PSNR drop from any file to a larger one ((bytes, psnr) pairs)."""
    ordered = [value for _, value in sorted(points)]
    return max([0.0] + [max(ordered[:i]) - ordered[i] for i in range(1, len(ordered))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", required=True, help="comma-separated name fragments")
    parser.add_argument("--sweep", default="80:130:5", help="first:last:step ratio")
    parser.add_argument("--methods", default="auto")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    first, last, step = (float(v) for v in args.sweep.split(":"))
    ratios = list(np.arange(first, last + step / 2, step))
    wanted = args.scenes.split(",")
    paths = [p for p in real_scene_paths() if p.name != "meta.json" and any(w in scene_name(p) for w in wanted)]
    rows = []
    for path in paths:
        scene = read_scene(path)
        tests = test_cameras(scene)
        references = [render(scene, c, backend="torch").rgb for c in tests]
        cameras = scoring_cameras(scene)
        scores = significance(scene, cameras)
        for method in args.methods.split(","):
            points = []
            for ratio in ratios:
                result = compress(scene, Target("ratio", float(ratio)), cameras, CompressSettings(method=method),
                                  scores=scores)
                value = quality(result.scene, tests, references)[0]
                points.append((len(result.data), value))
                rows.append({"scene": scene_name(path), "method": method, "ratio": float(ratio),
                             "bytes": len(result.data), "psnr": value})
            print(f"{scene_name(path)} {method}: " + " ".join(f"{r:g}x {v:.2f}" for r, (_, v) in zip(ratios, points))
                  + f"  worst loss with more bytes {worst_loss(points):.2f} dB", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
