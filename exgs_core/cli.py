"""The `exgs` command line: inspect, convert, render, make cameras, compress, evaluate, and restore frames with
GaussPainter (and make its training data and train it).

Every failure the user can act on is one line on stderr and a non-zero exit; Ctrl-C cancels cleanly.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from exgs_core.errors import ExgsError
from exgs_core.painter import commands as painter_commands


FILTER_NAN_HELP = ("drop Gaussians with NaN or infinite values (but +-inf opacity and -inf scales) or a zero "
                   "rotation, instead of refusing the input")


def main(argv: Sequence[str] | None = None) -> int:
    from exgs_core.memory import return_freed_memory

    return_freed_memory()  # large scenes are worked on in chunks: what is freed must not stay resident
    return run_parsed(build_parser(), argv)


def run_parsed(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse `argv` and run the chosen command (`args.run`), reporting failures as one line; the exit code.

    An unexpected exception is one line too, naming the command's input; `--debug` shows the traceback of
    any error instead.
    """
    warnings.formatwarning = _one_line_warning
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except KeyboardInterrupt:
        _say("exgs: cancelled")
        return 130
    except Exception as error:
        if getattr(args, "debug", False):
            raise
        if isinstance(error, ExgsError):
            _say(f"exgs: error: {' '.join(str(error).splitlines())}")
            return 1
        _say(f"exgs: error: {_describe_failure(args, error)}")
        return 1
    return 0


