"""Benchmark: UGC against simple pruning baselines at the same file size, on every scene in shared/data.

For each scene and each target ratio (against the 248 B/Gaussian INRIA .ply), every method goes through the
same compress() -> .exgs bytes -> decode path, so all files are within 2% of the same size and differ only in
which Gaussians they keep and how:
  UGC            the shipped defaults: significance + fixed voxel sampling, what is pruned merged into what is kept
  random         uniformly random Gaussians
  opacity        the most opaque Gaussians
  LightGaussian  sigma*T summed over the scoring views x volume^0.1 (its score, no fine-tuning)
  UGC-paper      the paper's path: drop what is pruned, amplify the survivors (--method paper)
  UGC-no-voxels  the paper's path with plain top-k selection
  UGC-no-amp     the paper's path without amplification
Quality: PSNR and SSIM of renders against the uncompressed scene's renders, on held-out views (orbits at two
elevations, none of them a scoring view).

    python bench/compress.py [--ratios 10,30,100,200] [--scenes fox,plant] [--json out.json] [--plot out.png]
    python bench/compress.py --scale [1.5M,5M,10M]     # time and peak memory against Gaussians
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from exgs_core.camera import orbit_cameras  # noqa: E402
from exgs_core.io import read_scene  # noqa: E402
from exgs_core.metrics import psnr, ssim  # noqa: E402
from exgs_core.render import render  # noqa: E402
from exgs_core.scene import GaussianScene  # noqa: E402
from exgs_core.ugc.amplify import Amplification  # noqa: E402
from exgs_core.ugc.compress import CompressSettings, Target, compress, scoring_cameras  # noqa: E402
from exgs_core.ugc.significance import significance  # noqa: E402
from tests.conftest import real_scene_paths  # noqa: E402

METHODS = ["UGC", "random", "opacity", "LightGaussian", "UGC-paper", "UGC-no-voxels", "UGC-no-amp"]
TEST_SIZE = 256


def scene_name(path: Path) -> str:
    return path.parent.name if path.name == "meta.json" else path.stem


def test_cameras(scene: GaussianScene) -> list:
    """Held-out views: two orbits at elevations and azimuths the Fibonacci scoring sphere does not use."""
    low = orbit_cameras(scene.means, 4, TEST_SIZE, TEST_SIZE, up="+z", elevation_deg=12.0, start_azimuth_deg=20.0,
                        opacities=scene.opacities())
    high = orbit_cameras(scene.means, 4, TEST_SIZE, TEST_SIZE, up="-y", elevation_deg=40.0, start_azimuth_deg=65.0,
                         opacities=scene.opacities())
    return low + high


def lightgaussian_scores(scene: GaussianScene, sigma_t: np.ndarray) -> np.ndarray:
    """LightGaussian's global significance: sum of sigma*T times (V / V_90th-percentile, capped at 1)^0.1."""
    volume = np.prod(scene.scales().astype(np.float64), axis=1)
    normalised = np.minimum(volume / np.percentile(volume, 90), 1.0)
    return sigma_t * normalised**0.1


def method_inputs(scene: GaussianScene, cameras: list, defaults: CompressSettings, seed: int = 0) -> dict:
    """(settings, scores) for every method; scores computed once per scene."""
    rng = np.random.default_rng(seed)
    default_scores = significance(scene, cameras, defaults.variant)
    sigma_t = default_scores if defaults.variant == "sigma_t" else significance(scene, cameras, "sigma_t")
    plain = replace(defaults, method="paper", use_voxels=False, amplification=Amplification())  # drop only
    paper = replace(defaults, method="paper")
    return {
        "UGC": (defaults, default_scores),
        "random": (plain, rng.permutation(len(scene)).astype(np.float64)),
        "opacity": (plain, scene.opacities().astype(np.float64)),
        "LightGaussian": (plain, lightgaussian_scores(scene, sigma_t)),
        "UGC-paper": (paper, default_scores),
        "UGC-no-voxels": (replace(paper, use_voxels=False), default_scores),
        "UGC-no-amp": (replace(paper, amplification=Amplification()), default_scores),
    }


def quality(scene: GaussianScene, cameras: list, references: list) -> tuple[float, float]:
    images = [render(scene, c, backend="torch").rgb for c in cameras]
    return (float(np.mean([psnr(i, r) for i, r in zip(images, references)])),
            float(np.mean([ssim(i, r) for i, r in zip(images, references)])))


