"""Benchmark: exgs compress against @playcanvas/splat-transform at equal bytes.

Needs `splat-transform` on PATH (`npm install -g @playcanvas/splat-transform@3.7.0`); it runs with `-g cpu`.
For each scene and each target ratio (against the 248 B/Gaussian INRIA .ply), splat-transform decimates with
`-d P%` (moment-matched pairwise merging) into a .ply and writes that as .sog; P is chosen so the .sog lands
near the ratio (one calibration run, then one corrected run). exgs then compresses the same input with
`--size <the .sog's bytes>` (each --method given). Every candidate is read back (the .sog by our reader,
exgs_core/io/sog.py) and rendered by our renderer on held-out views (bench/compress.py's test views, none of
them a scoring view); PSNR and SSIM are against the uncompressed scene's renders.

Results go to a JSON file row by row, and a run skips rows already there (resumable: run it in the background,
scene by scene).

    python bench/peer.py --json peer.json [--scenes fox,plant] [--ratios 30,50,100,200,300]
    python bench/peer.py --tables-from peer.json [--plot docs/figures/peer_rd.png]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402

from compress import quality, scene_name, test_cameras  # noqa: E402
from exgs_core.io import read_scene  # noqa: E402
from exgs_core.io.ply import INRIA_BYTES_PER_GAUSSIAN  # noqa: E402
from exgs_core.render import render  # noqa: E402
from exgs_core.ugc.compress import CompressSettings, Target, compress, scoring_cameras  # noqa: E402
from exgs_core.ugc.significance import significance  # noqa: E402
from tests.conftest import real_scene_paths  # noqa: E402

RATIOS = (30, 50, 100, 200, 300)
SOG_FIXED_BYTES, SOG_BYTES_PER_GAUSSIAN = 4000.0, 14.0  # first guess, measured on fox and spot
PEER = "splat-transform"


def run_peer(source: Path, percent: float, work: Path) -> Path:
    """splat-transform -g cpu -d P% (to .ply), then .ply -> .sog; returns the .sog path."""
    decimated, sog = work / f"d{percent:.4f}.ply", work / f"d{percent:.4f}.sog"
    if sog.exists():
        return sog
    for args in ([str(source), "-d", f"{percent:.4f}%", str(decimated)], [str(decimated), str(sog)]):
        subprocess.run([PEER, "-g", "cpu", "-w", *args], check=True, capture_output=True, text=True)
    return sog


def peer_at_ratio(source: Path, count: int, ratio: float, work: Path) -> tuple[Path, float]:
    """A .sog near `ratio`: P from a bytes model (a fixed part and ~14 B/Gaussian), corrected once when the
    file is more than 10% off (splat-transform takes a minute per run on 100k Gaussians; the comparison is at
    the .sog's own bytes anyway)."""
    budget = INRIA_BYTES_PER_GAUSSIAN * count / ratio
    percent = float(np.clip(100.0 * (budget - SOG_FIXED_BYTES) / SOG_BYTES_PER_GAUSSIAN / count, 0.05, 100.0))
    sog = run_peer(source, percent, work)
    size = sog.stat().st_size
    if abs(size - budget) > 0.1 * budget:
        per_gaussian = (size - SOG_FIXED_BYTES) / (percent / 100.0 * count)
        percent = float(np.clip(100.0 * (budget - SOG_FIXED_BYTES) / per_gaussian / count, 0.05, 100.0))
        sog = run_peer(source, percent, work)
    return sog, percent


def run(paths: list[Path], ratios: list[float], methods: list[str], out: Path, cache: Path) -> list[dict]:
    rows = json.loads(out.read_text()) if out.exists() else []
    done = {(r["scene"], r["ratio"], r["method"]) for r in rows}
    for path in paths:
        name = scene_name(path)
        if all((name, float(q), m) in done for q in ratios for m in [PEER, *methods]):
            continue
        scene = read_scene(path)
        tests = test_cameras(scene)
        references = [render(scene, c, backend="torch").rgb for c in tests]
        cameras = scoring_cameras(scene)
        scores = significance(scene, cameras)
        work = cache / name
        work.mkdir(parents=True, exist_ok=True)
        for ratio in ratios:
            if all((name, float(ratio), m) in done for m in [PEER, *methods]):
                continue
            peer = [r for r in rows if (r["scene"], r["ratio"], r["method"]) == (name, float(ratio), PEER)]
            if peer:
                new, size = [], peer[0]["bytes"]
            else:
                start = time.perf_counter()
                sog, percent = peer_at_ratio(path, len(scene), ratio, work)
                peer_seconds = time.perf_counter() - start
                size = sog.stat().st_size
                peer_scene = read_scene(sog)
                value_psnr, value_ssim = quality(peer_scene, tests, references)
                new = [_row(name, ratio, PEER, size, len(peer_scene), len(scene), value_psnr, value_ssim,
                            peer_seconds, percent=percent)]
            for method in methods:
                if (name, float(ratio), method) in done:
                    continue
                start = time.perf_counter()
                result = compress(scene, Target("size", size), cameras, CompressSettings(method=method),
                                  scores=scores)
                seconds = time.perf_counter() - start
                value_psnr, value_ssim = quality(result.scene, tests, references)
                new.append(_row(name, ratio, method, len(result.data), len(result.scene), len(scene),
                                value_psnr, value_ssim, seconds))
            for row in new:
                print(f"{row['scene']:>28s} {row['ratio']:>4g}x {row['method']:>15s} {row['bytes']:>9,} B "
                      f"({row['achieved_ratio']:6.1f}x) {row['kept']:>7,} G  PSNR {row['psnr']:6.2f}  "
                      f"SSIM {row['ssim']:.4f}  {row['seconds']:.1f} s", flush=True)
            rows += new
            out.write_text(json.dumps(rows, indent=1))
    return rows


def _row(scene: str, ratio: float, method: str, size: int, kept: int, count: int, value_psnr: float,
         value_ssim: float, seconds: float, **extra) -> dict:
    return {"scene": scene, "ratio": float(ratio), "method": method, "bytes": size, "kept": kept,
            "achieved_ratio": INRIA_BYTES_PER_GAUSSIAN * count / size, "psnr": value_psnr, "ssim": value_ssim,
            "seconds": round(seconds, 2), **extra}


def table(rows: list[dict], methods: list[str]) -> str:
    """Per scene and ratio: bytes, PSNR/SSIM of each method, and the first method's gain over the peer."""
    lines = ["| scene | ratio | bytes (peer / ours) | " + " | ".join(methods) + f" | {methods[1]} - {methods[0]} |",
             "|---|---:|---:|" + "---:|" * len(methods) + "---:|"]
    for scene in dict.fromkeys(r["scene"] for r in rows):
        for ratio in sorted({r["ratio"] for r in rows if r["scene"] == scene}):
            cell = {r["method"]: r for r in rows if r["scene"] == scene and r["ratio"] == ratio}
            if not all(m in cell for m in methods):
                continue
            values = " | ".join(f"{cell[m]['psnr']:.2f} / {cell[m]['ssim']:.3f}" for m in methods)
            gain = cell[methods[1]]["psnr"] - cell[methods[0]]["psnr"]
            lines.append(f"| {scene} | {cell[methods[0]]['achieved_ratio']:.0f}x | "
                         f"{cell[methods[0]]['bytes']:,} / {cell[methods[1]]['bytes']:,} | {values} | {gain:+.2f} |")
    return "\n".join(lines)


def plot(rows: list[dict], methods: list[str], path: Path) -> None:
    """One panel per scene: PSNR against the achieved ratio, one curve per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenes = list(dict.fromkeys(r["scene"] for r in rows))
    columns = min(4, len(scenes))
    lines = -(-len(scenes) // columns)
    figure, axes = plt.subplots(lines, columns, figsize=(3.2 * columns, 2.6 * lines), dpi=110, squeeze=False)
    for axis, scene in zip(axes.flat, scenes):
        for method in methods:
            picked = sorted((r for r in rows if r["scene"] == scene and r["method"] == method),
                            key=lambda r: r["achieved_ratio"])
            axis.plot([r["achieved_ratio"] for r in picked], [r["psnr"] for r in picked], marker="o", ms=3,
                      label=method)
        axis.set_xscale("log")
        axis.set_xticks(RATIOS, [f"{r}x" for r in RATIOS])
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_title(scene, fontsize=8)
        axis.tick_params(labelsize=7)
        axis.grid(True, alpha=0.3)
    for axis in list(axes.flat)[len(scenes):]:
        axis.axis("off")
    axes.flat[0].legend(fontsize=6)
    figure.supxlabel("compression ratio vs the INRIA .ply (equal bytes per point)", fontsize=8)
    figure.supylabel("PSNR vs uncompressed render (dB)", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratios", default=",".join(str(r) for r in RATIOS))
    parser.add_argument("--scenes", default=None, help="comma-separated name fragments (default: every scene)")
    parser.add_argument("--methods", default="auto,merge,paper", help="exgs compress --method values to compare")
    parser.add_argument("--json", type=Path, default=Path("peer.json"), help="results (read first: resumable)")
    parser.add_argument("--cache", type=Path, default=Path("peer_cache"), help="splat-transform outputs kept here")
    parser.add_argument("--redo", default="", help="comma-separated methods whose rows are dropped and re-measured")
    parser.add_argument("--tables-from", type=Path, default=None, help="only print the table from this JSON")
    parser.add_argument("--plot", type=Path, default=None, help="write the RD plot here")
    args = parser.parse_args()
    methods = args.methods.split(",")
    if args.tables_from:
        rows = json.loads(args.tables_from.read_text())
    else:
        if shutil.which(PEER) is None:
            sys.exit(f"{PEER} is not on PATH: npm install -g @playcanvas/splat-transform@3.7.0")
        paths = [p for p in real_scene_paths() if p.name != "meta.json"]  # the playbot once, as its .ply
        if args.scenes:
            wanted = args.scenes.split(",")
            paths = [p for p in paths if any(w in scene_name(p) for w in wanted)]
        if args.redo and args.json.exists():
            redo = set(args.redo.split(","))
            kept = [r for r in json.loads(args.json.read_text()) if r["method"] not in redo]
            args.json.write_text(json.dumps(kept, indent=1))
        rows = run(paths, [float(r) for r in args.ratios.split(",")], methods, args.json, args.cache)
    print(table(rows, [PEER, *methods]))
    if args.plot:
        plot(rows, [PEER, *methods], args.plot)


if __name__ == "__main__":
    main()
