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

The pipeline is the real one (compress_restored, the .exgs writer and reader, the renderer, evaluate() and the
fitted restoration) with two settings cut to keep the whole run under 2 minutes on 2 CPU cores: the restoration
is fitted for DEMO_FIT_STEPS optimisation steps instead of `exgs compress`'s 2,500, and the 300x file reuses the
compression method chosen for the 100x one (compress() chooses it once per scene from both ratios anyway).
Both are said in the output and in metrics.md.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
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
DEMO_FIT_STEPS = 500  # `exgs compress` fits 2,500 steps; the demo's budget is 2 minutes for everything
MARKER = ".exgs-demo"
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

    def files(self) -> list[Path]:
        return [self.output / name for name in output_names(self.settings.ratios) if name != MARKER]


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
    """Maps each step's own progress onto the run's 0..1, never going back."""

    def __init__(self, callback: StageCallback | None, ratios: tuple[float, ...]) -> None:
        self.callback = callback or (lambda stage, fraction: None)
        weights = [("kernels", _WEIGHTS["kernels"])]
        weights += [(f"compress {r:g}x", _WEIGHTS["compress" if i == 0 else "compress_more"])
                    for i, r in enumerate(ratios)]
        weights += [("render", _WEIGHTS["render"])]
        total = sum(w for _, w in weights)
        self.starts: dict[str, tuple[float, float]] = {}
        at = 0.0
        for name, weight in weights:
            self.starts[name] = (at, weight / total)
            at += weight / total
        self.done = 0.0
        self.seconds: dict[str, float] = {}

    def report(self, step: str, fraction: float, what: str) -> None:
        start, width = self.starts[step]
        self.done = max(self.done, start + width * min(1.0, max(0.0, fraction)))
        self.callback(what, self.done)

    def compress_callback(self, step: str) -> Callable[[str, float], None]:
        def on_progress(stage: str, fraction: float) -> None:
            low, high = _COMPRESS_STAGES.get(stage, (0.0, 0.0))
            self.report(step, low + (high - low) * fraction, f"{step}: {_STAGE_NAMES.get(stage, stage)}")
        return on_progress


def run_demo(out_dir: str | os.PathLike = DEFAULT_OUTPUT, settings: DemoSettings | None = None,
             on_stage: StageCallback | None = None) -> DemoResult:
    """Run the demo into `out_dir` (see the module's docstring); on_stage(what, fraction of the run done)."""
    from exgs_core.camera import orbit_cameras
    from exgs_core.evaluate import evaluate
    from exgs_core.fileio import atomic_write
    from exgs_core.io import read_scene
    from exgs_core.io.ply import INRIA_BYTES_PER_GAUSSIAN
    from exgs_core.render import render
    from exgs_core.ugc.compress import CompressSettings, Target, scoring_cameras
    from exgs_core.ugc.restoration import RestorationSettings, compress_restored
    from exgs_core.ugc.significance import significance
    from exgs_core.worker import kernels_cached, warm_up

    settings = settings or DemoSettings()
    out = Path(out_dir)
    check_output_folder(out, settings.ratios)
    start = time.perf_counter()
    stages = _Stages(on_stage, settings.ratios)

    cached = kernels_cached()
    stages.report("kernels", 0.0, "compiling the CPU kernels (numba, first run only)" if not cached
                  else "loading the CPU kernels")
    clock = time.perf_counter()
    warm_up()
    with demo_scene_path() as path:
        scene = read_scene(path)
        shipped_name, shipped_bytes = path.name, path.stat().st_size
    stages.seconds["kernels and reading the scene"] = time.perf_counter() - clock
    stages.report("kernels", 1.0, "read the shipped scene")

    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / MARKER, "w") as handle:  # from now on the folder is the demo's
        handle.write("This folder was written by `exgs demo`; running it again replaces the demo's files.\n")

    cameras = scoring_cameras(scene)
    scores = None
    compress_settings = CompressSettings()
    restoration = RestorationSettings("fit", fit_steps=settings.fit_steps)
    inria_bytes = INRIA_BYTES_PER_GAUSSIAN * len(scene)
    rows = [DemoRow("original", shipped_name, len(scene), shipped_bytes, inria_bytes / shipped_bytes, 1.0)]
    for ratio in settings.ratios:
        step = f"compress {ratio:g}x"
        clock = time.perf_counter()
        on_progress = stages.compress_callback(step)
        if scores is None:  # the same significance scores serve every ratio
            scores = significance(scene, cameras, compress_settings.variant,
                                  on_view=lambda i: on_progress("scoring", (i + 1) / len(cameras)))
        result = compress_restored(scene, Target("ratio", ratio), cameras, compress_settings, on_progress,
                                   scores=scores, restoration=restoration)
        if compress_settings.method == "auto" and "method" in result.stats:
            # compress() chooses the method once per scene (from its files at 100x and 300x); the level and SH
            # degree are still chosen per target
            compress_settings = replace(compress_settings, method=result.stats["method"])
        with atomic_write(out / exgs_name(ratio)) as handle:
            handle.write(result.data)
        seconds = time.perf_counter() - clock
        stages.seconds[step] = seconds
        rows.append(DemoRow(f"{ratio:g}x", exgs_name(ratio), int(result.stats["gaussians_after"]), len(result.data),
                            inria_bytes / len(result.data), shipped_bytes / len(result.data),
                            restoration=_restoration_note(result.stats.get("restoration")),
                            compress_seconds=round(seconds, 1)))
        stages.report(step, 1.0, f"wrote {exgs_name(ratio)}")

    clock = time.perf_counter()
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

    demo = DemoResult(out, rows, 0.0, stages.seconds, cached, settings)
    comparison_image(out / "comparison.png", picture, rows, settings.size)
    demo.seconds = time.perf_counter() - start
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


