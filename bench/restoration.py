"""Benchmark: restoration fitted per scene (exgs compress's default) against no restoration, at equal bytes.

For each held-out scene (never used to train or tune the shipped painter: default_weights/README.md) and each
ratio, the scene is compressed twice to the same target from the same significance scores: with
`--restoration none`, and with the default fitted restoration (its bytes inside the target). Both files are
rendered from test views used neither for fitting nor for validation (closer than the scoring views: 0.4-1.0
of the fitting distance, 192 px, varied backgrounds) and scored against the full scene: raw frames of the
plain file against restored frames of the fitted file. Results go to a JSON-lines file, one line per
(scene, ratio), resumable; --markdown prints the tables for docs/results.md.

    python bench/restoration.py --out bench_restoration.jsonl [--ratios 100 300] [--scenes ...] [--markdown]
                                [--fit-steps N] [--dtype int8] [--channels C]

--timing measures instead the time of the default fit, stage by stage (pair rendering, optimisation,
validation), on 200k-Gaussian scenes made of real ones (cat and koala side by side; splats_plant tiled to 200k)
and on the 100k cat, at 100x, against compressing the same scene without restoration in the same run:

    python bench/restoration.py --timing --out bench_fit_timing.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from exgs_core.io import read_scene  # noqa: E402
from exgs_core.painter import fit  # noqa: E402
from exgs_core.painter.restore import restore_batch  # noqa: E402
from exgs_core.ugc.compress import CompressSettings, Target, scoring_cameras  # noqa: E402
from exgs_core.ugc.restoration import RestorationSettings, compress_restored  # noqa: E402
from exgs_core.scene import GaussianScene  # noqa: E402
from exgs_core.synthetic import tile_scene  # noqa: E402
from exgs_core.ugc.significance import significance  # noqa: E402
from tests.conftest import MESH2SPLAT_DIR, SCENES_DIR  # noqa: E402

HELD_OUT = [SCENES_DIR / "mjw_fox.ply", SCENES_DIR / "pcengine_playbot_3_0.inria.ply",
            *(MESH2SPLAT_DIR / f"{name}.splat" for name in ("cat", "koala", "pizza", "spot", "tree"))]
TEST_VIEWS = 8
TEST_SEED = 424242


def measure(path: Path, ratio: float, scores: np.ndarray, cameras: list, restoration: RestorationSettings) -> dict:
    scene = read_scene(path)
    settings = CompressSettings()
    target = Target("ratio", ratio)
    plain = compress_restored(scene, target, cameras, settings, scores=scores,
                              restoration=RestorationSettings("none"))
    start, cpu_start = time.perf_counter(), time.process_time()
    fitted = compress_restored(scene, target, cameras, settings, scores=scores, restoration=restoration)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    raw_plain, raw_fitted, restored = test_psnrs(scene, plain.scene, fitted.scene)
    gains = restored - raw_plain
    info = fitted.stats.get("restoration", {})
    return {
        "scene": path.name, "ratio": ratio, "gaussians": len(scene),
        "plain_bytes": len(plain.data), "fitted_bytes": len(fitted.data), "budget": target.size_in_bytes(len(scene)),
        "plain_gaussians": len(plain.scene), "fitted_gaussians": len(fitted.scene),
        "stored": bool(info.get("stored")), "strength": info.get("strength"),
        "validated_gain_db": info.get("gain_db"), "validated_equal_bytes_gain_db": info.get("equal_bytes_gain_db"),
        "raw_plain_psnr": float(np.mean(raw_plain)), "raw_fitted_psnr": float(np.mean(raw_fitted)),
        "restored_psnr": float(np.mean(restored)), "gain_db": float(gains.mean()),
        "worst_view_gain_db": float(gains.min()), "per_view_gain_db": [round(float(g), 3) for g in gains],
        "restoration_seconds": round(seconds, 1), "restoration_cpu_seconds": round(cpu_seconds, 1),
        "fit_seconds": info.get("fit_seconds"), "fit_cpu_seconds": info.get("fit_cpu_seconds"),
        "steps": info.get("steps"), "reason": info.get("reason"), "dtype": restoration.dtype,
        "channels": restoration.channels,
    }


def test_psnrs(scene: GaussianScene, plain: GaussianScene, fitted: GaussianScene
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PSNR on each test view of raw frames of `plain`, and of raw and restored (by its own restoration, if it
    holds one) frames of `fitted`, against the full `scene`."""
    views = fit.jittered_views(scene, TEST_VIEWS, TEST_SEED, distance_range=(0.4, 1.0))
    backgrounds = fit.backgrounds_for(len(views), TEST_SEED)
    targets = fit.render_targets(scene, views, backgrounds)
    plain_inputs = fit.render_inputs(plain, views, backgrounds)
    fitted_inputs = fit.render_inputs(fitted, views, backgrounds)
    restorer = fit.scene_restorer(fitted, device="cpu")
    raw_plain, raw_fitted, restored = [], [], []
    for y, xp, xf in zip(targets, plain_inputs, fitted_inputs):
        raw_plain.append(fit.frame_psnr(xp[:3], y))
        raw_fitted.append(fit.frame_psnr(xf[:3], y))
        if restorer is None:
            restored.append(raw_fitted[-1])
        else:
            out = restore_batch(xf[None, :3], xf[None, 3:], restorer[0], restorer[1])[0]
            restored.append(fit.frame_psnr(out, y))
    return np.array(raw_plain), np.array(raw_fitted), np.array(restored)


