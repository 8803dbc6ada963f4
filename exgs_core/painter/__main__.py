"""`python -m exgs_core.painter pairs|train|eval ...`: the painter's commands until the `exgs` CLI wires them."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

import torch

from exgs_core.painter.data import PairSettings, make_pairs, shared_scene_paths


def _pairs(args: argparse.Namespace) -> None:
    settings = PairSettings(size=args.size, views=args.views, targets_per_scene=args.targets,
                            samples_per_view=args.samples_per_view,
                            fixed_ratios=tuple(args.ratios) if args.ratios else ())
    paths = args.scenes or shared_scene_paths(args.data_root)
    make_pairs(paths, args.out, settings, seed=args.seed, splits=(args.split,))


def _train(args: argparse.Namespace) -> None:
    from exgs_core.painter.train import SessionEnd, TrainSettings, train

    names = {f.name for f in fields(TrainSettings)}
    overrides = json.loads(args.settings) if args.settings else {}
    unknown = set(overrides) - names
    if unknown:
        raise SystemExit(f"--settings: unknown keys {', '.join(sorted(unknown))}; known: {', '.join(sorted(names))}")
    overrides |= {k: v for k, v in vars(args).items() if k in names and v is not None}
    try:
        train(args.data, args.out, TrainSettings(**overrides))
    except SessionEnd as end:
        print(end)
        sys.exit(3)  # 3: stopped by the session allowance, resume with the same command


def _eval(args: argparse.Namespace) -> None:
    from exgs_core.painter.train import evaluate
    from exgs_core.painter.weights import load_painter

    model = load_painter(args.weights, device="cpu")
    report = evaluate(model, args.data, size=args.size)
    print(json.dumps(report, indent=1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m exgs_core.painter")
    sub = parser.add_subparsers(dest="command", required=True)

    pairs = sub.add_parser("pairs", help="render training/evaluation pairs through real UGC compression")
    pairs.add_argument("--data-root", default="../shared/data", help="folder with scenes/ and mesh2splat/")
    pairs.add_argument("--scenes", nargs="*", help="scene files (default: every scene under --data-root)")
    pairs.add_argument("--out", required=True)
    pairs.add_argument("--split", choices=["train", "eval"], default="train")
    pairs.add_argument("--seed", type=int, default=0)
    pairs.add_argument("--size", type=int, default=192)
    pairs.add_argument("--views", type=int, default=32)
    pairs.add_argument("--targets", type=int, default=4)
    pairs.add_argument("--samples-per-view", type=int, default=2)
    pairs.add_argument("--ratios", type=float, nargs="*", help="fixed ratios instead of random ones")
    pairs.add_argument("--threads", type=int, default=1)

    tr = sub.add_parser("train", help="train GaussPainter (or the pixel baseline) on a pairs folder")
    tr.add_argument("--data", required=True, nargs="+", help="one or more pairs folders (their train split)")
    tr.add_argument("--out", required=True)
    tr.add_argument("--model", choices=["painter", "baseline"])
    tr.add_argument("--vae-steps", type=int)
    tr.add_argument("--steps", type=int)
    tr.add_argument("--batch-size", type=int)
    tr.add_argument("--crop", type=int)
    tr.add_argument("--lr", type=float)
    tr.add_argument("--cpu-seconds", type=float, help="stop after this much process CPU time (fair comparisons)")
    tr.add_argument("--session-cpu-seconds", type=float, help="end this session after so much CPU time (resumable)")
    tr.add_argument("--eval-data")
    tr.add_argument("--eval-every", type=int)
    tr.add_argument("--checkpoint-every", type=int)
    tr.add_argument("--seed", type=int)
    tr.add_argument("--settings", help='JSON object of TrainSettings fields, e.g. \'{"painter_config": {"vae_channels": 32}}\'')
    tr.add_argument("--threads", type=int, default=1)

    ev = sub.add_parser("eval", help="PSNR/SSIM of raw vs restored on a pairs folder")
    ev.add_argument("--weights", required=True)
    ev.add_argument("--data", required=True)
    ev.add_argument("--size", type=int)
    ev.add_argument("--threads", type=int, default=1)

    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    {"pairs": _pairs, "train": _train, "eval": _eval}[args.command](args)


if __name__ == "__main__":
    main(sys.argv[1:])
