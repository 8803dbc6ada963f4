"""`exgs eval`: render a reference scene and candidates from test views, measure and picture the difference.

Writes metrics.json, metrics.md (PSNR, SSIM, bytes, both ratios per candidate), rate_distortion.png
(PSNR against file size) and grid.png (reference and candidates side by side, a row per view).
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
from exgs_core.ugc.compress import INRIA_BYTES_PER_GAUSSIAN

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


def evaluate(reference: GaussianScene, candidates: Sequence[tuple[str, GaussianScene]], cameras: Sequence,
             render_fn: Callable, on_view: Callable[[int], None] | None = None
             ) -> tuple[list[CandidateResult], dict[str, list[np.ndarray]]]:
    """Metrics per candidate against the reference's renders, and the frames of the first GRID_VIEWS views."""
    reference_bytes = reference.metadata.get("source_bytes") or 0
    inria_bytes = INRIA_BYTES_PER_GAUSSIAN * len(reference)
    frames: dict[str, list[np.ndarray]] = {"reference": []}
    scores = {name: ([], []) for name, _ in candidates}
    for index, camera in enumerate(cameras):
        target = render_fn(reference, camera)
        if index < GRID_VIEWS:
            frames["reference"].append(target)
        for name, scene in candidates:
            image = render_fn(scene, camera)
            scores[name][0].append(float(psnr(image, target)))
            scores[name][1].append(float(ssim(image, target)))
            if index < GRID_VIEWS:
                frames.setdefault(name, []).append(image)
        if on_view is not None:
            on_view(index)

    results = []
    for name, scene in candidates:
        size = int(scene.metadata.get("source_bytes") or 0)
        psnrs, ssims = scores[name]
        results.append(CandidateResult(
            name=name, gaussians=len(scene), bytes=size,
            ratio_vs_reference_file=(reference_bytes / size) if size else math.nan,
            ratio_vs_inria_ply=(inria_bytes / size) if size else math.nan,
            psnr=float(np.mean(psnrs)), ssim=float(np.mean(ssims)), per_view_psnr=psnrs,
        ))
    return results, frames


def write_report(out_dir: Path, reference_name: str, results: Sequence[CandidateResult],
                 frames: dict[str, list[np.ndarray]], views: int) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"reference": reference_name, "views": views, "candidates": [r.__dict__ for r in results]}
    with atomic_write(out_dir / "metrics.json", "w") as handle:
        json.dump(payload, handle, indent=2)
    with atomic_write(out_dir / "metrics.md", "w") as handle:
        handle.write(markdown_table(reference_name, results, views))
    rate_distortion_plot(out_dir / "rate_distortion.png", results)
    image_grid(out_dir / "grid.png", frames)


def markdown_table(reference_name: str, results: Sequence[CandidateResult], views: int) -> str:
    lines = [
        f"Against `{reference_name}`, {views} test views.",
        "",
        "| candidate | Gaussians | bytes | ratio vs reference file | ratio vs INRIA .ply | PSNR (dB) | SSIM |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r.name} | {r.gaussians:,} | {r.bytes:,} | {r.ratio_vs_reference_file:.1f}x | "
                     f"{r.ratio_vs_inria_ply:.1f}x | {r.psnr:.2f} | {r.ssim:.4f} |")
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
    """Columns: reference then each candidate; rows: views."""
    from PIL import Image

    columns = list(frames.values())
    rows = [np.concatenate([column[i] for column in columns], axis=1) for i in range(len(columns[0]))]
    grid = np.concatenate(rows, axis=0)
    with atomic_write(path) as handle:
        Image.fromarray(to_uint8(grid)).save(handle, format="PNG")
