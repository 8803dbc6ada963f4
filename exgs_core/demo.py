"""`exgs demo`: ExGS on the real scene shipped with the package, in one command and offline.

Compresses the shipped scene (exgs_core.data: "PLAYBOT", 31,000 Gaussians, SH degree 2, CC-BY-4.0) to 100x and
300x with the default fitted restoration, renders the original and both files (read back from disk, restored
by their own fitted restoration) from 8 orbit views, and writes into one folder:

- `playbot-100x.exgs`, `playbot-300x.exgs`: the compressed scenes (any `exgs` command, or Blender, reads them);
- `comparison.png`: original | 100x | 300x from one view, with bytes, ratio and PSNR written on the picture;
- `metrics.md` and `metrics.json`: per file its Gaussians, bytes, both ratios, PSNR and SSIM raw and restored,
  the settings and the time of every stage;
- `.exgs-demo`: a marker saying the folder is a demo output.

The output folder must be missing, empty, or a previous demo output (it holds the marker and only the files
above): then the demo's own files are replaced. Any other file in it makes the demo refuse, naming the folder
and the file, so it never overwrites anything of the user's.

The pipeline is the real one (compress_restored with `exgs compress`'s defaults, the .exgs writer and reader,
the renderer, evaluate() and the fitted restoration), with one setting cut to keep the whole run under 2 minutes
on 2 CPU cores: the restoration is fitted for DEMO_FIT_STEPS optimisation steps instead of `exgs compress`'s
2,500 (said in the output and in metrics.md). The two compressions run in two processes at once (their fits
are single-threaded); the files are the same as one after the other.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from exgs_core.data import DEMO_CREDIT, DEMO_NAME, DEMO_UP_AXIS, demo_scene_path
from exgs_core.errors import ExgsError

DEFAULT_OUTPUT = "exgs-demo"
RATIOS = (100.0, 300.0)
VIEWS = 8  # orbit views rendered and measured
SIZE = (400, 300)  # pixels of the measured views (and of each panel of comparison.png)
PICTURE_VIEW = 6  # the orbit view shown in comparison.png: the robot from the front
# `exgs compress` fits 2,500 steps; the demo's budget is 2 minutes for everything on 2 cores. Measured from a fresh
# clone on a 2-core machine shared with other jobs: 145 s with the first compile (104 CPU seconds), 84 s after
# (84 CPU seconds); the compressions take 30-34 CPU seconds each, in parallel.
DEMO_FIT_STEPS = 500
MARKER = ".exgs-demo"
COMPILED_AFTER_CPU_SECONDS = 15.0  # a warm-up with cached kernels takes a few seconds (importing torch and numba)
LABEL_HEIGHT = 58  # pixels of the caption band above each panel of comparison.png

StageCallback = Callable[[str, float], None]  # (stage, fraction of the whole demo done)


def exgs_name(ratio: float) -> str:
    return f"{DEMO_NAME}-{ratio:g}x.exgs"


def output_names(ratios: tuple[float, ...] = RATIOS) -> tuple[str, ...]:
    return (*[exgs_name(r) for r in ratios], "comparison.png", "metrics.md", "metrics.json", MARKER)


@dataclass
class DemoSettings:
    ratios: tuple[float, ...] = RATIOS
    views: int = VIEWS
    size: tuple[int, int] = SIZE
    fit_steps: int = DEMO_FIT_STEPS
    picture_view: int = PICTURE_VIEW
    parallel: bool = True  # one process per ratio when the machine has two cores or more

    def __post_init__(self) -> None:
        if self.views < 1:
            raise ExgsError(f"the demo needs at least one view, got {self.views}")
        if not 1 <= self.fit_steps:
            raise ExgsError(f"the demo's fit steps must be at least 1, got {self.fit_steps}")
        if min(self.size) < 16:
            raise ExgsError(f"the demo's render size must be at least 16x16, got {self.size[0]}x{self.size[1]}")


@dataclass
class DemoRow:
    """One column of the comparison: the original or a compressed file, measured on the demo's views."""

    name: str
    file: str | None
    gaussians: int
    bytes: int
    ratio_vs_inria_ply: float
    ratio_vs_shipped_file: float
    psnr: float | None = None  # raw render against the original's (None: the original itself)
    ssim: float | None = None
    restored_psnr: float | None = None  # with the file's own fitted restoration (None: none stored)
    restored_ssim: float | None = None
    restoration: str = ""  # what the compressor decided about the fitted restoration
    compress_seconds: float | None = None