def _say(line: str) -> None:
    """`line` on stderr in one write: the processes of a multi-process training share one stderr, and on an
    unbuffered stream (PYTHONUNBUFFERED, as launchers set) print() writes the text and its newline separately,
    so two processes' errors ran together on one line."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _describe_failure(args: argparse.Namespace, error: Exception) -> str:
    """One line for an exception that is not an ExgsError: OSError, ValueError and RuntimeError carry their
    own message; anything else (a bug, or memory) names the input and suggests --debug."""
    if isinstance(error, MemoryError):
        return f"{_main_input(args)}: not enough memory for this request"
    text = " ".join(str(error).split())
    if isinstance(error, (OSError, ValueError, RuntimeError)) and text:
        paths = [getattr(args, name, None) for name in (*_INPUTS, "output", "cameras", "weights")]
        named = any(isinstance(path, str) and path and path in text for path in paths)
        return text if named else f"{_main_input(args)}: {text}"
    return f"{_main_input(args)}: unexpected {type(error).__name__}: {text[:300]} (rerun with --debug for details)"


_INPUTS = ("input", "scene", "file", "reference")


def _main_input(args: argparse.Namespace) -> str:
    for name in _INPUTS:
        value = getattr(args, name, None)
        if isinstance(value, str):
            return value
    return f"exgs {getattr(args, 'command', '')}".strip()


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"exgs: warning: {message}\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="exgs", description="Extreme 3D Gaussian Splatting compression.")
    add_debug_option(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = _command(commands, "info", run_info, "print a scene file's format, size and bounds")
    info.add_argument("file")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")

    convert = _command(commands, "convert", run_convert, "convert between splat formats (by extension)")
    convert.add_argument("input")
    convert.add_argument("output")
    convert.add_argument("--filter-nan", action="store_true", help=FILTER_NAN_HELP)

    render = _command(commands, "render", run_render, "render frames from a transforms.json to PNG")
    render.add_argument("scene")
    render.add_argument("--cameras", required=True, help="NeRF-style transforms.json")
    render.add_argument("-o", "--output", required=True, help="output folder (00000.png, 00001.png, ...)")
    render.add_argument("--backend", default="auto", choices=["auto", "torch", "gsplat"])
    render.add_argument("--background", default="0,0,0", type=parse_color, help="R,G,B in [0, 1]")
    render.add_argument("--sh-degree", type=int, default=None, help="render with at most this SH degree")
    render.add_argument("--save-alpha", action="store_true", help="also write alpha/00000.png, ...")

    compress = _command(commands, "compress", run_compress, "compress a scene into a small .exgs file (UGC)")
    compress.add_argument("input")
    compress.add_argument("-o", "--output", required=True, help="the .exgs file to write")
    target = compress.add_mutually_exclusive_group(required=True)
    target.add_argument("--keep", type=float, help="fraction of Gaussians to keep, in (0, 1]")
    target.add_argument("--size", help="target file size, like 3MB, 500kB or 2.5MiB")
    target.add_argument("--ratio", type=float, help="compression ratio against the INRIA .ply (248 B/Gaussian)")
    compress.add_argument("--sh-degree", type=int, default=None, help="SH degree to keep (default: measured best)")
    views = compress.add_mutually_exclusive_group()
    views.add_argument("--views", type=int, default=None, help="number of automatic scoring views")
    views.add_argument("--cameras", help="score from these views (transforms.json), e.g. your shots")
    compress.add_argument("--inside-out", action="store_true", help="automatic views from inside (rooms)")
    compress.add_argument("--score", choices=["alpha_t", "sigma_t"], default=None, help="significance variant")
    compress.add_argument("--filter-nan", action="store_true", help=FILTER_NAN_HELP)
    compress.add_argument("--method", choices=["auto", "merge", "paper"], default="auto",
                          help="merge what is pruned into what is kept, or drop and amplify (the paper); "
                               "auto (default): the one that renders closer at 100x and 300x, once per scene")
    compress.add_argument("--quantisation-level", type=int, choices=range(7), default=None, metavar="0-6",
                          help="bits per value, 0 finest to 6 coarsest (default: the level that renders best "
                               "at the target size)")
    compress.add_argument("--restoration", choices=["fit", "none"], default="fit",
                          help="fit (default): fit a restoration to this scene and store it in the file when it "
                               "validates better than spending its bytes on Gaussians; none: no restoration")
    compress.add_argument("--fit-steps", type=int, default=None,
                          help="optimisation steps of the restoration's fit (default 2500). The default fit is "
                               "deterministic: the same input gives the same file")
    compress.add_argument("--fit-seconds", type=float, default=None,
                          help="cap on the fit's wall time, rendering included (default: none). When it cuts the "
                               "fit short, the file depends on the machine's speed and load")

    decompress = _command(commands, "decompress", run_decompress, "expand an .exgs file to .ply or .splat")
    decompress.add_argument("input")
    decompress.add_argument("-o", "--output", required=True, help="OUT.ply, OUT.splat or OUT.compressed.ply")

    evaluate = _command(commands, "eval", run_eval, "compare candidates with a reference on test views")
    evaluate.add_argument("reference")
    evaluate.add_argument("candidates", nargs="+")
    evaluate.add_argument("--cameras", required=True, help="test views (transforms.json), not the scoring views")
    evaluate.add_argument("-o", "--output", required=True, help="folder for metrics.json/.md and the pictures")
    evaluate.add_argument("--backend", default="auto", choices=["auto", "torch", "gsplat"])
    restoration = evaluate.add_mutually_exclusive_group()
    restoration.add_argument("--weights", help="GaussPainter weights folder or hub id (default: the shipped weights)")
    restoration.add_argument("--no-restore", action="store_true", help="skip the restored columns")

    restore = _command(commands, "restore", run_restore,
                       "render frames and restore them with the file's fitted restoration (or GaussPainter)")
    restore.add_argument("scene", help="any readable scene: .exgs, .ply, .splat, .compressed.ply, SOG")
    restore.add_argument("--cameras", required=True, help="NeRF-style transforms.json")
    restore.add_argument("-o", "--output", required=True, help="output folder (00000.png, 00001.png, ...)")
    restore.add_argument("--generic", action="store_true",
                         help="restore with the generic GaussPainter instead of the file's own fitted restoration")
    restore.add_argument("--weights", help="generic GaussPainter weights folder or hub id (implies --generic)")
    restore.add_argument("--backend", default="auto", choices=["auto", "torch", "gsplat"])
    restore.add_argument("--background", default="0,0,0", type=parse_color, help="R,G,B in [0, 1]")
    restore.add_argument("--sh-degree", type=int, default=None, help="render with at most this SH degree")
    restore.add_argument("--save-raw", action="store_true", help="also write the raw renders as raw/00000.png, ...")
    restore.add_argument("--save-alpha", action="store_true", help="also write alpha/00000.png, ...")
    restore.add_argument("--strength", default="auto", type=parse_strength,
                         help="share of the correction to apply, 0-1; auto (default): the strength validated when "
                              "the file was compressed; with --generic from the .exgs file's compression ratio "
                              "(none below 60x, all from 100x), 1 for other formats")

    pairs = _command(commands, "painter-data", painter_commands.run_pairs,
                     "render GaussPainter training/evaluation pairs through real UGC compression")
    painter_commands.add_pairs_arguments(pairs)
    train = _command(commands, "train-painter", painter_commands.run_train,
                     "train GaussPainter (or the pixel baseline) on pairs folders; resumable")
    painter_commands.add_train_arguments(train)

    demo = _command(commands, "demo", run_demo,
                    "compress the real scene shipped with exgs to 100x and 300x, render and compare (offline)")
    demo.add_argument("-o", "--output", default=None,
                      help="folder to write (default ./exgs-demo); it must be new, empty or an earlier demo output")
    # For the tests: a faster run through the same pipeline (smaller views, fewer of them, shorter fit).
    demo.add_argument("--size", type=parse_size, default=None, help=argparse.SUPPRESS)
    demo.add_argument("--views", type=int, default=None, help=argparse.SUPPRESS)
    demo.add_argument("--fit-steps", type=int, default=None, help=argparse.SUPPRESS)

    cameras = _command(commands, "cameras", run_cameras, "make cameras around (or inside) a scene")
    cameras.add_argument("scene")
    kind = cameras.add_mutually_exclusive_group(required=True)
    kind.add_argument("--orbit", type=int, metavar="N", help="N views on an orbit around the scene")
    kind.add_argument("--inside-out", type=int, metavar="N", help="N views from inside the scene (rooms)")
    cameras.add_argument("--size", default="512x512", type=parse_size, help="WxH in pixels")
    cameras.add_argument("--up", default="+z", choices=["+x", "-x", "+y", "-y", "+z", "-z"])
    cameras.add_argument("--fov", type=float, default=50.0, help="horizontal field of view in degrees")
    cameras.add_argument("-o", "--output", required=True, help="transforms.json to write")
    return parser


def add_debug_option(parser: argparse.ArgumentParser, subcommand: bool = False) -> None:
    """--debug, before or after the command name (a subcommand's default must not reset `exgs --debug CMD`)."""
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS if subcommand else False,
                        help="show the traceback of an error")


