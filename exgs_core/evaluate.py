"""`exgs eval`: render a reference scene and candidates from test views, measure and picture the difference.

Writes metrics.json, metrics.md (PSNR, SSIM, bytes, both ratios per candidate), rate_distortion.png
(PSNR against file size) and grid.png (reference and candidates side by side, a row per view). With a
restore function (GaussPainter), each candidate also gets restored PSNR/SSIM, and the grid shows per candidate
its raw render, the restored frame and the mask (1 - alpha). A candidate whose .exgs file holds its own fitted
restoration also gets "restored (fitted)" PSNR/SSIM and a grid column (see exgs_core.painter.fit).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from exgs_core.fileio import atomic_write
from exgs_core.images import to_uint8
from exgs_core.metrics import psnr, ssim
from exgs_core.scene import GaussianScene
from exgs_core.io.ply import INRIA_BYTES_PER_GAUSSIAN

GRID_VIEWS = 4  # rows in grid.png


@dataclass
class CandidateResult:
    name: str
    gaussians: int
    bytes: int
    ratio_vs_reference_file: float
    ratio_vs_inria_ply: float
    psnr: float
    ssim: float
    per_view_psnr: list[float] = field(default_factory=list)
    restored_psnr: float | None = None  # None: restoration was skipped
    restored_ssim: float | None = None
    per_view_restored_psnr: list[float] = field(default_factory=list)
    fitted_psnr: float | None = None  # None: the file holds no fitted restoration
    fitted_ssim: float | None = None
    per_view_fitted_psnr: list[float] = field(default_factory=list)


RenderFn = Callable[[GaussianScene, object], tuple[np.ndarray, np.ndarray]]  # -> rgb (H, W, 3), alpha (H, W)
RestoreFn = Callable[[np.ndarray, np.ndarray, float | None], np.ndarray]  # (rgb, alpha, ratio vs INRIA .ply)
# (candidate, rgb, alpha) -> the frame restored with the candidate's own fitted restoration, None without one
FittedFn = Callable[[GaussianScene, np.ndarray, np.ndarray], np.ndarray | None]


def evaluate(reference: GaussianScene, candidates: Sequence[tuple[str, GaussianScene]], cameras: Sequence,
             render_fn: RenderFn, on_view: Callable[[int], None] | None = None, restore_fn: RestoreFn | None = None,
             fitted_fn: FittedFn | None = None) -> tuple[list[CandidateResult], dict[str, list[np.ndarray]]]:
    """Metrics per candidate against the reference's renders, and the grid's columns (frames of the first
    GRID_VIEWS views): reference, then per candidate its raw render and, when restoring, restored and mask."""
    frames: dict[str, list[np.ndarray]] = {"reference": []}
    scores: dict[str, dict[str, list[float]]] = {name: {"psnr": [], "ssim": [], "restored_psnr": [],
                                                        "restored_ssim": [], "fitted_psnr": [], "fitted_ssim": []}
                                               for name, _ in candidates}
    for index, camera in enumerate(cameras):
        target, _ = render_fn(reference, camera)
        columns = {"reference": target}
        for name, scene in candidates:
            image, alpha = render_fn(scene, camera)
            _score(scores[name], "", image, target)
            columns[name] = image
            if restore_fn is not None:
                restored = restore_fn(image, alpha, _inria_ratio(reference, scene))
                _score(scores[name], "restored_", restored, target)
                columns[f"{name} restored"] = restored
                columns[f"{name} mask"] = 1.0 - alpha
            fitted = fitted_fn(scene, image, alpha) if fitted_fn is not None else None
            if fitted is not None:
                _score(scores[name], "fitted_", fitted, target)
                columns[f"{name} restored (fitted)"] = fitted
        if index < GRID_VIEWS:
            for column, image in columns.items():
                frames.setdefault(column, []).append(image)
        if on_view is not None:
            on_view(index)
    return [_result(reference, name, scene, scores[name]) for name, scene in candidates], frames


def _score(scores: dict[str, list[float]], prefix: str, image: np.ndarray, target: np.ndarray) -> None:
    scores[f"{prefix}psnr"].append(float(psnr(image, target)))
    scores[f"{prefix}ssim"].append(float(ssim(image, target)))


def _inria_ratio(reference: GaussianScene, scene: GaussianScene) -> float | None:
    """How many times smaller the candidate's file is than the reference as an INRIA .ply (None: no file)."""
    size = int(scene.metadata.get("source_bytes") or 0)
    return INRIA_BYTES_PER_GAUSSIAN * len(reference) / size if size else None


