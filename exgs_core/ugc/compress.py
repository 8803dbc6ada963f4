"""compress(scene, target) and decompress(data): UGC end to end, without re-optimisation.

Pipeline: significance over scoring views -> voxel sampling of exactly K Gaussians -> adaptive
amplification -> SH reduction, quantisation and entropy coding into an .exgs container.
A size or ratio target is met by adjusting K until the encoded file lands within 2% below the target.
"""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from exgs_core.errors import ExgsError
from exgs_core.io.exgs import decode_exgs, encode_exgs
from exgs_core.io.ply import INRIA_BYTES_PER_GAUSSIAN
from exgs_core.scene import GaussianScene
from exgs_core.ugc.amplify import Amplification, amplify
from exgs_core.ugc.merge import Merger
from exgs_core.ugc.sampling import VoxelGrid, voxel_size_for
from exgs_core.ugc.significance import significance

SIZE_TOLERANCE = 0.02
# Defaults chosen by bench/compress.py and the measurements in docs/method.md.
DEFAULT_SH_DEGREE = 0
DEFAULT_VARIANT = "alpha_t"
DEFAULT_AMPLIFICATION = Amplification(scale_power=0.1, opacity_power=0.5, max_scale_gain=2.0)
DEFAULT_VOXEL_COVERAGE = 0.15
DEFAULT_VOXEL_PROPORTIONAL = None  # None: (coverage, proportional) chosen per scene on check views
SAMPLING_CANDIDATES = ((0.15, 0.0), (0.15, 0.5), (0.15, 1.0), (0.6, 1.0))  # (voxel coverage, proportional)
METHODS = ("merge", "paper")
DEFAULT_METHOD = "merge"
MERGE_SAMPLING = (0.6, 0.5)  # (voxel coverage, proportional) of the merge method: fixed, for every scene and count
CHECK_VIEWS = 4
DEFAULT_VIEWS = 24
SCORING_SIZE = 192


@dataclass(frozen=True)
class Target:
    """What to aim for: a keep ratio (0-1], a file size in bytes, or a ratio against the INRIA .ply."""

    kind: str  # "keep" | "size" | "ratio"
    value: float

    def __post_init__(self) -> None:
        if self.kind not in ("keep", "size", "ratio"):
            raise ValueError(f"unknown target kind {self.kind!r}")
        if not np.isfinite(self.value) or self.value <= 0 or (self.kind == "keep" and self.value > 1):
            raise ValueError(f"invalid {self.kind} target {self.value}")

    def size_in_bytes(self, count: int) -> int | None:
        if self.kind == "size":
            return int(self.value)
        if self.kind == "ratio":
            return int(INRIA_BYTES_PER_GAUSSIAN * count / self.value)
        return None

    def describe(self) -> str:
        return {"keep": f"keep {self.value:g}", "size": f"{int(self.value):,} bytes", "ratio": f"{self.value:g}x"}[
            self.kind
        ]