def run(paths: list[Path], ratios: list[float], methods: list[str]) -> list[dict]:
    rows = []
    defaults = CompressSettings()
    for path in paths:
        scene = read_scene(path)
        tests = test_cameras(scene)
        references = [render(scene, c, backend="torch").rgb for c in tests]
        start = time.perf_counter()
        cameras = scoring_cameras(scene)
        inputs = method_inputs(scene, cameras, defaults)
        print(f"# {scene_name(path)}: {len(scene):,} Gaussians, scores in {time.perf_counter() - start:.1f} s",
              flush=True)
        for ratio in ratios:
            for method in methods:
                settings, scores = inputs[method]
                result = compress(scene, Target("ratio", ratio), cameras, settings, scores=scores)
                value_psnr, value_ssim = quality(result.scene, tests, references)
                rows.append({"scene": scene_name(path), "ratio": ratio, "method": method,
                             "bytes": len(result.data), "kept": len(result.scene),
                             "achieved_ratio": result.stats["ratio_vs_inria_ply"],
                             "psnr": value_psnr, "ssim": value_ssim})
                print(f"  {ratio:>5g}x {method:14s} kept {len(result.scene):>7,} {len(result.data):>9,} B "
                      f"({result.stats['ratio_vs_inria_ply']:.1f}x)  PSNR {value_psnr:6.2f}  SSIM {value_ssim:.4f}",
                      flush=True)
    return rows


def summary_table(rows: list[dict], ratios: list[float], methods: list[str]) -> str:
    lines = ["| ratio | " + " | ".join(methods) + " |", "|---:|" + "---:|" * len(methods)]
    for ratio in ratios:
        cells = []
        for method in methods:
            picked = [r for r in rows if r["ratio"] == ratio and r["method"] == method]
            cells.append(f"{np.mean([r['psnr'] for r in picked]):.2f} / {np.mean([r['ssim'] for r in picked]):.3f}")
        lines.append(f"| {ratio:g}x | " + " | ".join(cells) + " |")
    return "\n".join(lines)


BASELINES = ("random", "opacity", "LightGaussian")


def per_scene_table(rows: list[dict], ratio: float, methods: list[str]) -> str:
    """PSNR per scene; the last column: does UGC beat every baseline (the ablations are not baselines)?"""
    lines = ["| scene | " + " | ".join(methods) + " | UGC beats the baselines |",
             "|---|" + "---:|" * len(methods) + "---|"]
    for scene in dict.fromkeys(r["scene"] for r in rows):
        values = {r["method"]: r["psnr"] for r in rows if r["scene"] == scene and r["ratio"] == ratio}
        rivals = {m: values[m] for m in BASELINES if m in values}
        best = max(rivals, key=rivals.get) if rivals else None
        verdict = "n/a" if best is None else ("yes" if values["UGC"] > rivals[best] else
                                             "tie" if values["UGC"] == rivals[best] else f"no ({best})")
        lines.append(f"| {scene} | " + " | ".join(f"{values[m]:.2f}" for m in methods) + f" | {verdict} |")
    return "\n".join(lines)