def timing_scenes() -> list[tuple[str, GaussianScene]]:
    """(name, scene): two 200k-Gaussian scenes built from real ones, and a real 100k one for comparison."""
    cat, koala = read_scene(MESH2SPLAT_DIR / "cat.splat"), read_scene(MESH2SPLAT_DIR / "koala.splat")
    plant = read_scene(SCENES_DIR / "splats_plant.splat")
    return [("cat + koala side by side", side_by_side(cat, koala)),
            ("splats_plant tiled", tile_scene(plant, 200_000)), ("cat", cat)]


def side_by_side(a: GaussianScene, b: GaussianScene) -> GaussianScene:
    """`b` moved along x to stand next to `a`, 5% of `a`'s width apart, in one scene."""
    (a_lo, a_hi), (b_lo, _) = a.bounds(), b.bounds()
    moved = b.subset(slice(None))
    shift = np.zeros(3, np.float32)
    shift[0] = a_hi[0] - b_lo[0] + 0.05 * (a_hi[0] - a_lo[0])
    moved.means = (b.means + shift).astype(np.float32)
    return GaussianScene.concatenate([a, moved])


def measure_timing(name: str, scene: GaussianScene, ratio: float) -> dict:
    """Wall and process-CPU seconds of the default fit's stages, and of compressing without restoration."""
    import numba
    import torch

    load_before = os.getloadavg()
    cameras = scoring_cameras(scene)
    settings = CompressSettings()
    scores = significance(scene, cameras, settings.variant)
    target = Target("ratio", ratio)
    start, cpu_start = time.perf_counter(), time.process_time()
    plain = compress_restored(scene, target, cameras, settings, scores=scores, restoration=RestorationSettings("none"))
    plain_seconds, plain_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    start, cpu_start = time.perf_counter(), time.process_time()
    fitted = compress_restored(scene, target, cameras, settings, scores=scores)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    info = fitted.stats["restoration"]
    return {"scene": name, "gaussians": len(scene), "ratio": ratio, "decoded_gaussians": len(plain.scene),
            "plain_compress_seconds": round(plain_seconds, 1), "plain_compress_cpu_seconds": round(plain_cpu, 1),
            "fitted_compress_seconds": round(seconds, 1), "fitted_compress_cpu_seconds": round(cpu_seconds, 1),
            **{k: info.get(k) for k in ("fit_views", "validation_views", "view_scale", "steps", "render_seconds",
                                        "render_cpu_seconds", "optimisation_seconds", "optimisation_cpu_seconds",
                                        "validation_seconds", "validation_cpu_seconds", "fit_seconds",
                                        "fit_cpu_seconds", "stored", "gain_db")},
            "load_before": [round(v, 1) for v in load_before], "load_after": [round(v, 1) for v in os.getloadavg()],
            "numba_threads": numba.get_num_threads(), "torch_threads": torch.get_num_threads()}


