"""Benchmark: GaussPainter against the pixel U-Net baseline and the raw render, on held-out scenes.

(a) Quality: PSNR/SSIM of raw and restored frames against the full scene's render, on the eval split of a pairs
    folder (held-out scenes at fixed ratios, e.g. 30x/100x/200x), averaged, per ratio, per scene and per scene and
    ratio. Read from each run folder's eval_full.json (written by
    `python -m exgs_core.painter eval --weights RUN/weights --data EVAL > RUN/eval_full.json`); a run without one
    is evaluated here from its weights, or its latest checkpoint while it still trains, with --evaluate-missing
    (nothing is written into the run folder). Or --train trains both models here on the same pairs for the same
    CPU budget (resumable: rerun the same command), then evaluates them.
(b) Speed: seconds per 512x512 frame of restore() with each model, next to the raw render of a held-out real
    scene at 512x512 (exgs_core.render.render), medians measured in the same run.
(c) --markdown prints the tables as markdown for docs/results.md; --plot writes the training curves
    (log.jsonl and eval.jsonl of the run folders).

    python bench/painter.py --runs RUN_PAINTER RUN_BASELINE [--eval-data EVAL --evaluate-missing]
                            [--markdown] [--plot docs/figures/painter_training.png] [--threads 2]
    python bench/painter.py --train --data PAIRS [PAIRS ...] --eval-data EVAL --cpu-seconds 3000 --out-root RUNS
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from exgs_core.camera import orbit_cameras  # noqa: E402
from exgs_core.fileio import atomic_write  # noqa: E402
from exgs_core.io import read_scene  # noqa: E402
from exgs_core.painter.baseline import PixelUNet  # noqa: E402
from exgs_core.painter.data import split_of  # noqa: E402
from exgs_core.painter.model import GaussPainter  # noqa: E402
from exgs_core.painter.restore import restore  # noqa: E402
from exgs_core.painter.train import TrainSettings, evaluate, train  # noqa: E402
from exgs_core.painter.weights import PainterWeightsError, load_painter  # noqa: E402
from exgs_core.render import render  # noqa: E402
from tests.conftest import SCENES_DIR  # noqa: E402

EVAL_NAME = "eval_full.json"
TIMING_SCENE = SCENES_DIR / "mjw_fox.ply"  # held out from training (see exgs_core.painter.data.SPLIT)
LABELS = {"GaussPainter": "GaussPainter", "PixelUNet": "pixel U-Net"}


# --- run folders ---------------------------------------------------------------------------------------------


class Run:
    """A training run folder: its model (final weights, else the latest checkpoint) and its evaluation."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.weights = folder / "weights" if (folder / "weights" / "model_index.json").is_file() else None
        self.checkpoint = folder / "checkpoint" / "model"
        self.report: dict | None = None
        self.note = ""

    @property
    def model_folder(self) -> Path | None:
        if self.weights:
            return self.weights
        return self.checkpoint if (self.checkpoint / "model_index.json").is_file() else None

    @property
    def label(self) -> str:
        folder = self.model_folder
        if folder is None:
            return self.folder.name
        name = json.loads((folder / "model_index.json").read_text())["_class_name"]
        return f"{LABELS.get(name, name)} ({self.folder.name})"

    def state(self) -> str:
        """Where training stands: final weights, or the checkpoint's stage, step and CPU seconds."""
        if self.weights:
            return "final weights"
        state_path = self.folder / "checkpoint" / "state.json"
        if not state_path.is_file():
            return "no checkpoint yet"
        progress = json.loads(state_path.read_text())["progress"]
        return f"checkpoint: {progress['stage']} step {progress['step']}, {progress['cpu_seconds']:.0f} CPU s"

    def load(self):
        folder = self.model_folder
        if folder is None:
            raise PainterWeightsError(self.folder, "has neither weights/ nor checkpoint/model/ yet")
        return load_painter(folder, device="cpu")


def collect_reports(runs: list[Run], eval_data: Path | None, evaluate_missing: bool) -> None:
    """Fill each run's report from eval_full.json, or by evaluating its model when asked."""
    for run in runs:
        path = run.folder / EVAL_NAME
        if path.is_file() and path.stat().st_size > 0:
            try:
                run.report = json.loads(path.read_text())
                run.note = f"{EVAL_NAME} ({run.state()})"
                continue
            except json.JSONDecodeError:
                pass  # still being written by the eval command
        if not (evaluate_missing and eval_data):
            run.note = (f"no {EVAL_NAME} yet ({run.state()}); run `python -m exgs_core.painter eval --weights "
                        f"{run.folder}/weights --data EVAL > {path}`, or pass --evaluate-missing --eval-data EVAL")
            continue
        try:
            model = run.load()
        except PainterWeightsError as error:
            run.note = f"cannot evaluate: {error}"
            continue
        state = run.state()
        run.report = evaluate(model, eval_data)
        run.note = f"evaluated here on {eval_data} ({state})"


# --- tables --------------------------------------------------------------------------------------------------


def format_table(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
             for line in [header, *rows]]
    return "\n".join(lines)