def scoring_cameras(scene: GaussianScene, views: int | None = None, inside_out: bool = False,
                    size: int = SCORING_SIZE) -> list:
    """Automatic scoring views: all around the scene (no up axis needed), or from its centre for rooms."""
    from exgs_core.camera import inside_out_cameras, sphere_cameras

    n = views or DEFAULT_VIEWS
    if inside_out:
        pitches = (-35.0, 0.0, 35.0)
        per_ring = max(1, n // len(pitches))
        return inside_out_cameras(scene.means, per_ring, size, size, fov_deg=90.0, pitches_deg=pitches,
                                  opacities=scene.opacities())
    return sphere_cameras(scene.means, n, size, size, opacities=scene.opacities())


def at_scoring_size(cameras: Sequence, size: int = SCORING_SIZE) -> list:
    """The given views, scaled down (intrinsics included) so the larger side is at most `size` pixels."""
    return [c.scaled(min(1.0, size / max(c.width, c.height))) for c in cameras]


def parse_size(text: str) -> int:
    """'3MB', '500 kB', '2.5MiB', '1200000' -> bytes (kB/MB/GB are decimal, KiB/MiB/GiB binary)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgG]i?[bB]|[bB])?\s*", text)
    if not match:
        raise ValueError(f"size {text!r} is not a number of bytes like 3MB, 500kB or 2.5MiB")
    number, unit = float(match.group(1)), (match.group(2) or "B").lower()
    factors = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 1024, "mib": 1024**2, "gib": 1024**3}
    return int(number * factors[unit])


@dataclass
class CompressSettings:
    sh_degree: int | None = DEFAULT_SH_DEGREE  # None keeps the scene's degree
    variant: str = DEFAULT_VARIANT
    amplification: Amplification = DEFAULT_AMPLIFICATION
    voxel_coverage: float = DEFAULT_VOXEL_COVERAGE
    voxel_proportional: float | None = DEFAULT_VOXEL_PROPORTIONAL
    use_voxels: bool = True
    method: str = DEFAULT_METHOD  # "merge": pruned Gaussians merge into kept ones; "paper": drop and amplify

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown compression method {self.method!r}; choose one of {', '.join(METHODS)}")

    def to_dict(self) -> dict:
        amp = self.amplification
        return {
            "method": self.method, "sh_degree": self.sh_degree, "score": self.variant,
            "voxel_sampling": self.use_voxels,
            "voxel_coverage": self.voxel_coverage,
            "amplification": {"scale_power": amp.scale_power, "opacity_power": amp.opacity_power,
                              "max_scale_gain": amp.max_scale_gain},
        }


@dataclass
class CompressResult:
    data: bytes  # the .exgs file
    scene: GaussianScene  # what the file decodes to
    kept: np.ndarray  # indices of the kept Gaussians in the input scene
    stats: dict = field(default_factory=dict)


ProgressCallback = Callable[[str, float], None]  # (stage, fraction done) ; raise to cancel


def compress(scene: GaussianScene, target: Target, cameras: Sequence, settings: CompressSettings | None = None,
             on_progress: ProgressCallback | None = None, scores: np.ndarray | None = None) -> CompressResult:
    """Compress `scene` to `target`, scoring Gaussians from `cameras` (orbit, user cameras, animation path).

    `scores` replaces the significance computation (benchmarks pass baseline scores through it).
    """
    if len(cameras) == 0 and scores is None:
        raise ExgsError("compression needs at least one scoring view")
    with _torch_single_threaded():
        return _compress(scene, target, cameras, settings or CompressSettings(), on_progress, scores)


@contextmanager
def _torch_single_threaded() -> Iterator[None]:
    """torch on one thread for the duration: its work here is glue between the numba kernels (which have
    their own threads), and its parallel ops on millions of elements ran 2-3x slower, not faster, on a busy
    2-core machine (docs/results.md)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _compress(scene: GaussianScene, target: Target, cameras: Sequence, settings: CompressSettings,
              on_progress: ProgressCallback | None, scores: np.ndarray | None) -> CompressResult:
    report = on_progress or (lambda stage, fraction: None)
    start = time.perf_counter()

    if scores is None:
        scores = significance(scene, cameras, settings.variant,
                              on_view=lambda i: report("scoring", (i + 1) / len(cameras)))
    score_time = time.perf_counter() - start
    encoder = _Encoder(scene, scores, settings, target, cameras, report)
    count = encoder.initial_count()
    data, kept = encoder.encode(count)
    byte_budget = target.size_in_bytes(len(scene))
    for attempt in range(10):
        within = byte_budget is None or (1 - SIZE_TOLERANCE) * byte_budget <= len(data) <= byte_budget
        if within and not encoder.preview:
            break
        if within:
            encoder.preview = False  # the count found unmerged, now merged
        else:
            count = encoder.next_count(count, len(data), byte_budget)
        data, kept = encoder.encode(count)
        report("packing", (attempt + 1) / 10)
    if encoder.preview:  # the search ran out of attempts unmerged
        encoder.preview = False
        data, kept = encoder.encode(count)
    if byte_budget is not None and len(data) > byte_budget:
        raise ExgsError(f"cannot reach {target.describe()}: even 1 Gaussian takes {len(data):,} bytes")

    decoded = decode_exgs(data)
    stats = _stats(scene, decoded, data, score_time, time.perf_counter() - start, len(cameras), target)
    stats["selection_seconds"] = round(encoder.selection_seconds, 3)  # choosing the sampling on check views
    stats["merge_seconds"] = round(encoder.merge_seconds, 3)
    stats["packing_seconds"] = round(encoder.packing_seconds, 3)
    stats["method"] = settings.method
    report("done", 1.0)
    return CompressResult(data, decoded, kept, stats)


class _Encoder:
    """Encodes the best K Gaussians for any K.

    The voxel size and the proportional share are fixed at the first K, so later adjustments stay cheap.
    """

    def __init__(self, scene: GaussianScene, scores: np.ndarray, settings: CompressSettings, target: Target,
                 cameras: Sequence, report: ProgressCallback):
        self.scene, self.scores, self.settings, self.target, self.report = scene, scores, settings, target, report
        self.check_cameras = list(cameras)[:: max(1, len(cameras) // CHECK_VIEWS)][:CHECK_VIEWS]
        self.selection_seconds = 0.0
        self.merge_seconds = 0.0  # all merges of the size search
        self.packing_seconds = 0.0  # all encodes of the size search
        self.grids: dict[float, VoxelGrid] = {}  # per voxel coverage; the voxel size is fixed at the first K
        self.coverage = settings.voxel_coverage
        self.proportional = settings.voxel_proportional
        self.merged = settings.method == "merge"
        self.merger: Merger | None = None
        # While True, encode() packs the kept Gaussians unmerged: a cheap first search for the count, since
        # merging changes the bytes per Gaussian little (docs/method.md); the final count is always merged.
        self.preview = self.merged and target.kind != "keep"
        if self.merged and self.proportional is None:
            self.coverage, self.proportional = MERGE_SAMPLING
        # Amplification is tried on and off when it is enabled and the sampling is chosen by measurement.
        self.amplified = settings.amplification.enabled if self.proportional is not None else None
        if self.merged:
            self.amplified = False

    def initial_count(self) -> int:
        n = len(self.scene)
        if self.target.kind == "keep":
            return max(1, int(round(self.target.value * n)))
        budget = self.target.size_in_bytes(n)
        guess_bytes_per_gaussian = 12.0 + 3.0 * (self._degree() + 1) ** 2
        return int(np.clip(budget / guess_bytes_per_gaussian, 1, n))

    def next_count(self, count: int, size: int, budget: int) -> int:
        n = len(self.scene)
        aim = budget * (1 - SIZE_TOLERANCE / 2)
        if size > budget and count == 1:
            return 1
        per_gaussian = max(size / max(count, 1), 0.5)
        return int(np.clip(count + (aim - size) / per_gaussian, 1, n))

    def encode(self, count: int) -> tuple[bytes, np.ndarray]:
        kept, pruned = self.select(count)
        start = time.perf_counter()
        header = {"compression": {**self.settings.to_dict(), "voxel_coverage": self.coverage,
                                  "voxel_proportional": self.proportional,
                                  "amplified": self.amplified,
                                  "target": {"kind": self.target.kind, "value": self.target.value},
                                  "kept": len(kept), "input_count": len(self.scene)}}
        data = encode_exgs(pruned, sh_degree=self.settings.sh_degree, extra_header=header)
        self.packing_seconds += time.perf_counter() - start
        return data, kept

    def select(self, count: int) -> tuple[np.ndarray, GaussianScene]:
        """The kept indices and the kept (amplified) scene for a budget of `count` Gaussians."""
        n = len(self.scene)
        if count >= n:
            return np.arange(n), self.scene
        if not self.settings.use_voxels:
            keep = np.sort(np.argsort(-self.scores, kind="stable")[:count])
            return self._kept(keep, self.settings.amplification.enabled, self.settings.voxel_coverage, count)
        if self.proportional is None:
            start = time.perf_counter()
            (self.coverage, self.proportional), self.amplified = self._best_selection(count)
            self.selection_seconds = time.perf_counter() - start
        keep = self._voxel_keep(count, self.coverage, self.proportional)
        return self._kept(keep, self.amplified, self.coverage, count)

    def _grid(self, coverage: float, count: int) -> VoxelGrid:
        if coverage not in self.grids:
            size = voxel_size_for(self.scene.means, max(1, int(coverage * count)))
            self.grids[coverage] = VoxelGrid(self.scene.means, self.scores, size)
        return self.grids[coverage]

    def _voxel_keep(self, count: int, coverage: float, proportional: float) -> np.ndarray:
        return self._grid(coverage, count).sample(count, proportional=proportional).keep

    def _kept(self, keep: np.ndarray, amplified: bool, coverage: float, count: int
              ) -> tuple[np.ndarray, GaussianScene]:
        if self.merged and not self.preview:
            self.report("merging", 0.0)
            start = time.perf_counter()
            if self.merger is None:
                self.merger = Merger(self.scene, self.scores)
            merged = self.merger.merge(keep)
            self.merge_seconds += time.perf_counter() - start
            return keep, merged
        kept_scene = self.scene.subset(keep)
        if amplified:
            ratio = self._grid(coverage, count).prune_ratio(keep)
            kept_scene = amplify(kept_scene, ratio, self.settings.amplification)
        return keep, kept_scene

    def _best_selection(self, count: int) -> tuple[tuple[float, float], bool]:
        """((coverage, proportional share), amplify or not) whose pruned scene renders closest to the full one.

        Measured on a few scoring views. Spatially even sampling (the paper's rule) suits evenly detailed
        objects, score-driven allocation suits captures whose detail concentrates in a few places, and
        amplification helps where pruning opens holes but can blur a lightly pruned scene (docs/method.md).
        """
        amplify_option = self.settings.amplification.enabled
        if not self.check_cameras:
            return (self.settings.voxel_coverage, 1.0), amplify_option
        from exgs_core.render import render

        references = [render(self.scene, c, backend="torch").rgb for c in self.check_cameras]

        errors: dict[tuple[tuple[float, float], bool], float] = {}

        def error(option: tuple[tuple[float, float], bool]) -> float:
            if option not in errors:
                (coverage, proportional), amplified = option
                keep = self._voxel_keep(count, coverage, proportional)
                _, candidate = self._kept(keep, amplified, coverage, count)
                errors[option] = sum(float(((render(candidate, c, backend="torch").rgb - ref) ** 2).mean())
                                     for c, ref in zip(self.check_cameras, references))
                self.report("sampling", len(errors) / (len(SAMPLING_CANDIDATES) + 1))
            return errors[option]

        best = min(((option, amplify_option) for option in SAMPLING_CANDIDATES), key=error)
        if amplify_option:
            best = min([best, (best[0], False)], key=error)
        return best

    def _degree(self) -> int:
        degree = self.settings.sh_degree
        return self.scene.sh_degree if degree is None else min(degree, self.scene.sh_degree)


def _stats(original: GaussianScene, decoded: GaussianScene, data: bytes, score_time: float, total_time: float,
           views: int, target: Target) -> dict:
    source_bytes = original.metadata.get("source_bytes")
    inria_bytes = INRIA_BYTES_PER_GAUSSIAN * len(original)
    return {
        "target": target.describe(),
        "gaussians_before": len(original),
        "gaussians_after": len(decoded),
        "bytes_before": source_bytes,
        "bytes_after": len(data),
        "ratio_vs_input": (source_bytes / len(data)) if source_bytes else None,
        "ratio_vs_inria_ply": inria_bytes / len(data),
        "scoring_views": views,
        "scoring_seconds": round(score_time, 3),
        "seconds": round(total_time, 3),
    }


def decompress(data: bytes) -> GaussianScene:
    """The scene stored in .exgs bytes (SceneFormatError when they are not a valid .exgs file)."""
    return decode_exgs(data)
