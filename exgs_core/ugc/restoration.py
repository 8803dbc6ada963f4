"""compress_restored(): compression plus a restoration fitted to the scene, inside the same byte budget.

compress() stays a black box. With a size or ratio target this compresses twice from the same significance
scores: once to the whole budget (no correction), once to the budget minus the correction's bytes. It fits
the correction (exgs_core.painter.fit) on pairs of the second file, then keeps whichever validates better on
views never used for fitting: restored frames of the smaller file or raw frames of the full-budget file.
The kept correction goes into the file's "restoration" section (exgs_core.io.exgs, format version 2).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from exgs_core.errors import ExgsError
from exgs_core.io.exgs import RESTORATION_DTYPES, decode_exgs, with_restoration
from exgs_core.io.ply import INRIA_BYTES_PER_GAUSSIAN
from exgs_core.painter.fit import DEFAULT_CHANNELS, DEFAULT_DTYPE, DEFAULT_STEPS
from exgs_core.scene import GaussianScene
from exgs_core.ugc.compress import (SIZE_TOLERANCE, CompressResult, CompressSettings, ProgressCallback, Target,
                                    at_scoring_size, compress)

MODES = ("fit", "none")
MIN_OPTIMISATION_SECONDS = 10.0  # under a user's --fit-seconds cap, even when rendering the pairs used it up
GIVEN_VIEWS = 16  # at most this many of the scoring (or user) views are fitted on, plus views between them
# Rendering the pairs costs about (full + decoded Gaussians) per view. Up to this many Gaussians per pair every
# fitting view is rendered; above, fewer (`view_scale`), so a 200k-Gaussian scene's pairs do not eat the time
# of the optimisation (whose cost does not grow with the scene). Decided from counts, so it is deterministic.
PAIR_GAUSSIANS = 130_000
MIN_VIEW_SCALE = 1 / 3  # about 16 fitting views: fewer would show the fit too little of the scene
# Bytes for the section's record and CRC and the target written into the header, on top of the weights and
# their header entry (section_reserve measures those). With it a real section fits with 40-130 bytes to spare
# (int8, fp16; tests/test_restoration.py checks it fits with under 200 to spare).
SECTION_MARGIN = 96
# A correction is stored only when it beats spending its bytes on Gaussians by this much on the validation
# views: on the fox a +0.03 dB validated edge at 300x turned into -0.24 dB on closer test views.
MIN_EQUAL_BYTES_GAIN_DB = 0.1


@dataclass
class RestorationSettings:
    """The default fit is deterministic: a number of optimisation steps, views decided from the scene's size,
    fixed seeds. `fit_seconds` is an optional cap on the whole fit's wall time (rendering included); when it
    binds, the file depends on the machine's speed and load."""

    mode: str = "fit"  # "fit" or "none"
    fit_steps: int = DEFAULT_STEPS
    fit_seconds: float | None = None
    seed: int = 0
    channels: int = DEFAULT_CHANNELS
    dtype: str = DEFAULT_DTYPE  # of the stored weights

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"restoration must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not self.fit_steps >= 1:
            raise ValueError(f"fit steps must be at least 1, got {self.fit_steps}")
        if self.dtype not in RESTORATION_DTYPES:
            raise ValueError(f"restoration dtype must be one of {', '.join(RESTORATION_DTYPES)}, got {self.dtype!r}")
        if self.fit_seconds is not None and not self.fit_seconds > 0:
            raise ValueError(f"fit seconds must be positive, got {self.fit_seconds}")


def compress_restored(scene: GaussianScene, target: Target, cameras: Sequence, settings: CompressSettings | None = None,
                      on_progress: ProgressCallback | None = None, scores: np.ndarray | None = None,
                      restoration: RestorationSettings | None = None, release_input: bool = False
                      ) -> CompressResult:
    """compress() with a fitted restoration when it validates better than spending its bytes on Gaussians.

    stats["restoration"] says what was decided and measured (validated gain, worst view, fit time).
    `release_input` is passed to compress() without a restoration (a fit renders the whole scene).
    """
    restoration = restoration or RestorationSettings()
    settings = settings or CompressSettings()
    report = on_progress or (lambda stage, fraction: None)
    if restoration.mode == "none":
        return compress(scene, target, cameras, settings, on_progress, scores, release_input)
    if scores is None and len(cameras) > 0:
        from exgs_core.ugc.significance import significance

        scores = significance(scene, cameras, settings.variant,
                              on_view=lambda i: report("scoring", (i + 1) / len(cameras)))
    base = compress(scene, target, cameras, settings, on_progress, scores)
    budget = target.size_in_bytes(len(scene))
    reserve = section_reserve(restoration.channels, restoration.dtype)
    candidate = base
    if budget is not None:
        if budget - reserve <= 0.1 * budget:
            return _without(base, f"the {budget:,}-byte budget is too small to hold a correction")
        try:
            # base's method: chosen once per scene (four compressions), not again. The level and SH degree are
            # searched again; fixing base's too measured a tie (docs/results.md, "Restoration per scene")
            fixed = base.scene_settings or settings
            candidate = compress(scene, candidate_target(budget, reserve), cameras, fixed, on_progress, scores)
        except ExgsError as error:
            return _without(base, str(error))
    return _fit_and_choose(scene, base, candidate, budget, cameras, restoration, target, report)