@dataclass
class DemoResult:
    output: Path
    rows: list[DemoRow]
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    kernels_were_cached: bool = True
    settings: DemoSettings = field(default_factory=DemoSettings)
    cpu_seconds: float = 0.0  # of this process and the compressions' processes
    stage_cpu_seconds: dict[str, str] = field(default_factory=dict)


# --- the output folder -------------------------------------------------------------------------------

def check_output_folder(out_dir: Path, ratios: tuple[float, ...] = RATIOS) -> None:
    """Refuse a folder the demo must not write into: a file, or a folder holding anything but a previous demo's
    output (its marker and its own files)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ExgsError(f"{out_dir}: exists and is not a folder; pass another -o")
    if not out_dir.is_dir():
        return
    entries = sorted(entry.name for entry in os.scandir(out_dir))
    if not entries:
        return
    if MARKER not in entries:
        raise ExgsError(f"{out_dir}: the folder is not empty and is not an earlier `exgs demo` output (it holds "
                        f"{entries[0]!r}{' and more' if len(entries) > 1 else ''}); the demo never writes into "
                        "it: pass -o with a new or empty folder")
    ours = set(output_names(ratios))
    foreign = [name for name in entries if name not in ours and not _stale_temporary(name)]
    if foreign:
        raise ExgsError(f"{out_dir}: an earlier `exgs demo` output, but it also holds {foreign[0]!r}, which the "
                        "demo did not write; the demo does not replace a folder with other files in it: move "
                        "them, or pass -o with a new folder")


def _stale_temporary(name: str) -> bool:
    """A temporary an interrupted atomic_write left behind (the next write removes it)."""
    return name.startswith(".") and name.endswith(".tmp")


# --- the run ------------------------------------------------------------------------------------------

# Share of the whole run per stage, for one progress bar (from measured runs: the two fitted compressions
# take about three quarters of the time).
_WEIGHTS = {"kernels": 0.08, "compress": 0.36, "compress_more": 0.28, "render": 0.28}
# Share of one fitted compression per compress() stage (choosing the level and count, then the restoration).
_COMPRESS_STAGES = {"scoring": (0.0, 0.03), "merging": (0.03, 0.45), "packing": (0.03, 0.45),
                    "sampling": (0.03, 0.45), "done": (0.45, 0.45), "rendering pairs": (0.45, 0.7),
                    "fitting": (0.7, 1.0)}
_STAGE_NAMES = {"scoring": "scoring Gaussians", "merging": "choosing what to keep", "packing": "choosing what to keep",
                "sampling": "choosing what to keep", "done": "choosing what to keep",
                "rendering pairs": "rendering the fit's views", "fitting": "fitting the restoration"}


class _Stages:
    """Maps each step's own progress onto the run's 0..1, never going back. The compressions (one per ratio,
    in parallel) share one step: its progress is the mean of theirs."""

    def __init__(self, callback: StageCallback | None, ratios: tuple[float, ...]) -> None:
        self.callback = callback or (lambda stage, fraction: None)
        weights = [("kernels", _WEIGHTS["kernels"]), ("compress", _WEIGHTS["compress"] + _WEIGHTS["compress_more"]),
                   ("render", _WEIGHTS["render"])]
        total = sum(w for _, w in weights)
        self.starts: dict[str, tuple[float, float]] = {}
        at = 0.0
        for name, weight in weights:
            self.starts[name] = (at, weight / total)
            at += weight / total
        self.done = 0.0
        self.seconds: dict[str, float] = {}
        self.cpu: dict[str, str] = {}  # CPU seconds per stage, as text (per process for the compressions)
        self.ratios = ratios
        self.compress_fractions = {ratio: 0.0 for ratio in ratios}
        self.passes = {ratio: [0, ""] for ratio in ratios}

    def report(self, step: str, fraction: float, what: str) -> None:
        start, width = self.starts[step]
        self.done = max(self.done, start + width * min(1.0, max(0.0, fraction)))
        self.callback(what, self.done)

    def compress_progress(self, ratio: float, stage: str, fraction: float) -> None:
        """compress() reports the size search as many short "merging"/"packing"/"sampling" passes, each from 0
        to 1: that part advances by the passes seen (about 40-80 per file), not by their own fractions."""
        low, high = _COMPRESS_STAGES.get(stage, (0.0, 0.0))
        if stage in ("merging", "packing", "sampling"):
            passes = self.passes[ratio]
            if stage != passes[1]:
                passes[0] += 1
                passes[1] = stage
            fraction = 1.0 - float(np.exp(-passes[0] / 40.0))
        self.compress_fractions[ratio] = max(self.compress_fractions[ratio], low + (high - low) * fraction)
        mean = sum(self.compress_fractions.values()) / len(self.compress_fractions)
        self.report("compress", mean, f"{ratio:g}x: {_STAGE_NAMES.get(stage, stage)}")


def _compress_stage_name(settings: DemoSettings) -> str:
    names = " and ".join(f"{r:g}x" for r in settings.ratios)
    how = "in parallel, one process each" if _parallel(settings) else "one after the other"
    return f"compressing to {names} ({how})"


def _parallel(settings: DemoSettings) -> bool:
    return settings.parallel and len(settings.ratios) > 1 and (os.cpu_count() or 1) >= 2


def _compress_one(ratio: float, fit_steps: int, put: Callable[[tuple], None]) -> None:
    """Compress the shipped scene to `ratio` as `exgs compress --ratio` does (default settings, 24 orbit scoring
    views, a fitted restoration of `fit_steps` steps); put ("progress", ratio, stage, fraction) messages and
    finally ("done", ratio, data, stats)."""
    from exgs_core.io import read_scene
    from exgs_core.ugc.compress import CompressSettings, Target, scoring_cameras
    from exgs_core.ugc.restoration import RestorationSettings, compress_restored

    clock, cpu_clock = time.perf_counter(), time.process_time()
    with demo_scene_path() as path:
        scene = read_scene(path)
    result = compress_restored(scene, Target("ratio", ratio), scoring_cameras(scene), CompressSettings(),
                               on_progress=lambda stage, fraction: put(("progress", ratio, stage, fraction)),
                               restoration=RestorationSettings("fit", fit_steps=fit_steps))
    stats = {"gaussians_after": result.stats["gaussians_after"], "restoration": result.stats.get("restoration"),
             "demo_seconds": round(time.perf_counter() - clock, 1),
             "demo_cpu_seconds": round(time.process_time() - cpu_clock, 1)}
    put(("done", ratio, result.data, stats))


def _compress_job(ratio: float, fit_steps: int, queue) -> None:
    """_compress_one in a child process, on one thread (numba and torch): the other compression has the other
    core, and oversubscribed OpenMP threads spin. Any failure is sent back as one line."""
    for name in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # before numba and torch load
        os.environ[name] = "1"
    try:
        _compress_one(ratio, fit_steps, queue.put)
    except BaseException as error:  # noqa: B036 - reported by the parent, which owns the terminal
        queue.put(("error", ratio, f"{type(error).__name__}: {error}"))


def _compress_all(settings: DemoSettings, stages: _Stages) -> dict[float, tuple[bytes, dict]]:
    """{ratio: (.exgs bytes, stats)}: one process per ratio on a machine with two cores or more (the fits are
    single-threaded), else one after the other in this process."""
    results: dict[float, tuple[bytes, dict]] = {}

    def handle(message: tuple) -> None:
        kind, ratio = message[0], message[1]
        if kind == "progress":
            stages.compress_progress(ratio, message[2], message[3])
        elif kind == "done":
            results[ratio] = (message[2], message[3])
            stages.compress_progress(ratio, "fitting", 1.0)
        else:
            raise ExgsError(f"exgs demo: compressing the shipped scene to {ratio:g}x failed: {message[2]}")

    if not _parallel(settings):
        for ratio in settings.ratios:
            _compress_one(ratio, settings.fit_steps, handle)
        return results
    import multiprocessing
    import queue as queues

    context = multiprocessing.get_context("spawn")  # no fork of a process that holds torch's and numba's threads
    messages = context.Queue()
    workers = [context.Process(target=_compress_job, args=(ratio, settings.fit_steps, messages), daemon=True,
                               name=f"exgs-demo-{ratio:g}x") for ratio in settings.ratios]
    for worker in workers:
        worker.start()
    try:
        while len(results) < len(settings.ratios):
            try:
                handle(messages.get(timeout=1.0))
            except queues.Empty:
                for ratio, worker in zip(settings.ratios, workers):
                    if ratio not in results and not worker.is_alive() and messages.empty():
                        raise ExgsError(f"exgs demo: the process compressing to {ratio:g}x stopped "
                                        f"(exit code {worker.exitcode})") from None
    finally:
        for worker in workers:
            if worker.is_alive() and len(results) < len(settings.ratios):
                worker.terminate()
            worker.join(timeout=10)
    return results


def run_demo(out_dir: str | os.PathLike = DEFAULT_OUTPUT, settings: DemoSettings | None = None,
             on_stage: StageCallback | None = None) -> DemoResult:
    """Run the demo into `out_dir` (see the module's docstring); on_stage(what, fraction of the run done)."""
    from exgs_core.camera import orbit_cameras
    from exgs_core.evaluate import evaluate
    from exgs_core.fileio import atomic_write
    from exgs_core.io import read_scene
    from exgs_core.io.ply import INRIA_BYTES_PER_GAUSSIAN
    from exgs_core.render import render
    from exgs_core.worker import kernels_cached, warm_up

    settings = settings or DemoSettings()
    out = Path(out_dir)
    check_output_folder(out, settings.ratios)
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    stages = _Stages(on_stage, settings.ratios)

    cached = kernels_cached()
    stages.report("kernels", 0.0, "compiling the CPU kernels (numba, first run only)" if not cached
                  else "loading the CPU kernels")
    clock, cpu_clock = time.perf_counter(), time.process_time()
    warm_up()
    with demo_scene_path() as path:
        scene = read_scene(path)
        shipped_name, shipped_bytes = path.name, path.stat().st_size
    stages.seconds["kernels and reading the scene"] = time.perf_counter() - clock
    stages.cpu["kernels and reading the scene"] = f"{time.process_time() - cpu_clock:.1f}"
    # numba's cache may live elsewhere (NUMBA_CACHE_DIR) than kernels_cached() looks: a long warm-up compiled
    cached = cached and time.process_time() - cpu_clock < COMPILED_AFTER_CPU_SECONDS
    stages.report("kernels", 1.0, "read the shipped scene")

    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / MARKER, "w") as handle:  # from now on the folder is the demo's
        handle.write("This folder was written by `exgs demo`; running it again replaces the demo's files.\n")

    inria_bytes = INRIA_BYTES_PER_GAUSSIAN * len(scene)
    rows = [DemoRow("original", shipped_name, len(scene), shipped_bytes, inria_bytes / shipped_bytes, 1.0)]
    clock = time.perf_counter()
    compressed = _compress_all(settings, stages)
    stages.seconds[_compress_stage_name(settings)] = time.perf_counter() - clock
    stages.cpu[_compress_stage_name(settings)] = ", ".join(f"{ratio:g}x {compressed[ratio][1]['demo_cpu_seconds']:.1f}"
                                                           for ratio in settings.ratios)
    for ratio in settings.ratios:
        data, stats = compressed[ratio]
        with atomic_write(out / exgs_name(ratio)) as handle:
            handle.write(data)
        rows.append(DemoRow(f"{ratio:g}x", exgs_name(ratio), int(stats["gaussians_after"]), len(data),
                            inria_bytes / len(data), shipped_bytes / len(data),
                            restoration=_restoration_note(stats.get("restoration")),
                            compress_seconds=stats["demo_seconds"]))

    clock, cpu_clock = time.perf_counter(), time.process_time()
    width, height = settings.size
    views = orbit_cameras(scene.means, settings.views, width, height, up=DEMO_UP_AXIS,
                          opacities=scene.opacities())
    candidates = [(row.name, read_scene(out / row.file)) for row in rows[1:] if row.file]  # as a user reads them
    picture: dict[str, np.ndarray] = {}
    renders = [0]
    total_renders = settings.views * (1 + len(candidates))

    def render_fn(scene_, camera):
        frame = render(scene_, camera, background=(1.0, 1.0, 1.0))
        renders[0] += 1
        stages.report("render", renders[0] / total_renders, f"rendering {settings.views} views of each")
        return frame.rgb.numpy(), frame.alpha.numpy()

    from exgs_core.cli import _fitted_restorer  # the restorer `exgs eval` uses

    picked = min(settings.picture_view, settings.views - 1)
    results, _ = _evaluate_keeping(evaluate, scene, candidates, views, render_fn, _fitted_restorer(), picked,
                                   picture)
    for row, measured in zip(rows[1:], results):
        row.psnr, row.ssim = round(measured.psnr, 2), round(measured.ssim, 4)
        if measured.fitted_psnr is not None:
            row.restored_psnr, row.restored_ssim = round(measured.fitted_psnr, 2), round(measured.fitted_ssim, 4)
    stages.seconds["rendering and measuring"] = time.perf_counter() - clock
    stages.cpu["rendering and measuring"] = f"{time.process_time() - cpu_clock:.1f}"

    demo = DemoResult(out, rows, 0.0, stages.seconds, cached, settings, stage_cpu_seconds=stages.cpu)
    comparison_image(out / "comparison.png", picture, rows, settings.size, settings.views)
    demo.seconds = time.perf_counter() - start
    demo.cpu_seconds = _cpu_seconds() - cpu_start
    with atomic_write(out / "metrics.md", "w") as handle:
        handle.write(metrics_markdown(demo))
    with atomic_write(out / "metrics.json", "w") as handle:
        json.dump(_json(demo), handle, indent=2)
    stages.report("render", 1.0, "done")
    return demo