def _command(commands, name: str, run: Callable, help_text: str) -> argparse.ArgumentParser:
    sub = commands.add_parser(name, help=help_text, description=help_text)
    sub.set_defaults(run=run)
    add_debug_option(sub, subcommand=True)
    return sub


def parse_color(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"background {text!r} is not R,G,B numbers") from None
    if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"background {text!r} must be three numbers in [0, 1], like 1,1,1")
    return values  # type: ignore[return-value]


def parse_strength(text: str) -> float | None:
    """None for "auto", else a number in [0, 1]."""
    if text == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"strength {text!r} is not auto or a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"strength {text!r} must be in [0, 1]")
    return value


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not WxH, like 512x512") from None
    if width <= 0 or height <= 0 or width > 16384 or height > 16384:
        raise argparse.ArgumentTypeError(f"size {text!r} must be between 1x1 and 16384x16384")
    return width, height


# --- commands -------------------------------------------------------------------------------------

def run_info(args: argparse.Namespace) -> None:
    from exgs_core.io import read_scene

    scene = read_scene(args.file)
    lo, hi = scene.bounds()
    facts = {
        "file": str(args.file),
        "format": scene.metadata.get("format"),
        "gaussians": len(scene),
        "sh_degree": scene.sh_degree,
        "bytes": scene.metadata.get("source_bytes"),
        "bounds_min": [round(float(v), 6) for v in lo],
        "bounds_max": [round(float(v), 6) for v in hi],
    }
    restoration = scene.metadata.get("restoration")
    if restoration is not None:
        facts["restoration"] = {"kind": restoration.kind, "strength": restoration.strength,
                                "bytes": len(restoration.payload), **restoration.info.get("validated", {})}
    if args.json:
        print(json.dumps(facts, indent=2))
        return
    print(f"{facts['file']}")
    print(f"  format     {facts['format']}")
    print(f"  gaussians  {facts['gaussians']:,}")
    print(f"  SH degree  {facts['sh_degree']}")
    print(f"  bytes      {facts['bytes']:,}")
    print(f"  bounds     min {_vec(lo)}  max {_vec(hi)}")
    if restoration is not None:
        gain = facts["restoration"].get("equal_bytes_gain_db")
        validated = f", {gain:+.2f} dB validated at equal bytes" if isinstance(gain, (int, float)) else ""
        print(f"  restoration  fitted ({restoration.kind}, {len(restoration.payload):,} bytes, strength "
              f"{restoration.strength:g}{validated})")