def plot(rows: list[dict], ratios: list[float], methods: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    for method in methods:
        means = [np.mean([r["psnr"] for r in rows if r["ratio"] == q and r["method"] == method]) for q in ratios]
        axis.plot(ratios, means, marker="o", label=method)
    axis.set_xscale("log")
    axis.set_xticks(ratios, [f"{q:g}x" for q in ratios])
    axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axis.set_xlabel("compression ratio vs the INRIA .ply (same file size for every method)")
    axis.set_ylabel("mean PSNR vs uncompressed render (dB)")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


LARGE_SCENE_CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
import numba, torch
from exgs_core.io import read_scene
from exgs_core.synthetic import tile_scene
from exgs_core.ugc.compress import CompressSettings, Target, compress, scoring_cameras
scene = tile_scene(read_scene({source!r}), 1_500_000)
settings = CompressSettings(**json.loads({settings!r}))
start, cpu = time.perf_counter(), time.process_time()
result = compress(scene, Target("ratio", 100.0), scoring_cameras(scene), settings)
elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
stats = result.stats
print(json.dumps({{k: v for k, v in stats.items() if k != "target"}}), file=sys.stderr)
print(len(scene), len(result.scene), len(result.data), f"{{elapsed:.1f}}", f"{{cpu:.1f}}",
      f"{{stats['scoring_seconds']:.1f}}", f"{{stats['selection_seconds']:.1f}}", f"{{stats['merge_seconds']:.1f}}",
      f"{{stats['packing_seconds']:.1f}}", f"{{peak:.2f}}", numba.get_num_threads(), torch.get_num_threads())
"""


def large_scene() -> None:
    """Compress time (wall and CPU) and peak memory of a 1.5M-Gaussian scene at 100x, in a child process:
    with the defaults (the level, method and SH degree searched) and with all three fixed (no search).

    The child includes loading numba's cached kernels, as a fresh `exgs compress` does. On a busy machine
    compare the CPU time: the wall time grows with the load.
    """
    chosen = _large_scene_run({})
    _large_scene_run({"method": chosen["method"], "quantisation_level": chosen["quantisation_level"],
                      "sh_degree": chosen["sh_degree"]})


def _large_scene_run(settings: dict) -> dict:
    import json
    import os
    import subprocess

    source = ROOT.parent / "shared" / "data" / "scenes" / "splats_plant.splat"
    code = LARGE_SCENE_CHILD.format(root=str(ROOT), source=str(source), settings=json.dumps(settings))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    stats = json.loads(result.stderr.strip().splitlines()[-1])
    count, kept, size, seconds, cpu, scoring, selection, merging, packing, peak, threads, torch_threads = (
        result.stdout.split())
    proxy = stats.get("proxy") or {}
    print(f"settings {settings or 'default'}: method {stats['method']}, level {stats['quantisation_level']}, "
          f"SH {stats['sh_degree']}" + (f", chosen on a crop of {proxy['gaussians']:,} Gaussians" if proxy else ""))
    print(f"1.5M Gaussians (splats_plant tiled) at 100x: {float(seconds):.1f} s wall, {float(cpu):.1f} s CPU, "
          f"kept {int(kept):,}, {int(size):,} bytes, peak memory {float(peak):.2f} GiB (whole process); "
          f"{threads} numba / {torch_threads} torch threads, load average {os.getloadavg()[0]:.1f}")
    stages = {"scoring": float(scoring), "choosing on the crop": proxy.get("seconds", 0.0),
              "choosing the method (whole scene)": stats.get("method_seconds", 0.0),
              "choosing the level (whole scene)": stats["quantisation_seconds"],
              "choosing the sampling": float(selection), "merging": float(merging), "packing": float(packing)}
    print("  stages (wall s; merging and packing include those inside the searches): "
          + ", ".join(f"{name} {value:.1f}" for name, value in stages.items()))
    return stats


SCALE_CHILD = """
import json, os, re, sys, time
sys.path.insert(0, {root!r})
start, cpu = time.perf_counter(), time.process_time()
from exgs_core import cli
code = cli.main({argv!r})
wall, cpu = time.perf_counter() - start, time.process_time() - cpu
peak = int(re.search(r"VmHWM:\\s*(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
print(json.dumps({{"exit": code, "wall": wall, "cpu": cpu, "peak": peak}}), file=sys.stderr)
"""
SCALE_SOURCE = "gs3d_lod1_tile_0_0.5x.ply"  # the SH-3 scene in shared/data


def scale_series(counts: list[int], folder: Path, source: Path) -> list[dict]:
    """`exgs compress --ratio 100 --restoration none` of `source` tiled to each count (SH 3 as the source), each
    in a fresh process: wall and CPU seconds (the child's own, from its start: imports and reading included),
    peak resident memory (the child's VmHWM), and their growth against the first count of the series, measured
    in the same run (marginal bytes/Gaussian: the peak's growth from the previous count, per added Gaussian,
    which leaves out the process's fixed ~0.4 GiB of libraries). The tiled .ply is written to `folder` and deleted after its run (10M Gaussians: 2.5 GB)."""
    import os
    import subprocess

    from exgs_core.synthetic import write_tiled_ply

    scene = read_scene(source)
    rows: list[dict] = []
    print(f"# scale series: {source.name} (SH {scene.sh_degree}) tiled, exgs compress --ratio 100 --restoration none")
    print("| Gaussians | wall s | CPU s | peak RSS GiB | bytes/Gaussian | marginal bytes/Gaussian | output bytes "
          "| time growth | CPU growth | memory growth | count growth | load avg |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for count in counts:
        path = folder / f"exgs_scale_{count}.ply"
        out = folder / f"exgs_scale_{count}.exgs"
        write_tiled_ply(scene, count, path)
        try:
            argv = ["compress", str(path), "-o", str(out), "--ratio", "100", "--restoration", "none"]
            load_before = os.getloadavg()[0]
            result = subprocess.run([sys.executable, "-c", SCALE_CHILD.format(root=str(ROOT), argv=argv)],
                                    capture_output=True, text=True)
            load = 0.5 * (load_before + os.getloadavg()[0])
            if result.returncode != 0:
                raise SystemExit(f"compress of {count:,} Gaussians failed:\n{result.stderr[-2000:]}")
            measured = json.loads(result.stderr.strip().splitlines()[-1])
            size = out.stat().st_size
        finally:
            path.unlink(missing_ok=True)
            out.unlink(missing_ok=True)
        row = {"gaussians": count, "wall": measured["wall"], "cpu": measured["cpu"], "peak": measured["peak"],
               "bytes": size, "load": load}
        rows.append(row)
        first, previous = rows[0], rows[-2] if len(rows) > 1 else None
        marginal = (f"{(row['peak'] - previous['peak']) / (count - previous['gaussians']):.0f}"
                    if previous and count != previous["gaussians"] else "")
        print(f"| {count:,} | {row['wall']:.1f} | {row['cpu']:.1f} | {row['peak'] / 1024**3:.2f} | "
              f"{row['peak'] / count:.0f} | {marginal} | {size:,} | {row['wall'] / first['wall']:.2f}x | "
              f"{row['cpu'] / first['cpu']:.2f}x | {row['peak'] / first['peak']:.2f}x | "
              f"{count / first['gaussians']:.2f}x | {load:.1f} |", flush=True)
    return rows


def parse_count(text: str) -> int:
    """'1.5M', '500k', '2000000' -> a count."""
    text = text.strip().lower()
    factor = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(round(float(text[:-1] if factor > 1 else text) * factor))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratios", default="10,30,100,200")
    parser.add_argument("--scenes", default=None, help="comma-separated name fragments (default: every scene)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--json", type=Path, default=None, help="write every row here")
    parser.add_argument("--plot", type=Path, default=None, help="write the rate-distortion plot here")
    parser.add_argument("--large-only", action="store_true", help="only the 1.5M-Gaussian time and memory run")
    parser.add_argument("--scale", nargs="?", const="1.5M,5M,10M", default=None, metavar="COUNTS",
                        help="only the scale series: compress time and peak memory against Gaussians (default "
                             "1.5M,5M,10M) of a real SH-3 scene tiled")
    parser.add_argument("--scale-dir", type=Path, default=Path("/tmp"),
                        help="where the scale series writes its tiled .ply files (deleted after each run)")
    parser.add_argument("--tables-from", type=Path, nargs="+", default=None,
                        help="print the tables (and --plot) from earlier --json files instead of running")
    args = parser.parse_args()
    if args.large_only:
        large_scene()
        return
    if args.scale:
        source = ROOT.parent / "shared" / "data" / "scenes" / SCALE_SOURCE
        scale_series([parse_count(v) for v in args.scale.split(",")], args.scale_dir, source)
        return
    if args.tables_from:
        rows = [row for path in args.tables_from for row in json.loads(path.read_text())]
        report(rows, sorted({r["ratio"] for r in rows}), list(dict.fromkeys(r["method"] for r in rows)), args)
        return
    ratios = [float(v) for v in args.ratios.split(",")]
    methods = args.methods.split(",")
    paths = [p for p in real_scene_paths() if p.name != "pcengine_playbot_3_0.inria.ply"]  # same scene as the SOG
    if args.scenes:
        wanted = args.scenes.split(",")
        paths = [p for p in paths if any(w in scene_name(p) for w in wanted)]
    rows = run(paths, ratios, methods)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    report(rows, ratios, methods, args)


def report(rows: list[dict], ratios: list[float], methods: list[str], args: argparse.Namespace) -> None:
    print("\nMean PSNR / SSIM over", len({r["scene"] for r in rows}), "scenes:")
    print(summary_table(rows, ratios, methods))
    for ratio in ratios:
        print(f"\nPSNR per scene at {ratio:g}x:")
        print(per_scene_table(rows, ratio, methods))
    if args.plot:
        plot(rows, ratios, methods, args.plot)


if __name__ == "__main__":
    main()
