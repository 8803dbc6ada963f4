"""Where a compressed render's error sits: pixels the compressed scene covers (alpha >= 0.9) or the rest
(silhouettes, holes, background), per scene and target ratio of a pairs folder's split. No model involved.

    python bench/painter_error_split.py --data EVAL_PAIRS [--split eval]
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from exgs_core.painter.data import load_samples  # noqa: E402

COVERED_ALPHA = 0.9


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="pairs folder from `exgs painter-data`")
    parser.add_argument("--split", default="eval")
    args = parser.parse_args(argv)
    # (scene, ratio) -> [squared error on covered pixels, on the rest, covered pixel count, all pixels]
    sums: dict[tuple[str, float], np.ndarray] = defaultdict(lambda: np.zeros(4))
    for record, raw, target in load_samples(args.data, args.split):
        error = ((raw[..., :3].astype(np.float64) - target) / 255.0) ** 2
        per_pixel = error.mean(axis=-1)
        covered = raw[..., 3] >= COVERED_ALPHA * 255
        sums[(record["scene"], record["target_ratio"])] += [per_pixel[covered].sum(), per_pixel[~covered].sum(),
                                                            covered.sum(), covered.size]
    print(f"{'scene':32} {'ratio':>6} {'covered px':>11} {'error share on covered px':>26}")
    for (scene, ratio), (on, off, count, total) in sorted(sums.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"{scene:32} {ratio:>5.0f}x {count / total:>11.1%} {on / max(on + off, 1e-30):>26.1%}")


if __name__ == "__main__":
    main()