def candidate_target(budget: int, reserve: int) -> Target:
    """The target of the Gaussians that share `budget` with a correction: `budget - reserve` bytes, within a
    window narrow enough that the whole file (Gaussians and a section up to 2 * SECTION_MARGIN smaller than
    reserved) is still within SIZE_TOLERANCE of the budget."""
    room = SIZE_TOLERANCE * budget - 2 * SECTION_MARGIN
    return Target("size", budget - reserve, max(room, 0.0) / (budget - reserve))


def section_reserve(channels: int = DEFAULT_CHANNELS, dtype: str = DEFAULT_DTYPE) -> int:
    """Bytes to leave for the correction when splitting the budget: its stored weights and header entry, measured
    on a placeholder whose numbers are as long as a real fit's, plus SECTION_MARGIN. (A flat 700 bytes for the
    entry wasted about 330 of them: Gaussians the file could have kept.)"""
    from exgs_core.painter.fit import FitResult, ResidualCNN

    placeholder = FitResult(ResidualCNN(channels), 0.9, -10.123, 59.123, 59.123, -10.123, 99, DEFAULT_STEPS, 0.0,
                            [0.0] * 99, dtype=dtype).to_restoration()
    placeholder.info["validated"]["equal_bytes_gain_db"] = -10.123
    if dtype == "int8":
        placeholder.info["scales"] = [0.00123] * len(placeholder.info["scales"])
    entry = json.dumps(placeholder.info, ensure_ascii=False, separators=(",", ":"))
    return len(placeholder.payload) + len(entry.encode("utf-8")) + SECTION_MARGIN