def _vec(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def run_convert(args: argparse.Namespace) -> None:
    from exgs_core.io import read_scene, write_scene

    _refuse_overwriting_input(args.input, args.output)
    scene = read_scene(args.input, filter_nan=args.filter_nan)
    write_scene(scene, args.output)
    print(f"wrote {args.output}: {len(scene):,} Gaussians, {Path(args.output).stat().st_size:,} bytes")


def _refuse_overwriting_input(source: str, target: str) -> None:
    if Path(target).exists() and Path(target).resolve() == Path(source).resolve():
        raise ExgsError(f"{target}: refusing to overwrite the input file")


def run_render(args: argparse.Namespace) -> None:
    from exgs_core.camera import read_transforms
    from exgs_core.io import read_scene

    scene = read_scene(args.scene)
    cameras = read_transforms(args.cameras)  # bad inputs fail before torch and numba load
    from exgs_core.images import write_png
    from exgs_core.progress import progress
    from exgs_core.render import render, resolve_backend

    backend = resolve_backend(args.backend)
    out_dir = Path(args.output)
    for index, camera in enumerate(progress(cameras, desc="render", unit="frame")):
        frame = render(scene, camera, background=args.background, sh_degree=args.sh_degree, backend=backend)
        write_png(out_dir / f"{index:05d}.png", frame.rgb.numpy())
        if args.save_alpha:
            write_png(out_dir / "alpha" / f"{index:05d}.png", frame.alpha.numpy())
    print(f"wrote {len(cameras)} frames to {out_dir}")


def run_compress(args: argparse.Namespace) -> None:
    if not args.output.lower().endswith(".exgs"):  # checked before the slow imports
        raise ExgsError(f"{args.output}: compress writes an .exgs file; name the output *.exgs "
                        "(`exgs decompress` then writes .ply, .splat or .compressed.ply)")
    from exgs_core.fileio import atomic_write
    from exgs_core.io import read_scene
    from exgs_core.ugc.compress import SIZE_TOLERANCE, CompressSettings, Target, parse_size, scoring_cameras
    from exgs_core.ugc.restoration import RestorationSettings, compress_restored

    _refuse_overwriting_input(args.input, args.output)
    if args.keep is not None:
        target = Target("keep", args.keep)
    elif args.size is not None:
        target = Target("size", parse_size(args.size))
    else:
        target = Target("ratio", args.ratio)
    scene = read_scene(args.input, filter_nan=args.filter_nan)
    if args.cameras:
        from exgs_core.camera import read_transforms

        cameras = read_transforms(args.cameras)
    else:
        cameras = scoring_cameras(scene, views=args.views, inside_out=args.inside_out)
    settings = CompressSettings(method=args.method, quantisation_level=args.quantisation_level)
    if args.sh_degree is not None:
        settings.sh_degree = args.sh_degree
    if args.score is not None:
        settings.variant = args.score
    restoration = RestorationSettings(args.restoration)
    if args.fit_steps is not None:
        if not args.fit_steps >= 1:
            raise ExgsError(f"--fit-steps must be at least 1, got {args.fit_steps}")
        restoration.fit_steps = args.fit_steps
    if args.fit_seconds is not None:
        if not args.fit_seconds > 0:
            raise ExgsError(f"--fit-seconds must be positive, got {args.fit_seconds}")
        restoration.fit_seconds = args.fit_seconds
    bar = _StageBar()
    count = len(scene)
    # the scene is not used after this: compress may drop its SH bands above what the file keeps (memory)
    result = compress_restored(scene, target, cameras, settings, on_progress=bar.update, restoration=restoration,
                               release_input=True)
    bar.close()
    with atomic_write(args.output) as handle:
        handle.write(result.data)
    _print_summary(args.output, result.stats)
    budget = target.size_in_bytes(count)
    if budget is not None and len(result.data) < (1 - SIZE_TOLERANCE) * budget:
        print(f"  note       every Gaussian fits in {len(result.data):,} bytes, less than the {budget:,} asked for")


class _StageBar:
    """One progress bar per compression stage (scoring, packing)."""

    def __init__(self) -> None:
        self.stage: str | None = None
        self.bar = None

    def update(self, stage: str, fraction: float) -> None:
        from tqdm import tqdm

        from exgs_core.progress import progress_enabled

        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=100, desc=stage, unit="%", disable=not progress_enabled(), leave=False)
        if self.bar is not None:
            self.bar.n = int(round(100 * fraction))
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _print_summary(path: str, stats: dict) -> None:
    before, after = stats["bytes_before"], stats["bytes_after"]
    ratio_input = f"{stats['ratio_vs_input']:.1f}x" if stats["ratio_vs_input"] else "n/a"
    print(f"wrote {path} ({stats['target']})")
    print(f"  Gaussians  {stats['gaussians_before']:,} -> {stats['gaussians_after']:,}")
    print(f"  bytes      {before:,} -> {after:,}" if before else f"  bytes      {after:,}")
    print(f"  ratio      {ratio_input} vs the input file, {stats['ratio_vs_inria_ply']:.1f}x vs the INRIA .ply")
    print(f"  time       {stats['seconds']:.1f} s ({stats['scoring_views']} scoring views)")
    if "quantisation_level" in stats:
        print(f"  chosen     method {stats['method']}, quantisation level {stats['quantisation_level']} "
              f"(0 finest), SH degree {stats['sh_degree']}")
    fitted = stats.get("restoration")
    if fitted is None:
        return
    if fitted["stored"]:
        print(f"  restoration  stored ({fitted['section_bytes']:,} bytes, strength {fitted['strength']:.1f}): "
              f"{fitted['gain_db']:+.2f} dB over its raw frames and {fitted['equal_bytes_gain_db']:+.2f} dB over "
              f"no correction at equal bytes, on {fitted['validation_views']} views never fitted; worst view "
              f"{fitted['worst_view_gain_db']:+.2f} dB; fitted in {fitted['fit_seconds']:.0f} s")
    else:
        print(f"  restoration  none: {fitted['reason']}")