def _restoration_note(stats: dict | None) -> str:
    if not stats:
        return "none"
    if stats.get("stored"):
        return (f"fitted, {stats['section_bytes']:,} bytes in the file, {stats['equal_bytes_gain_db']:+.2f} dB "
                f"over its bytes spent on Gaussians on {stats['validation_views']} views never fitted "
                f"({stats['steps']} steps)")
    return f"none stored: {stats.get('reason', 'not fitted')}"


# --- the outputs --------------------------------------------------------------------------------------

def comparison_image(path: Path, picture: dict[str, np.ndarray], rows: list[DemoRow], size: tuple[int, int]
                     ) -> None:
    """Original | each compressed file side by side, each under a caption band with its bytes, ratio and PSNR."""
    from PIL import Image, ImageDraw, ImageFont

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
                second = f"PSNR {row.restored_psnr:.2f} dB restored ({row.psnr:.2f} raw)"
            else:
                second = f"PSNR {row.psnr:.2f} dB (no fitted restoration)"
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
        "2,500** so that the whole demo stays under 2 minutes on 2 CPU cores; `exgs compress` with its defaults "
        "fits longer and usually restores a little better.",
        "- The 300x file reuses the compression method chosen for the 100x file (compress() chooses it once per "
        "scene, from both ratios); its quantisation level and SH degree are chosen again.",
        "- Both files are read back from disk before they are rendered.",
        "",
        "## Time",
        "",
        f"Total: {demo.seconds:.1f} s{'' if demo.kernels_were_cached else ', including the first compile of the CPU kernels (numba; cached on disk for the next runs)'}.",
        "",
    ]
    lines += [f"- {name}: {seconds:.1f} s" for name, seconds in demo.stage_seconds.items()]
    return "\n".join(lines) + "\n"


def _json(demo: DemoResult) -> dict:
    return {"scene": DEMO_NAME, "credit": DEMO_CREDIT, "settings": asdict(demo.settings),
            "seconds": round(demo.seconds, 1), "kernels_were_cached": demo.kernels_were_cached,
            "stage_seconds": {k: round(v, 1) for k, v in demo.stage_seconds.items()},
            "files": [asdict(row) for row in demo.rows]}