def _evaluate_keeping(evaluate, reference, candidates, views, render_fn, fitted_fn, picked: int,
                      picture: dict[str, np.ndarray]):
    """evaluate(), keeping the frames of view `picked` for the comparison picture: the original, and per
    candidate the frame a user sees (restored by its fitted restoration when it holds one, else raw)."""
    names = {id(scene): name for name, scene in candidates}
    current: dict[str, np.ndarray] = {}

    def keeping_render(scene, camera):
        rgb, alpha = render_fn(scene, camera)
        if scene is reference:
            current.clear()
        current[names.get(id(scene), "original")] = rgb
        return rgb, alpha

    def keeping_fitted(scene, rgb, alpha):
        restored = fitted_fn(scene, rgb, alpha)
        if restored is not None:
            current[names[id(scene)]] = np.asarray(restored)
        return restored

    def on_view(i: int) -> None:
        if i == picked:
            picture.update(current)

    return evaluate(reference, candidates, views, keeping_render, on_view=on_view, fitted_fn=keeping_fitted)


def _cpu_seconds() -> float:
    """CPU time (user and system) of this process and of its finished child processes."""
    try:
        import resource
    except ImportError:  # Windows
        return time.process_time()
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _restoration_note(stats: dict | None) -> str:
    if not stats:
        return "none"
    if stats.get("stored"):
        return (f"fitted, {stats['section_bytes']:,} bytes in the file, {stats['equal_bytes_gain_db']:+.2f} dB "
                f"over its bytes spent on Gaussians on {stats['validation_views']} views never fitted "
                f"({stats['steps']} steps)")
    return f"none stored: {stats.get('reason', 'not fitted')}"