def timing_line(r: dict) -> str:
    return (f"{r['scene']} ({r['gaussians']:,} Gaussians, {r['decoded_gaussians']:,} after {r['ratio']:g}x): "
            f"fit {r['fit_seconds']} s wall / {r['fit_cpu_seconds']} s CPU = "
            f"pairs {r['render_seconds']} / {r['render_cpu_seconds']} ({r['fit_views']} + {r['validation_views']} "
            f"views, scale {r['view_scale']}) + optimisation {r['optimisation_seconds']} / "
            f"{r['optimisation_cpu_seconds']} ({r['steps']} steps) + validation {r['validation_seconds']} / "
            f"{r['validation_cpu_seconds']}; {r['fit_seconds'] / r['plain_compress_seconds']:.2f}x the wall time "
            f"({r['fit_cpu_seconds'] / r['plain_compress_cpu_seconds']:.2f}x the CPU) of compressing without "
            f"restoration ({r['plain_compress_seconds']} s / {r['plain_compress_cpu_seconds']} s CPU), same run; "
            f"load average {r['load_before'][0]} -> {r['load_after'][0]} (machine shared), "
            f"{r['numba_threads']} numba / {r['torch_threads']} torch threads")


def timing(out: Path, ratio: float, only: list[str] | None) -> None:
    for name, scene in timing_scenes():
        if only and not any(fragment in name for fragment in only):
            continue
        row = measure_timing(name, scene, ratio)
        print(timing_line(row), flush=True)
        with out.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


def markdown(rows: list[dict]) -> str:
    lines = ["| scene | ratio | bytes (plain / fitted) | raw, no restoration (dB) | restored, fitted (dB) | gain (dB) | "
             "worst view (dB) | strength | fit wall / CPU s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['scene']} | {r['ratio']:g}x | {r['plain_bytes']:,} / {r['fitted_bytes']:,} | "
                     f"{r['raw_plain_psnr']:.2f} | {r['restored_psnr']:.2f} | {r['gain_db']:+.2f} | "
                     f"{r['worst_view_gain_db']:+.2f} | {r['strength'] if r['stored'] else 'none'} | "
                     f"{r['fit_seconds']} / {r['fit_cpu_seconds']} |")
    lines += ["", "| ratio | scenes | mean gain (dB) | lowest scene gain (dB) |", "|---:|---:|---:|---:|"]
    for ratio in sorted({r["ratio"] for r in rows}):
        gains = [r["gain_db"] for r in rows if r["ratio"] == ratio]
        lines.append(f"| {ratio:g}x | {len(gains)} | {np.mean(gains):+.2f} | {min(gains):+.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON-lines results (resumable)")
    parser.add_argument("--ratios", type=float, nargs="+", default=[100.0, 300.0])
    parser.add_argument("--scenes", nargs="*", help="scene files (default: the held-out scenes); with --timing, "
                        "fragments of the timing scenes' names")
    parser.add_argument("--fit-steps", type=int, default=None, help="default: the compressor's")
    parser.add_argument("--dtype", choices=("float16", "int8"), default=None, help="of the stored weights "
                        "(default: the compressor's)")
    parser.add_argument("--channels", type=int, default=None, help="default: the compressor's")
    parser.add_argument("--markdown", action="store_true", help="only print the tables of --out")
    parser.add_argument("--timing", action="store_true",
                        help="time the default fit's stages on 200k-Gaussian scenes (at the first --ratios) instead")
    args = parser.parse_args()
    out = Path(args.out)
    if args.timing:
        timing(out, args.ratios[0], args.scenes)
        return
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.is_file() else []
    if args.markdown:
        print(markdown(rows))
        return
    default = RestorationSettings()
    restoration = RestorationSettings("fit", args.fit_steps or default.fit_steps,
                                      channels=args.channels or default.channels, dtype=args.dtype or default.dtype)
    done = {(r["scene"], r["ratio"]) for r in rows}
    for path in [Path(p) for p in args.scenes] if args.scenes else HELD_OUT:
        todo = [ratio for ratio in args.ratios if (path.name, ratio) not in done]
        if not todo:
            continue
        scene = read_scene(path)
        cameras = scoring_cameras(scene)
        scores = significance(scene, cameras, CompressSettings().variant)
        for ratio in todo:
            row = measure(path, ratio, scores, cameras, restoration)
            print(json.dumps({k: v for k, v in row.items() if k != "per_view_gain_db"}), flush=True)
            with out.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    print(markdown(rows))


if __name__ == "__main__":
    main()