def _result(reference: GaussianScene, name: str, scene: GaussianScene, scores: dict[str, list[float]]
            ) -> CandidateResult:
    reference_bytes = reference.metadata.get("source_bytes") or 0
    size = int(scene.metadata.get("source_bytes") or 0)
    inria_ratio = _inria_ratio(reference, scene)
    restored = bool(scores["restored_psnr"])
    return CandidateResult(
        name=name, gaussians=len(scene), bytes=size,
        ratio_vs_reference_file=(reference_bytes / size) if size else math.nan,
        ratio_vs_inria_ply=inria_ratio if inria_ratio is not None else math.nan,
        psnr=float(np.mean(scores["psnr"])), ssim=float(np.mean(scores["ssim"])), per_view_psnr=scores["psnr"],
        restored_psnr=float(np.mean(scores["restored_psnr"])) if restored else None,
        restored_ssim=float(np.mean(scores["restored_ssim"])) if restored else None,
        per_view_restored_psnr=scores["restored_psnr"],
        fitted_psnr=float(np.mean(scores["fitted_psnr"])) if scores["fitted_psnr"] else None,
        fitted_ssim=float(np.mean(scores["fitted_ssim"])) if scores["fitted_ssim"] else None,
        per_view_fitted_psnr=scores["fitted_psnr"],
    )


def write_report(out_dir: Path, reference_name: str, results: Sequence[CandidateResult],
                 frames: dict[str, list[np.ndarray]], views: int, restoration: str | None = None) -> None:
    """`restoration` says what restored the frames (weights) or why restoration was skipped."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"reference": reference_name, "views": views, "restoration": restoration,
               "grid_columns": list(frames), "candidates": [r.__dict__ for r in results]}
    with atomic_write(out_dir / "metrics.json", "w") as handle:
        json.dump(payload, handle, indent=2)
    with atomic_write(out_dir / "metrics.md", "w") as handle:
        handle.write(markdown_table(reference_name, results, views, restoration))
    rate_distortion_plot(out_dir / "rate_distortion.png", results)
    image_grid(out_dir / "grid.png", frames)


def markdown_table(reference_name: str, results: Sequence[CandidateResult], views: int,
                   restoration: str | None = None) -> str:
    restored = any(r.restored_psnr is not None for r in results)
    header = "| candidate | Gaussians | bytes | ratio vs reference file | ratio vs INRIA .ply | PSNR (dB) | SSIM |"
    rule = "|---|---:|---:|---:|---:|---:|---:|"
    if restored:
        header += " restored PSNR (dB) | restored SSIM |"
        rule += "---:|---:|"
    fitted = any(r.fitted_psnr is not None for r in results)
    if fitted:
        header += " restored (fitted) PSNR (dB) | restored (fitted) SSIM |"
        rule += "---:|---:|"
    note = f" Restoration: {restoration}." if restoration else ""
    lines = [f"Against `{reference_name}`, {views} test views.{note}", "", header, rule]
    for r in results:
        row = (f"| {r.name} | {r.gaussians:,} | {r.bytes:,} | {r.ratio_vs_reference_file:.1f}x | "
               f"{r.ratio_vs_inria_ply:.1f}x | {r.psnr:.2f} | {r.ssim:.4f} |")
        if restored:
            row += f" {r.restored_psnr:.2f} | {r.restored_ssim:.4f} |"
        if fitted:
            row += (" - | - |" if r.fitted_psnr is None else f" {r.fitted_psnr:.2f} | {r.fitted_ssim:.4f} |")
        lines.append(row)
    return "\n".join(lines) + "\n"


def rate_distortion_plot(path: Path, results: Sequence[CandidateResult]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4), dpi=120)
    for r in results:
        axis.scatter(r.bytes / 1e6, r.psnr, s=30)
        axis.annotate(r.name, (r.bytes / 1e6, r.psnr), fontsize=7, xytext=(4, 2), textcoords="offset points")
    axis.set_xscale("log")
    axis.set_xlabel("file size (MB)")
    axis.set_ylabel("PSNR vs reference render (dB)")
    axis.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    with atomic_write(path) as handle:
        figure.savefig(handle, format="png")
    plt.close(figure)


def image_grid(path: Path, frames: dict[str, list[np.ndarray]]) -> None:
    """Columns: the frames' keys in order (grey masks shown as grey); rows: views."""
    from PIL import Image

    columns = [[np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im for im in column]
               for column in frames.values()]
    rows = [np.concatenate([column[i] for column in columns], axis=1) for i in range(len(columns[0]))]
    grid = np.concatenate(rows, axis=0)
    with atomic_write(path) as handle:
        Image.fromarray(to_uint8(grid)).save(handle, format="PNG")