# --- the outputs --------------------------------------------------------------------------------------

def comparison_image(path: Path, picture: dict[str, np.ndarray], rows: list[DemoRow], size: tuple[int, int],
                     views: int) -> None:
    """Original | each compressed file side by side, each under a caption band with its bytes, ratio and PSNR."""
    from PIL import Image, ImageDraw

    from exgs_core.fileio import atomic_write
    from exgs_core.images import to_uint8

    width, height = size
    canvas = Image.new("RGB", (width * len(rows), height + LABEL_HEIGHT), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    big, small = _font(17), _font(13)
    for column, row in enumerate(rows):
        frame = picture.get(row.name)
        if frame is not None:
            canvas.paste(Image.fromarray(to_uint8(frame)), (column * width, LABEL_HEIGHT))
        x = column * width + 8
        title = ("original" if row.file is None or row.name == "original" else f"{row.name} ExGS")
        draw.text((x, 5), f"{title}: {row.bytes / 1000:,.1f} kB", fill=(0, 0, 0), font=big)
        if row.name == "original":
            line = f"{row.gaussians:,} Gaussians, {row.ratio_vs_inria_ply:.1f}x smaller than its INRIA .ply"
            second = "shipped SOG: the reference"
        else:
            line = f"{row.gaussians:,} Gaussians, {row.ratio_vs_inria_ply:.1f}x vs the INRIA .ply"
            if row.restored_psnr is not None:
                second = f"PSNR {row.restored_psnr:.2f} dB restored, {row.psnr:.2f} raw ({views} views)"
            else:
                second = f"PSNR {row.psnr:.2f} dB ({views} views; no fitted restoration)"
        draw.text((x, 25), line, fill=(40, 40, 40), font=small)
        draw.text((x, 40), second, fill=(40, 40, 40), font=small)
        if column:
            draw.line([(column * width, 0), (column * width, height + LABEL_HEIGHT)], fill=(160, 160, 160))
    with atomic_write(path) as handle:
        canvas.save(handle, format="PNG")


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow 10.1+ with FreeType: a scalable font
    except TypeError:
        return ImageFont.load_default()


def metrics_markdown(demo: DemoResult) -> str:
    s = demo.settings
    compiled = ("" if demo.kernels_were_cached
                else ", including the first compile of the CPU kernels (numba; cached on disk for the next runs)")
    lines = [
        f"# exgs demo: {DEMO_NAME}",
        "",
        f"Scene: the shipped `{demo.rows[0].file}` ({demo.rows[0].gaussians:,} Gaussians), {DEMO_CREDIT}.",
        "",
        f"PSNR and SSIM against the original's renders on {s.views} orbit views of {s.size[0]}x{s.size[1]} pixels "
        "(white background); \"restored\" is the file's own fitted restoration, as `exgs restore`, `exgs eval` and "
        "Blender's F12 apply it. Ratios are against the scene as a standard INRIA .ply (248 bytes per Gaussian, "
        "the basis of \"100x\") and against the shipped SOG file.",
        "",
        "| file | Gaussians | bytes | ratio vs INRIA .ply | ratio vs shipped SOG | PSNR raw (dB) | SSIM raw | "
        "PSNR restored (dB) | SSIM restored | fitted restoration |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in demo.rows:
        if row.name == "original":
            lines.append(f"| {row.file} (original) | {row.gaussians:,} | {row.bytes:,} | "
                         f"{row.ratio_vs_inria_ply:.1f}x | 1.0x | - | - | - | - | - |")
            continue
        restored = ("- | -" if row.restored_psnr is None else f"{row.restored_psnr:.2f} | {row.restored_ssim:.4f}")
        lines.append(f"| {row.file} | {row.gaussians:,} | {row.bytes:,} | {row.ratio_vs_inria_ply:.1f}x | "
                     f"{row.ratio_vs_shipped_file:.1f}x | {row.psnr:.2f} | {row.ssim:.4f} | {restored} | "
                     f"{row.restoration} |")
    lines += [
        "",
        "## How this was made",
        "",
        f"- `exgs compress`'s pipeline (significance from 24 orbit views, the method, quantisation level and SH "
        f"degree chosen by rendered error, then a restoration fitted to the scene and stored only when it validates "
        f"better than spending its bytes on Gaussians), with **{s.fit_steps} fit steps instead of the default "
        "2,500**, to keep the whole demo to a minute or two on 2 CPU cores; `exgs compress` with its defaults "
        "fits longer and usually restores a little better.",
        "- The compressions to each ratio run at once, one process each (the same files as one after the other).",
        "- Both files are read back from disk before they are rendered.",
        "",
        "## Time",
        "",
        f"Total: {demo.seconds:.1f} s{compiled}; "
        f"{demo.cpu_seconds:.0f} CPU seconds ({os.cpu_count()} cores; wall time grows when other programs use them).",
        "",
    ]
    lines += [f"- {name}: {seconds:.1f} s (CPU seconds: {demo.stage_cpu_seconds.get(name, '?')})"
              for name, seconds in demo.stage_seconds.items()]
    return "\n".join(lines) + "\n"


def _json(demo: DemoResult) -> dict:
    return {"scene": DEMO_NAME, "credit": DEMO_CREDIT, "settings": asdict(demo.settings),
            "seconds": round(demo.seconds, 1), "cpu_seconds": round(demo.cpu_seconds, 1),
            "kernels_were_cached": demo.kernels_were_cached,
            "stage_seconds": {k: round(v, 1) for k, v in demo.stage_seconds.items()},
            "stage_cpu_seconds": demo.stage_cpu_seconds,
            "files": [asdict(row) for row in demo.rows]}