def _fit_and_choose(scene: GaussianScene, base: CompressResult, candidate: CompressResult, budget: int | None,
                    cameras: Sequence, restoration: RestorationSettings, target: Target,
                    report: ProgressCallback) -> CompressResult:
    from exgs_core.painter import fit

    start, cpu_start = time.perf_counter(), time.process_time()
    scale = view_scale(len(scene), len(candidate.scene))
    fit_views, validation_views = restoration_views(scene, cameras, restoration.seed, scale)
    total = len(fit_views) + 2 * len(validation_views) + (len(validation_views) if candidate is not base else 0)
    done = [0]

    def on_view() -> None:
        done[0] += 1
        report("rendering pairs", done[0] / total)

    pairs = fit.render_pairs(scene, candidate.scene, fit_views, restoration.seed, on_view)
    validation = fit.render_pairs(scene, candidate.scene, validation_views, restoration.seed + 1, on_view)
    base_psnr = None
    if candidate is not base:
        backgrounds = fit.backgrounds_for(len(validation_views), restoration.seed + 1)
        base_inputs = fit.render_inputs(base.scene, validation_views, backgrounds, on_view)
        base_psnr = float(np.mean([fit.frame_psnr(x[:3], y) for x, y in zip(base_inputs, validation.targets)]))
    render_seconds, render_cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    seconds = None
    if restoration.fit_seconds is not None:
        seconds = max(MIN_OPTIMISATION_SECONDS, restoration.fit_seconds - render_seconds)
    result = fit.fit_restoration(pairs, validation, steps=restoration.fit_steps, seconds=seconds,
                                 channels=restoration.channels, seed=restoration.seed, on_progress=report,
                                 dtype=restoration.dtype)
    equal_bytes_gain = result.restored_psnr - (result.raw_psnr if base_psnr is None else base_psnr)
    optimisation, validating = result.timings["optimisation"], result.timings["validation"]
    info = {
        "fit_views": len(fit_views), "validation_views": len(validation_views), "view_scale": round(scale, 3),
        "render_seconds": round(render_seconds, 1), "render_cpu_seconds": round(render_cpu_seconds, 1),
        "optimisation_seconds": round(optimisation[0], 1), "optimisation_cpu_seconds": round(optimisation[1], 1),
        "validation_seconds": round(validating[0], 1), "validation_cpu_seconds": round(validating[1], 1),
        "fit_seconds": round(time.perf_counter() - start, 1),
        "fit_cpu_seconds": round(time.process_time() - cpu_start, 1), "steps": result.steps,
        "strength": result.strength, "gain_db": round(result.gain_db, 3),
        "equal_bytes_gain_db": round(equal_bytes_gain, 3),
        "worst_view_gain_db": round(result.worst_view_gain_db, 3), "worst_view": result.worst_view,
    }
    # The margin is for trading Gaussians (which show in every view) for a correction (validated on 8 views), or
    # with --keep for adding its bytes. When the smaller budget kept the very same Gaussians the correction costs
    # nothing: its own validated gain decides.
    free = budget is not None and same_gaussians(candidate.scene, base.scene)
    if result.strength <= 0 or (not free and equal_bytes_gain < MIN_EQUAL_BYTES_GAIN_DB):
        why = ("it did not help on the validation views" if result.strength <= 0 else
               f"it validated {equal_bytes_gain:+.2f} dB against spending its bytes on Gaussians "
               f"(at least {MIN_EQUAL_BYTES_GAIN_DB} dB is needed)")
        return _without(base, f"no correction stored: {why}", info)
    stored = result.to_restoration()
    stored.info["validated"]["equal_bytes_gain_db"] = round(equal_bytes_gain, 3)
    header = {"compression": {**candidate.scene.metadata["exgs"]["compression"],
                              "target": {"kind": target.kind, "value": target.value}}}
    data = with_restoration(candidate.data, stored, header_updates=header)
    if budget is not None and len(data) > budget:
        return _without(base, f"no correction stored: the file would be {len(data):,} bytes, over the budget", info)
    decoded = decode_exgs(data)
    stats = dict(candidate.stats)
    stats.update(target=target.describe(), bytes_after=len(data),
                 ratio_vs_inria_ply=INRIA_BYTES_PER_GAUSSIAN * len(scene) / len(data),
                 restoration={"stored": True, "section_bytes": len(data) - len(candidate.data), **info})
    if stats.get("bytes_before"):
        stats["ratio_vs_input"] = stats["bytes_before"] / len(data)
    report("done", 1.0)
    return CompressResult(data, decoded, candidate.kept, stats)


def same_gaussians(a: GaussianScene, b: GaussianScene) -> bool:
    """Whether two decoded scenes hold the same Gaussians, bit for bit."""
    return len(a) == len(b) and all(np.array_equal(getattr(a, name), getattr(b, name))
                                    for name in ("means", "quats", "log_scales", "opacity_logits", "sh"))


def view_scale(full_gaussians: int, decoded_gaussians: int) -> float:
    """Share of the default fitting views to render: 1 up to PAIR_GAUSSIANS Gaussians per pair, then
    inversely to the Gaussians (so the time spent rendering pairs stays about the same), at least
    MIN_VIEW_SCALE."""
    return max(MIN_VIEW_SCALE, min(1.0, PAIR_GAUSSIANS / max(1, full_gaussians + decoded_gaussians)))


def restoration_views(scene: GaussianScene, cameras: Sequence, seed: int, scale: float = 1.0
                      ) -> tuple[list, list]:
    """(fit views, validation views): up to GIVEN_VIEWS of the given views, views between them and jittered
    views at varied distance and field of view (at least fit.FIT_VIEWS in all), all times `scale`;
    validation views are fit.VALIDATION_VIEWS other jittered views, never fitted on."""
    from exgs_core.camera import views_between
    from exgs_core.painter import fit

    most_given = max(2, round(GIVEN_VIEWS * scale))
    least = round(fit.FIT_VIEWS * scale)
    step = max(1, int(np.ceil(len(cameras) / most_given)))
    given = at_scoring_size(list(cameras)[::step], fit.VIEW_SIZE)
    between = views_between(given)
    jittered = fit.jittered_views(scene, max(least // 2, least - len(given) - len(between)), seed)
    validation = fit.jittered_views(scene, fit.VALIDATION_VIEWS, seed + 1_000_003)
    return given + between + jittered, validation


def _without(base: CompressResult, reason: str, info: dict | None = None) -> CompressResult:
    base.stats["restoration"] = {"stored": False, "reason": reason, **(info or {})}
    return base
