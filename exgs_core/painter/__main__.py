"""`python -m exgs_core.painter pairs|train|eval ...`: an alias of `exgs painter-data|train-painter` (plus the
pairs-folder evaluation), kept so that `accelerate launch -m exgs_core.painter train ...` works. The options
are defined once, in exgs_core.painter.commands."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from exgs_core.painter import commands

COMMANDS = {  # name -> (add arguments, run, help)
    "pairs": (commands.add_pairs_arguments, commands.run_pairs,
              "render training/evaluation pairs through real UGC compression (= exgs painter-data)"),
    "train": (commands.add_train_arguments, commands.run_train,
              "train GaussPainter (or the pixel baseline) on pairs folders (= exgs train-painter)"),
    "eval": (commands.add_eval_arguments, commands.run_eval,
             "PSNR/SSIM of raw vs restored on a pairs folder's eval split (JSON on stdout)"),
}


def build_parser() -> argparse.ArgumentParser:
    from exgs_core.cli import add_debug_option

    parser = argparse.ArgumentParser(prog="python -m exgs_core.painter")
    add_debug_option(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_arguments, run, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(command)
        add_debug_option(command, subcommand=True)
        command.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from exgs_core.cli import run_parsed

    return run_parsed(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
