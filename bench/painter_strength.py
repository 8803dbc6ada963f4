"""How much of a painter's correction pays, by compression ratio: the fit behind exgs_core/painter/strength.py.

For every pair of a pairs folder's split (default: the train split, so the held-out scenes stay unseen), the
restored frame is scored at several strengths (0 = the raw render, 1 = the painter's output; the correction is
scaled in between, as `restore(strength=...)` does). Prints the mean PSNR gain over raw per ratio band (INRIA
basis) and strength, and the best strength per band. Captured scenes are also shown on their own.

    python bench/painter_strength.py --weights exgs_core/painter/default_weights --data PAIRS [PAIRS ...]
                                     [--split train] [--every 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from exgs_core.metrics import psnr  # noqa: E402
from exgs_core.painter.data import load_samples  # noqa: E402
from exgs_core.painter.restore import restore_batch  # noqa: E402
from exgs_core.painter.strength import FULL_RESTORATION_FROM_RATIO, NO_RESTORATION_BELOW_RATIO  # noqa: E402
from exgs_core.painter.train import as_8bit  # noqa: E402
from exgs_core.painter.weights import load_painter  # noqa: E402
from exgs_core.progress import progress  # noqa: E402

STRENGTHS = (0.25, 0.5, 0.75, 1.0)
BAND_EDGES = (10.0, 30.0, 45.0, 60.0, 80.0, 100.0, 150.0, 200.0, 300.0, float("inf"))


def band_of(ratio: float) -> str:
    for low, high in zip(BAND_EDGES, BAND_EDGES[1:]):
        if ratio < high:
            return f"{low:.0f}-{high:.0f}x" if np.isfinite(high) else f">{low:.0f}x"
    return f">{BAND_EDGES[-2]:.0f}x"


def gains_by_band(model, data: list[str], split: str, every: int) -> dict[tuple[str, bool], dict[float, list[float]]]:
    """{(band, captured): {strength: [PSNR gain over raw per frame]}}"""
    samples = [s for folder in data for s in load_samples(folder, split)][::every]
    gains: dict[tuple[str, bool], dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for record, raw, target in progress(samples, desc="strength", unit="frame"):
        rgb = torch.from_numpy(raw[..., :3].copy()).permute(2, 0, 1)[None].float() / 255.0
        mask = 1.0 - torch.from_numpy(raw[..., 3:].copy()).permute(2, 0, 1)[None].float() / 255.0
        tgt = torch.from_numpy(target.copy()).permute(2, 0, 1)[None].float() / 255.0
        full = restore_batch(rgb, mask, model)
        raw_psnr = float(psnr(rgb, tgt))
        key = (band_of(float(record["ratio"])), bool(record["captured"]))
        for strength in STRENGTHS:
            out = as_8bit((rgb + strength * (full - rgb)).clamp(0.0, 1.0))
            gains[key][strength].append(float(psnr(out, tgt)) - raw_psnr)
    return gains


def print_table(gains: dict, captured_only: bool) -> None:
    title = "captured scenes" if captured_only else "all scenes"
    print(f"\nPSNR gain over raw (dB), {title}")
    print(f"{'band':>10} {'frames':>7} " + " ".join(f"s={s:<5}" for s in STRENGTHS) + "  best")
    bands = sorted({band for band, _ in gains}, key=lambda b: float(b.strip(">").split("-")[0]))
    for band in bands:
        rows = [per for (b, captured), per in gains.items() if b == band and (captured or not captured_only)]
        if not rows:
            continue
        means = {s: float(np.mean([g for per in rows for g in per[s]])) for s in STRENGTHS}
        count = sum(len(per[STRENGTHS[0]]) for per in rows)
        best = max(means, key=lambda s: means[s])
        best_text = f"{best:g}" if means[best] > 0 else "0"
        print(f"{band:>10} {count:>7} " + " ".join(f"{means[s]:+7.2f}" for s in STRENGTHS) + f"  {best_text}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="painter weights folder (default: the shipped weights)")
    parser.add_argument("--data", nargs="+", required=True, help="pairs folder(s) from `exgs painter-data`")
    parser.add_argument("--split", default="train", help="which split to score (default: train)")
    parser.add_argument("--every", type=int, default=1, help="score every N-th pair only")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_painter(args.weights)
    model.eval()
    gains = gains_by_band(model, args.data, args.split, max(1, args.every))
    print_table(gains, captured_only=False)
    print_table(gains, captured_only=True)
    print(f"\nshipped policy (exgs_core/painter/strength.py): none below {NO_RESTORATION_BELOW_RATIO:g}x, "
          f"full from {FULL_RESTORATION_FROM_RATIO:g}x")


if __name__ == "__main__":
    main()
