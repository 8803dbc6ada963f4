"""GaussPainter: per-frame restoration of renders of compressed scenes.

Public API (torch and diffusers are imported on first use, so `import exgs_core.painter` stays cheap):

    load_painter(weights=None, device=None) -> GaussPainter | PixelUNet      weights folder, hub id, or default
    save_painter(model, folder) -> Path
    restore(render, alpha, painter) -> (H, W, 3) in [0, 1]
    make_pairs(scene_paths, out_dir, settings=None, seed=0, splits=("train", "eval")) -> manifest dict
    train(data_dir, out_dir, settings=None) -> Path of the final weights folder
    evaluate(model, data_dir) -> metrics dict
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "GaussPainter": "exgs_core.painter.model",
    "PainterConfig": "exgs_core.painter.model",
    "PixelUNet": "exgs_core.painter.baseline",
    "PainterWeightsError": "exgs_core.painter.weights",
    "load_painter": "exgs_core.painter.weights",
    "save_painter": "exgs_core.painter.weights",
    "default_weights_path": "exgs_core.painter.weights",
    "restore": "exgs_core.painter.restore",
    "restore_batch": "exgs_core.painter.restore",
    "PairSettings": "exgs_core.painter.data",
    "make_pairs": "exgs_core.painter.data",
    "SPLIT": "exgs_core.painter.data",
    "TrainSettings": "exgs_core.painter.train",
    "train": "exgs_core.painter.train",
    "evaluate": "exgs_core.painter.train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'exgs_core.painter' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