def _cell(report: dict, group: str, key: str) -> dict | None:
    return report["overall"] if group == "overall" else report[group].get(key)


def quality_rows(runs: list[Run], group: str, keys: list[str], labels: list[str]) -> list[list[str]]:
    """One row per key of report[group]: raw PSNR/SSIM, then per run PSNR/SSIM and the gain over raw."""
    rows = []
    for key, label in zip(keys, labels):
        first = _cell(runs[0].report, group, key)
        row = [label, f"{first['raw_psnr']:.2f}", f"{first['raw_ssim']:.4f}"]
        for run in runs:
            cell = _cell(run.report, group, key)
            row += ([f"{cell['psnr']:.2f}", f"{cell['ssim']:.4f}", f"{cell['psnr'] - cell['raw_psnr']:+.2f}"]
                    if cell else ["-", "-", "-"])
        rows.append(row)
    return rows


def quality_tables(runs: list[Run], markdown: bool) -> str:
    runs = [run for run in runs if run.report]
    if not runs:
        return "no run has an evaluation yet (see the notes above)"
    header = ["", "raw PSNR", "raw SSIM"]
    for run in runs:
        header += [f"{run.label} PSNR", "SSIM", "gain dB"]
    out = []
    raw = sorted({run.report["overall"]["raw_psnr"] for run in runs})
    if len(raw) > 1:
        out.append(f"warning: the runs were evaluated on different data (raw PSNR {raw}); raw columns: the first run's")
    first = runs[0].report
    ratios = sorted(first["per_ratio"], key=float)
    summary = (quality_rows(runs, "overall", ["overall"], ["all frames"])
               + quality_rows(runs, "per_ratio", ratios, [f"{float(q):g}x" for q in ratios]))
    scenes = sorted(first["per_scene"], key=lambda s: (s not in CAPTURED, s))
    out.append(f"Held-out pairs ({first['overall']['frames']} frames): PSNR (dB) and SSIM against the full scene's "
               "render, means")
    out.append(format_table(header, summary, markdown))
    out.append("\nPer held-out scene (all ratios):")
    out.append(format_table(header, quality_rows(runs, "per_scene", scenes, [_scene_label(s) for s in scenes]),
                            markdown))
    if "per_scene_ratio" in first:  # older reports lack it
        keys = sorted(first["per_scene_ratio"], key=_scene_ratio_order)
        out.append("\nPer held-out scene and ratio:")
        out.append(format_table(header, quality_rows(runs, "per_scene_ratio", keys,
                                                     [_scene_label(k.rsplit(" ", 1)[0]) + " " + k.rsplit(" ", 1)[1]
                                                      for k in keys]), markdown))
    return "\n".join(out)


CAPTURED = {"mjw_fox.ply", "pcengine_playbot_3_0"}  # held-out captured scenes; the rest are mesh2splat objects


def _scene_ratio_order(key: str) -> tuple:
    scene, ratio = key.rsplit(" ", 1)
    return scene not in CAPTURED, scene, float(ratio.rstrip("x"))


def _scene_label(scene: str) -> str:
    mark = " (captured)" if scene in CAPTURED else ""
    return scene + mark + ("" if split_of(scene)[0] == "eval" else " [NOT held out]")


# --- speed ---------------------------------------------------------------------------------------------------


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (numba compilation, allocator)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def speed(runs: list[Run], repeats: int, size: int = 512) -> list[list[str]]:
    """Seconds per frame at size x size: the raw render of a held-out scene and restore() with each model."""
    scene = read_scene(TIMING_SCENE)
    camera = orbit_cameras(scene.means, 1, size, size, up=split_of(TIMING_SCENE)[1],
                           opacities=scene.opacities())[0]
    frame = render(scene, camera, backend="torch")
    rgb, alpha = frame.rgb.numpy(), frame.alpha.numpy()
    models = []
    for run in runs:
        try:
            models.append((run.label, run.load()))
        except PainterWeightsError as error:
            print(f"{run.folder}: not timed ({error})")
    if not models:  # speed does not depend on the weights: time the default configurations
        models = [("GaussPainter (default config)", GaussPainter.from_config().eval()),
                  ("pixel U-Net (default config)", PixelUNet().eval())]
    render_time = median_seconds(lambda: render(scene, camera, backend="torch"), repeats)
    rows = [[f"raw render ({TIMING_SCENE.name}, {len(scene):,} Gaussians)", f"{render_time:.3f}", "-"]]
    for label, model in models:
        seconds = median_seconds(lambda m=model: restore(rgb, alpha, m), repeats)
        rows.append([f"restore: {label}", f"{seconds:.3f}", f"{render_time + seconds:.3f}"])
    return rows


def speed_table(rows: list[list[str]], markdown: bool, repeats: int) -> str:
    import numba

    title = (f"Seconds per 512x512 frame on this CPU (median of {repeats}, torch threads {torch.get_num_threads()}, "
             f"numba threads {numba.get_num_threads()}):")
    return title + "\n" + format_table(["", "s/frame", "render + restore"], rows, markdown)