def run_decompress(args: argparse.Namespace) -> None:
    from exgs_core.io import read_scene, write_scene

    _refuse_overwriting_input(args.input, args.output)
    scene = read_scene(args.input)
    if scene.metadata.get("format") != "exgs":
        raise ExgsError(f"{args.input}: not an .exgs file (use `exgs convert` for other formats)")
    write_scene(scene, args.output)
    print(f"wrote {args.output}: {len(scene):,} Gaussians, {Path(args.output).stat().st_size:,} bytes")


def run_eval(args: argparse.Namespace) -> None:
    from exgs_core.camera import read_transforms
    from exgs_core.evaluate import evaluate, write_report
    from exgs_core.io import read_scene
    from exgs_core.progress import progress
    from exgs_core.render import render, resolve_backend

    restore_fn, restoration = _eval_restorer(args)  # a bad weights folder fails before any rendering
    if restore_fn is None:
        print(f"restoration skipped: {restoration}")
    reference = read_scene(args.reference)
    candidates = [(Path(p).name, read_scene(p)) for p in args.candidates]
    cameras = read_transforms(args.cameras)
    backend = resolve_backend(args.backend)

    def render_fn(scene, camera):
        frame = render(scene, camera, backend=backend)
        return frame.rgb.numpy(), frame.alpha.numpy()

    bar = progress(range(len(cameras)), desc="eval", unit="view")
    results, frames = evaluate(reference, candidates, cameras, render_fn, on_view=lambda i: bar.update(1),
                               restore_fn=restore_fn, fitted_fn=_fitted_restorer())
    bar.close()
    write_report(Path(args.output), Path(args.reference).name, results, frames, len(cameras), restoration)
    for r in results:
        restored = f" (restored: PSNR {r.restored_psnr:.2f} dB, SSIM {r.restored_ssim:.4f})" if restore_fn else ""
        if r.fitted_psnr is not None:
            restored += f" (restored (fitted): PSNR {r.fitted_psnr:.2f} dB, SSIM {r.fitted_ssim:.4f})"
        print(f"{r.name}: PSNR {r.psnr:.2f} dB, SSIM {r.ssim:.4f}{restored}, {r.bytes:,} bytes, "
              f"{r.ratio_vs_inria_ply:.1f}x vs INRIA .ply")
    print(f"wrote {args.output}/metrics.json, metrics.md, rate_distortion.png, grid.png")


