"""The `exgs` command line: inspect, convert, render and make cameras (compression and restoration join later).

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


def main(argv: Sequence[str] | None = None) -> int:
    warnings.formatwarning = _one_line_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except ExgsError as error:
        print(f"exgs: error: {error}", file=sys.stderr)
        return 1
    except (OSError, ValueError, RuntimeError) as error:
        print(f"exgs: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("exgs: cancelled", file=sys.stderr)
        return 130
    return 0


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"exgs: warning: {message}\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="exgs", description="Extreme 3D Gaussian Splatting compression.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = _command(commands, "info", run_info, "print a scene file's format, size and bounds")
    info.add_argument("file")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")

    convert = _command(commands, "convert", run_convert, "convert between splat formats (by extension)")
    convert.add_argument("input")
    convert.add_argument("output")

    render = _command(commands, "render", run_render, "render frames from a transforms.json to PNG")
    render.add_argument("scene")
    render.add_argument("--cameras", required=True, help="NeRF-style transforms.json")
    render.add_argument("-o", "--output", required=True, help="output folder (00000.png, 00001.png, ...)")
    render.add_argument("--backend", default="auto", choices=["auto", "torch", "gsplat"])
    render.add_argument("--background", default="0,0,0", type=parse_color, help="R,G,B in [0, 1]")
    render.add_argument("--sh-degree", type=int, default=None, help="render with at most this SH degree")
    render.add_argument("--save-alpha", action="store_true", help="also write alpha/00000.png, ...")

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


def _command(commands, name: str, run: Callable, help_text: str) -> argparse.ArgumentParser:
    sub = commands.add_parser(name, help=help_text, description=help_text)
    sub.set_defaults(run=run)
    return sub


def parse_color(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"background {text!r} is not R,G,B numbers") from None
    if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"background {text!r} must be three numbers in [0, 1], like 1,1,1")
    return values  # type: ignore[return-value]


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
    if args.json:
        print(json.dumps(facts, indent=2))
        return
    print(f"{facts['file']}")
    print(f"  format     {facts['format']}")
    print(f"  gaussians  {facts['gaussians']:,}")
    print(f"  SH degree  {facts['sh_degree']}")
    print(f"  bytes      {facts['bytes']:,}")
    print(f"  bounds     min {_vec(lo)}  max {_vec(hi)}")


def _vec(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def run_convert(args: argparse.Namespace) -> None:
    from exgs_core.io import read_scene, write_scene

    _refuse_overwriting_input(args.input, args.output)
    scene = read_scene(args.input)
    write_scene(scene, args.output)
    print(f"wrote {args.output}: {len(scene):,} Gaussians, {Path(args.output).stat().st_size:,} bytes")


def _refuse_overwriting_input(source: str, target: str) -> None:
    if Path(target).exists() and Path(target).resolve() == Path(source).resolve():
        raise ExgsError(f"{target}: refusing to overwrite the input file")


def run_render(args: argparse.Namespace) -> None:
    from exgs_core.camera import read_transforms
    from exgs_core.io import read_scene
    from exgs_core.images import write_png
    from exgs_core.progress import progress
    from exgs_core.render import render, resolve_backend

    scene = read_scene(args.scene)
    cameras = read_transforms(args.cameras)
    backend = resolve_backend(args.backend)
    out_dir = Path(args.output)
    for index, camera in enumerate(progress(cameras, desc="render", unit="frame")):
        frame = render(scene, camera, background=args.background, sh_degree=args.sh_degree, backend=backend)
        write_png(out_dir / f"{index:05d}.png", frame.rgb.numpy())
        if args.save_alpha:
            write_png(out_dir / "alpha" / f"{index:05d}.png", frame.alpha.numpy())
    print(f"wrote {len(cameras)} frames to {out_dir}")


def run_cameras(args: argparse.Namespace) -> None:
    from exgs_core.camera import inside_out_cameras, orbit_cameras, write_transforms
    from exgs_core.io import read_scene

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
