"""The painter's commands, defined once: `exgs painter-data|train-painter` and `python -m exgs_core.painter
pairs|train|eval` (the same options; also `accelerate launch -m exgs_core.painter train ...`) mount these.

Cheap to import (torch loads when a command runs), so the `exgs` parser can mount them.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from typing import TYPE_CHECKING

from exgs_core.errors import ExgsError

if TYPE_CHECKING:
    from exgs_core.painter.train import TrainSettings

SESSION_END_EXIT = 3  # stopped by the session allowance: run the same command again to resume


def add_pairs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", default="../shared/data", help="folder with scenes/ and mesh2splat/")
    parser.add_argument("--scenes", nargs="*", help="scene files (default: every scene under --data-root)")
    parser.add_argument("-o", "--out", required=True, help="pairs folder (resumable: finished scenes are kept)")
    parser.add_argument("--split", choices=["train", "eval"], default="train",
                        help="make pairs of this split's scenes only (the split is by scene)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=192, help="square renders, pixels")
    parser.add_argument("--views", type=int, default=32, help="views per scene")
    parser.add_argument("--captured-view-factor", type=int, default=2, help="times as many views for captured scenes")
    parser.add_argument("--targets", type=int, default=4, help="compressions per scene")
    parser.add_argument("--samples-per-view", type=int, default=2)
    parser.add_argument("--ratios", type=float, nargs="*", help="fixed ratios instead of random ones")
    parser.add_argument("--scoring-views", type=int, help="UGC scoring views (default: the compressor's)")
    parser.add_argument("--scoring-size", type=int, help="UGC scoring view size in pixels")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, nargs="+", help="one or more pairs folders (their train split)")
    parser.add_argument("-o", "--out", required=True, help="run folder (rerun the same command to resume)")
    parser.add_argument("--model", choices=["painter", "baseline"])
    parser.add_argument("--vae-steps", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch-size", type=int,
                        help="the global batch: several processes (accelerate launch) share it equally, "
                             "so it must be a multiple of their number (default 8)")
    parser.add_argument("--crop", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--cpu-seconds", type=float, help="stop after this much process CPU time (fair comparisons)")
    parser.add_argument("--session-cpu-seconds", type=float,
                        help="end this session after so much CPU time (resumable)")
    parser.add_argument("--eval-data", help="pairs folder whose eval split is measured during training")
    parser.add_argument("--eval-every", type=int)
    parser.add_argument("--checkpoint-every", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--settings",
                        help='JSON object of TrainSettings fields, e.g. \'{"painter_config": {"vae_channels": 32}}\'')
    parser.add_argument("--threads", type=int, default=1, help="torch threads")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="weights folder")
    parser.add_argument("--data", required=True, help="pairs folder (its eval split)")
    parser.add_argument("--size", type=int, help="resize frames to this size (speed checks only)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--strength-by-ratio", action="store_true",
                        help="scale each frame's correction by its compression ratio, as exgs restore does")


def run_pairs(args: argparse.Namespace) -> None:
    import torch

    from exgs_core.painter.data import PairSettings, make_pairs, shared_scene_paths

    torch.set_num_threads(args.threads)
    settings = PairSettings(size=args.size, views=args.views, captured_view_factor=args.captured_view_factor,
                            targets_per_scene=args.targets,
                            samples_per_view=args.samples_per_view,
                            fixed_ratios=tuple(args.ratios) if args.ratios else (),
                            scoring_views=args.scoring_views, scoring_size=args.scoring_size)
    paths = args.scenes or shared_scene_paths(args.data_root)
    if not paths:
        raise ExgsError(f"{args.data_root}: no scenes found (expected scenes/ and mesh2splat/ in it); "
                        "pass --data-root or --scenes")
    manifest = make_pairs(paths, args.out, settings, seed=args.seed, splits=(args.split,))
    count = sum(len(entry["samples"]) for entry in manifest["scenes"])
    print(f"wrote {count} {args.split} pairs of {len(manifest['scenes'])} scenes to {args.out} (manifest.json)")


def train_settings(args: argparse.Namespace) -> TrainSettings:
    """TrainSettings from --settings JSON, overridden by the explicit options."""
    from exgs_core.painter.train import TrainSettings

    names = {f.name for f in fields(TrainSettings)}
    try:
        overrides = json.loads(args.settings) if args.settings else {}
    except json.JSONDecodeError as error:
        raise ExgsError(f"--settings is not valid JSON ({error})") from None
    if not isinstance(overrides, dict):
        raise ExgsError("--settings must be a JSON object of TrainSettings fields")
    unknown = set(overrides) - names
    if unknown:
        raise ExgsError(f"--settings: unknown keys {', '.join(sorted(unknown))}; known: {', '.join(sorted(names))}")
    overrides |= {k: v for k, v in vars(args).items() if k in names and v is not None}
    return TrainSettings(**overrides)


def run_train(args: argparse.Namespace) -> None:
    import torch

    from exgs_core.painter.train import SessionEnd, train

    torch.set_num_threads(args.threads)
    settings = train_settings(args)
    try:
        weights = train(args.data, args.out, settings)
    except SessionEnd as end:
        _say_once(str(end))
        sys.exit(SESSION_END_EXIT)
    _say_once(f"wrote {weights}")


def _say_once(message: str) -> None:
    """Print from process 0 only when training runs as several processes (all of them reach this line)."""
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(message)


def run_eval(args: argparse.Namespace) -> None:
    """Prints only the JSON report on stdout (runs redirect it to eval_full.json); progress goes to stderr."""
    import torch

    from exgs_core.painter.train import evaluate
    from exgs_core.painter.weights import load_painter

    torch.set_num_threads(args.threads)
    model = load_painter(args.weights, device="cpu")
    report = evaluate(model, args.data, size=args.size, strength_by_ratio=args.strength_by_ratio)
    print(json.dumps(report, indent=1))