# --- training curves -----------------------------------------------------------------------------------------


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line being written
    return records


def plot_curves(runs: list[Run], path: Path) -> None:
    """Left: pixel L1 of training batches against training CPU time; right: held-out PSNR (eval.jsonl)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axis, psnr_axis) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=120)
    raw_psnr: dict[str, float] = {}
    for index, run in enumerate(runs):
        colour = f"C{index}"
        log = _jsonl(run.folder / "log.jsonl")
        for stage in dict.fromkeys(r["stage"] for r in log):
            records = [r for r in log if r["stage"] == stage]
            x = np.array([r["cpu_seconds"] for r in records]) / 60
            y = np.array([r["l1"] for r in records])
            window = max(1, min(50, len(y) // 10))
            smooth = np.convolve(y, np.ones(window) / window, mode="valid")
            loss_axis.plot(x[window - 1:], smooth, color=colour, alpha=0.45 if stage == "vae" else 1.0,
                           linestyle=":" if stage == "vae" else "-", label=f"{run.label}: {stage}")
        evals = [r for r in _jsonl(run.folder / "eval.jsonl") if "cpu_seconds" in r]
        if evals:
            psnr_axis.plot([r["cpu_seconds"] / 60 for r in evals], [r["psnr"] for r in evals], color=colour,
                           marker="o", markersize=3, label=run.label)
            raw_psnr[colour] = evals[0]["raw_psnr"]
    if len(set(raw_psnr.values())) == 1:
        psnr_axis.axhline(next(iter(raw_psnr.values())), color="grey", linestyle="--", label="raw render")
    else:  # runs measured on different eval data: each its own raw line
        for colour, value in raw_psnr.items():
            psnr_axis.axhline(value, color=colour, linestyle="--", alpha=0.6)
    loss_axis.set_yscale("log")
    loss_axis.set_xlabel("training CPU time (min)")
    loss_axis.set_ylabel("pixel L1 (training batches, smoothed)")
    loss_axis.legend(fontsize=7)
    psnr_axis.set_xlabel("training CPU time (min)")
    psnr_axis.set_ylabel("held-out PSNR (dB, eval subset)")
    if psnr_axis.get_legend_handles_labels()[0]:
        psnr_axis.legend(fontsize=7)
    for axis in (loss_axis, psnr_axis):
        axis.grid(True, alpha=0.3)
    figure.tight_layout()
    with atomic_write(path) as handle:
        figure.savefig(handle, format="png")
    plt.close(figure)
    print(f"wrote {path}")


# --- training both models here -------------------------------------------------------------------------------


def train_both(data: list[Path], eval_data: Path, cpu_seconds: float, out_root: Path) -> list[Run]:
    """Train GaussPainter and the baseline on the same pairs for the same process CPU time; resumable."""
    runs = []
    for model in ("painter", "baseline"):
        out = out_root / model
        settings = TrainSettings(model=model, cpu_seconds=cpu_seconds, vae_steps=10**7, steps=10**7,
                                 eval_data=str(eval_data))
        weights = train(data, out, settings) if not (out / "weights" / "model_index.json").is_file() else out / "weights"
        if not (out / EVAL_NAME).is_file():
            report = evaluate(load_painter(weights, device="cpu"), eval_data)
            with atomic_write(out / EVAL_NAME, "w") as handle:
                json.dump(report, handle, indent=1)
        runs.append(Run(out))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, nargs="*", default=[], help="run folders (GaussPainter first)")
    parser.add_argument("--eval-data", type=Path, help="held-out pairs folder (its eval split)")
    parser.add_argument("--evaluate-missing", action="store_true", help="evaluate runs without eval_full.json")
    parser.add_argument("--train", action="store_true", help="train both models here first (needs --data)")
    parser.add_argument("--data", type=Path, nargs="+", help="training pairs folders (with --train)")
    parser.add_argument("--cpu-seconds", type=float, default=3000.0, help="CPU budget per model (with --train)")
    parser.add_argument("--out-root", type=Path, default=Path("painter_bench_runs"), help="where --train trains")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed frames per model (median)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--markdown", action="store_true", help="tables as markdown (for docs/results.md)")
    parser.add_argument("--plot", type=Path, help="write the training curves here (PNG)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = [Run(folder) for folder in args.runs]
    if args.train:
        if not (args.data and args.eval_data):
            parser.error("--train needs --data and --eval-data")
        runs = train_both(args.data, args.eval_data, args.cpu_seconds, args.out_root)
    for run in runs:
        if not run.folder.is_dir():
            parser.error(f"{run.folder}: no such run folder")
    collect_reports(runs, args.eval_data, args.evaluate_missing)
    for run in runs:
        print(f"{run.folder}: {run.note}")
    if runs:
        print()
        print(quality_tables(runs, args.markdown))
    if not args.skip_speed:
        print()
        print(speed_table(speed(runs, args.repeats), args.markdown, args.repeats))
    if args.plot:
        plot_curves(runs, args.plot)


if __name__ == "__main__":
    main()