def _fitted_restorer() -> Callable:
    """(scene, rgb, alpha) -> the frame restored with the scene's own fitted restoration, or None without one."""
    from exgs_core.painter.fit import scene_restorer
    from exgs_core.painter.restore import restore

    restorers: dict[int, tuple | None] = {}

    def fitted_fn(scene, rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray | None:
        if id(scene) not in restorers:
            restorers[id(scene)] = scene_restorer(scene)
        found = restorers[id(scene)]
        return None if found is None else restore(rgb, alpha, found[0], found[1])

    return fitted_fn


def _eval_restorer(args: argparse.Namespace) -> tuple[Callable | None, str]:
    """(restore function or None, what restored the frames or why not): explicit --weights must load."""
    from exgs_core.painter.weights import default_weights_installed

    if args.no_restore:
        return None, "--no-restore"
    if args.weights is None and not default_weights_installed():
        return None, "no default GaussPainter weights are installed (pass --weights FOLDER)"
    from exgs_core.painter.restore import restore
    from exgs_core.painter.weights import default_weights_path, load_painter

    painter = load_painter(args.weights)
    from exgs_core.painter.strength import strength_for_ratio

    def restore_fn(rgb: np.ndarray, alpha: np.ndarray, ratio: float | None) -> np.ndarray:
        return restore(rgb, alpha, painter, strength_for_ratio(ratio))

    return restore_fn, f"GaussPainter {args.weights or default_weights_path()}, strength by ratio"


def run_restore(args: argparse.Namespace) -> None:
    from exgs_core.camera import read_transforms
    from exgs_core.images import write_png
    from exgs_core.io import read_scene
    from exgs_core.progress import progress
    from exgs_core.render import render, resolve_backend

    scene, painter, strength, what = _restorer_for(args)
    cameras = read_transforms(args.cameras)
    backend = resolve_backend(args.backend)
    out_dir = Path(args.output)
    from exgs_core.painter.restore import restore

    for index, camera in enumerate(progress(cameras, desc="restore", unit="frame")):
        frame = render(scene, camera, background=args.background, sh_degree=args.sh_degree, backend=backend)
        rgb, alpha = frame.rgb.numpy(), frame.alpha.numpy()
        restored = rgb if painter is None else np.asarray(restore(rgb, alpha, painter, strength))
        write_png(out_dir / f"{index:05d}.png", restored)
        if args.save_raw:
            write_png(out_dir / "raw" / f"{index:05d}.png", rgb)
        if args.save_alpha:
            write_png(out_dir / "alpha" / f"{index:05d}.png", alpha)
    print(f"wrote {len(cameras)} frames to {out_dir} ({what})")


def _restorer_for(args: argparse.Namespace) -> tuple[object, object | None, float, str]:
    """(scene, module or None for raw frames, strength, what restores): the file's own fitted restoration by
    default; the generic GaussPainter only when asked for (--generic or --weights), as nothing showed that it
    helps files without a fitted restoration."""
    from exgs_core.io import read_scene
    from exgs_core.io.exgs import inria_ratio
    from exgs_core.painter.fit import scene_restorer

    if args.generic or args.weights:
        from exgs_core.painter.strength import strength_for_ratio
        from exgs_core.painter.weights import load_painter

        painter = load_painter(args.weights)  # a bad weights folder fails before any rendering
        scene = read_scene(args.scene)
        strength = strength_for_ratio(inria_ratio(scene)) if args.strength is None else args.strength
        return scene, painter, strength, f"generic GaussPainter, strength {strength:.2f}"
    scene = read_scene(args.scene)
    found = scene_restorer(scene)
    if found is None:
        return scene, None, 0.0, "raw: the file holds no fitted restoration (pass --generic for GaussPainter)"
    module, strength = found
    strength = strength if args.strength is None else args.strength
    return scene, module, strength, f"the file's fitted restoration, strength {strength:.2f}"


def run_demo(args: argparse.Namespace) -> None:
    import threading

    from exgs_core.demo import DEFAULT_OUTPUT, DemoSettings, check_output_folder

    given = {"size": args.size, "views": args.views, "fit_steps": args.fit_steps}
    settings = DemoSettings(**{name: value for name, value in given.items() if value is not None})
    out_dir = Path(args.output or DEFAULT_OUTPUT)
    check_output_folder(out_dir, settings.ratios)  # before the slow imports
    from tqdm import tqdm

    from exgs_core.demo import run_demo as demo
    from exgs_core.progress import progress_enabled

    print(f"exgs demo: compressing the shipped scene to {' and '.join(f'{r:g}x' for r in settings.ratios)} and "
          f"comparing renders: 1-2 minutes on 2 cores (the first run also compiles the CPU kernels)")
    bar = tqdm(total=1000, desc="demo", disable=not progress_enabled(), leave=False,
               bar_format="{desc:<48.48} {percentage:3.0f}%|{bar}| {elapsed}")

    def on_stage(what: str, fraction: float) -> None:
        bar.set_description_str(what, refresh=False)
        bar.n = int(round(1000 * fraction))
        bar.refresh()

    stop = threading.Event()
    ticker = threading.Thread(target=lambda: [bar.refresh() for _ in iter(lambda: stop.wait(1.0), True)],
                              daemon=True)  # the elapsed time moves during long steps
    ticker.start()
    try:
        result = demo(out_dir, settings, on_stage)
    finally:
        stop.set()
        ticker.join()
        bar.close()
    original = result.rows[0]
    print(f"original  {original.file}: {original.gaussians:,} Gaussians, {original.bytes:,} bytes "
          f"({original.ratio_vs_inria_ply:.1f}x smaller than its INRIA .ply)")
    for row in result.rows[1:]:
        restored = (f", {row.restored_psnr:.2f} dB restored by its fitted restoration" if row.restored_psnr is not None
                    else " (no fitted restoration stored)")
        print(f"{row.name:<9} {row.file}: {row.gaussians:,} Gaussians, {row.bytes:,} bytes, "
              f"{row.ratio_vs_inria_ply:.1f}x vs the INRIA .ply; PSNR {row.psnr:.2f} dB raw{restored}")
    compiled = "" if result.kernels_were_cached else ", including the first compile of the CPU kernels"
    print(f"time      {result.seconds:.0f} s{compiled} ({result.cpu_seconds:.0f} CPU seconds); restoration fitted "
          f"for {settings.fit_steps} steps (`exgs compress` fits 2,500); PSNR on {settings.views} orbit views of "
          f"{settings.size[0]}x{settings.size[1]}")
    print(f"wrote     {out_dir}/: comparison.png, metrics.md, metrics.json, "
          + ", ".join(row.file for row in result.rows[1:] if row.file))


def run_cameras(args: argparse.Namespace) -> None:
    from exgs_core.camera import inside_out_cameras, orbit_cameras, write_transforms
    from exgs_core.io import read_scene
    from exgs_core.validate import check_frame_count

    views = args.orbit if args.orbit is not None else args.inside_out
    if views <= 0:
        raise ExgsError(f"{args.output}: the number of views must be positive, not {views}")
    check_frame_count(views, lambda problem: ExgsError(f"{args.output}: {problem}"))
    scene = read_scene(args.scene)
    width, height = args.size
    if args.orbit is not None:
        cams = orbit_cameras(scene.means, args.orbit, width, height, up=args.up, fov_deg=args.fov,
                             opacities=scene.opacities())
    else:
        cams = inside_out_cameras(scene.means, args.inside_out, width, height, up=args.up, fov_deg=args.fov)
    write_transforms(cams, args.output)
    print(f"wrote {len(cams)} cameras to {args.output}")


if __name__ == "__main__":
    raise SystemExit(main())
