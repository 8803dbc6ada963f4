"""compress(scene, target) and decompress(data): UGC end to end, without re-optimisation.

Pipeline: significance over scoring views -> voxel sampling of exactly K Gaussians -> the pruned ones merged
into the kept ones (or, the paper's path, dropped and the kept amplified) -> SH reduction, quantisation and
entropy coding into an .exgs container. A size or ratio target is met by adjusting K until the encoded file
lands within 2% below the target, for each quantisation level tried; the level whose file renders closest to
the full scene on check views is kept. The method (merge or paper) is chosen once per scene, at reference
ratios, so it does not flip between nearby targets; scenes above PROXY_ABOVE Gaussians make every choice on a
crop and are compressed once with it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np

from exgs_core.errors import ExgsError
from exgs_core.io.exgs import decode_exgs, encode_exgs, read_exgs_header
from exgs_core.io.ply import INRIA_BYTES_PER_GAUSSIAN
from exgs_core.render.rasterize import torch_single_threaded
from exgs_core.scene import GaussianScene
from exgs_core.side_by_side import LARGE, run_side_by_side
from exgs_core.ugc.amplify import Amplification, amplify
from exgs_core.ugc.merge import Merger
from exgs_core.ugc.pack import PackSettings, pack_scene, unpack_scene
from exgs_core.ugc.sampling import VoxelGrid, voxel_size_for
from exgs_core.ugc.significance import significance

SIZE_TOLERANCE = 0.02
# Defaults chosen by bench/compress.py and the measurements in docs/method.md.
SH_AUTO = "auto"  # the SH degree of SH_AUTO_DEGREES that renders best at the target (scenes with SH only)
SH_AUTO_DEGREES = (0, 1)
DEFAULT_SH_DEGREE = SH_AUTO
DEFAULT_VARIANT = "alpha_t"
DEFAULT_AMPLIFICATION = Amplification(scale_power=0.1, opacity_power=0.5, max_scale_gain=2.0)
DEFAULT_VOXEL_COVERAGE = 0.15
DEFAULT_VOXEL_PROPORTIONAL = None  # None: (coverage, proportional) chosen per scene on check views
SAMPLING_CANDIDATES = ((0.15, 0.0), (0.15, 0.5), (0.15, 1.0), (0.6, 1.0))  # (voxel coverage, proportional)
METHODS = ("merge", "paper")
METHOD_CHOICES = ("auto", *METHODS)  # auto: the one whose files at REFERENCE_RATIOS render closer (per scene)
DEFAULT_METHOD = "auto"
MERGE_SAMPLING = (0.6, 0.5)  # (voxel coverage, proportional) of the merge method: fixed, for every scene and count
CHECK_VIEWS = 8  # scoring views (at scoring size) on which sampling options and quantisation levels are compared
# Quantisation levels, finest first. At a fixed file size a coarser level buys more Gaussians; which level
# renders best depends on the scene and the ratio, so it is chosen by rendered error (docs/method.md).
QUANTISATION_LEVELS = (
    PackSettings(),  # 14/7/7/8/8 bits (position, rotation, scale, opacity, colour), SH 5/4/4
    PackSettings(position_bits=13, rotation_bits=6, scale_bits=6, opacity_bits=7, color_bits=7, sh_bits=(4, 3, 3)),
    PackSettings(position_bits=12, rotation_bits=5, scale_bits=5, opacity_bits=6, color_bits=6, sh_bits=(4, 3, 3)),
    PackSettings(position_bits=10, rotation_bits=5, scale_bits=5, opacity_bits=6, color_bits=6, sh_bits=(3, 3, 3)),
    PackSettings(position_bits=10, rotation_bits=4, scale_bits=4, opacity_bits=5, color_bits=5, sh_bits=(3, 3, 3)),
    PackSettings(position_bits=9, rotation_bits=4, scale_bits=4, opacity_bits=4, color_bits=5, sh_bits=(3, 3, 3)),
    PackSettings(position_bits=8, rotation_bits=4, scale_bits=4, opacity_bits=4, color_bits=4, sh_bits=(3, 2, 2)),
)
# Where the search over levels starts, by ratio against the INRIA .ply: (ratio below which, level).
FIRST_LEVEL_BY_RATIO = ((20.0, 0), (40.0, 1), (70.0, 2), (150.0, 3), (np.inf, 4))
DEFAULT_VIEWS = 24
SCORING_SIZE = 192
# The method (merge or paper) is chosen once per scene, on files at these ratios (docs/method.md).
REFERENCE_RATIOS = (100.0, 300.0)
# Above PROXY_ABOVE Gaussians the method, level, SH degree and sampling are chosen on a crop of
# PROXY_GAUSSIANS (at the same ratio), and the whole scene is compressed once with them fixed.
PROXY_ABOVE = 500_000
PROXY_GAUSSIANS = 100_000
SELECTIONS_KEPT = 6  # kept and merged scenes remembered per method (a few levels' final counts)
# ... and at most this many Gaussians in them (the last one always): on a 10M-Gaussian scene at 100x each holds
# about 5M Gaussians, and six of them were the largest memory of the compression.
SELECTIONS_KEPT_GAUSSIANS = 2_000_000


@dataclass(frozen=True)
class Target:
    """What to aim for: a keep ratio (0-1], a file size in bytes, or a ratio against the INRIA .ply."""

    kind: str  # "keep" | "size" | "ratio"
    value: float
    # A file may be this fraction below a size or ratio target (never above it). Narrower for a file that gets
    # a section added after compression, so that the whole file still meets SIZE_TOLERANCE (restoration.py).
    tolerance: float = SIZE_TOLERANCE

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
    sh_degree: int | str | None = DEFAULT_SH_DEGREE  # SH_AUTO, a degree, or None: the scene's degree
    variant: str = DEFAULT_VARIANT
    amplification: Amplification = DEFAULT_AMPLIFICATION
    voxel_coverage: float = DEFAULT_VOXEL_COVERAGE
    voxel_proportional: float | None = DEFAULT_VOXEL_PROPORTIONAL
    use_voxels: bool = True
    # "merge": pruned Gaussians merge into kept ones; "paper": drop and amplify; "auto": the better of the two
    method: str = DEFAULT_METHOD
    quantisation_level: int | None = None  # index into QUANTISATION_LEVELS; None: chosen by rendered error

    def __post_init__(self) -> None:
        if self.method not in METHOD_CHOICES:
            raise ValueError(f"unknown compression method {self.method!r}; choose one of {', '.join(METHOD_CHOICES)}")
        if not (self.sh_degree in (None, SH_AUTO) or (isinstance(self.sh_degree, int) and 0 <= self.sh_degree <= 3)):
            raise ValueError(f"SH degree must be 0..3, {SH_AUTO!r} or None, got {self.sh_degree!r}")
        level = self.quantisation_level
        if level is not None and not (isinstance(level, int) and 0 <= level < len(QUANTISATION_LEVELS)):
            raise ValueError(f"quantisation level must be 0..{len(QUANTISATION_LEVELS) - 1} (0 finest) or None, "
                             f"got {level!r}")

    def to_dict(self) -> dict:
        amp = self.amplification
        return {
            "method": self.method, "sh_degree": self.sh_degree, "score": self.variant,
            "quantisation_level": self.quantisation_level,
            "voxel_sampling": self.use_voxels,
            "voxel_coverage": self.voxel_coverage,
            "amplification": {"scale_power": amp.scale_power, "opacity_power": amp.opacity_power,
                              "max_scale_gain": amp.max_scale_gain},
        }


@dataclass
class CompressResult:
    data: bytes  # the .exgs file
    decoded: GaussianScene | None  # what the file decodes to, or None: decoded from `data` on first use
    kept: np.ndarray  # indices of the kept Gaussians in the input scene
    stats: dict = field(default_factory=dict)
    # The settings with what is chosen once per scene fixed (the method; for scenes chosen on a crop, also the
    # level, SH degree and sampling): compressing the same scene to another size with them does not choose the
    # method again.
    scene_settings: CompressSettings | None = None

    @property
    def scene(self) -> GaussianScene:
        """What the file decodes to (decoded when first asked for: `exgs compress` without a restoration never
        does, and a 10M-Gaussian file takes 8 s)."""
        if self.decoded is None:
            self.decoded = decode_exgs(self.data)
        return self.decoded


ProgressCallback = Callable[[str, float], None]  # (stage, fraction done) ; raise to cancel


def compress(scene: GaussianScene, target: Target, cameras: Sequence, settings: CompressSettings | None = None,
             on_progress: ProgressCallback | None = None, scores: np.ndarray | None = None,
             release_input: bool = False) -> CompressResult:
    """Compress `scene` to `target`, scoring Gaussians from `cameras` (orbit, user cameras, animation path).

    `scores` replaces the significance computation (benchmarks pass baseline scores through it).
    `release_input`: the caller has no further use for `scene`'s SH bands above those the file may keep, and
    they are dropped from `scene` itself (`scene.sh` is replaced) on large scenes, whose choices are made on a
    crop (cut before, with all its bands), since nothing then renders the whole scene. `exgs compress` does so:
    at SH degree 3 those bands are 192 of the 236 bytes of each Gaussian (docs/results.md, "Scale").
    """
    if len(cameras) == 0 and scores is None:
        raise ExgsError("compression needs at least one scoring view")
    with torch_single_threaded():
        return _compress(scene, target, cameras, settings or CompressSettings(), on_progress, scores, release_input)




def _compress(scene: GaussianScene, target: Target, cameras: Sequence, settings: CompressSettings,
              on_progress: ProgressCallback | None, scores: np.ndarray | None, release_input: bool = False
              ) -> CompressResult:
    report = on_progress or (lambda stage, fraction: None)
    start = time.perf_counter()

    on_crop = len(scene) > PROXY_ABOVE and _searches(settings, target)
    crop = proxy_crop(scene) if on_crop else None
    proxy_scene = scene.subset(crop) if on_crop else None  # all its SH bands: its check views render it
    work = _packable(scene, settings)
    released = release_input and work is not scene and on_crop
    if released:  # nothing renders the whole scene from here on: only the bands the file may keep are held
        scene.sh = work.sh
    checks = _CheckViews(scene, cameras, released)  # references: renders of the scene as it is, all its SH bands

    if scores is None:
        scores = significance(scene, cameras, settings.variant,
                              on_view=lambda i: report("scoring", (i + 1) / len(cameras)))
    score_time = time.perf_counter() - start
    proxy: dict = {}
    proxy_fit = None
    if on_crop:
        proxy_start = time.perf_counter()
        settings, proxy, proxy_fit = _chosen_on_proxy(scene, scores, target, settings, cameras, report, crop,
                                                      proxy_scene)
        proxy["seconds"] = round(time.perf_counter() - proxy_start, 3)
        del proxy_scene
        if released and _searches(settings, target):
            # Only the paper path's sampling can be left open, when the crop kept all its Gaussians (low ratios):
            # it is fixed as compress fixes it without check views, since the whole scene's cannot be rendered.
            settings = replace(settings, voxel_proportional=1.0)
            proxy["sampling"] = "fixed without check views: the crop kept all its Gaussians"
        work = _packable(work, settings)  # the degree is fixed now: the bands above it go too (degree 0: 36 B)
        if released:
            scene.sh = work.sh
    method_errors: dict[str, float] = {}
    method_start = time.perf_counter()
    made: list[_Encoder] = []  # the method's reference encoders: one of them may be the target's
    if settings.method == "auto" and target.kind != "keep":
        settings, method_errors, made = _scene_method(work, scores, settings, checks, report)
    method_time = time.perf_counter() - method_start
    encoders = _candidates(work, scores, settings, target, checks, report, proxy_fit, made)
    del made
    del work
    chosen = min(encoders, key=lambda e: e.error()) if len(encoders) > 1 else encoders[0]
    data, kept = chosen.write(target.size_in_bytes(len(scene)))

    header = read_exgs_header(data)
    stats = _stats(scene, header["count"], data, score_time, time.perf_counter() - start, len(cameras), target)
    stats["selection_seconds"] = round(sum(e.selection_seconds for e in encoders), 3)  # sampling choice
    stats["merge_seconds"] = round(sum(e.merge_seconds for e in encoders), 3)
    stats["packing_seconds"] = round(sum(e.packing_seconds for e in encoders), 3)
    stats["method"] = chosen.method
    stats["sh_degree"] = header["sh_degree"]
    stats["method_errors"] = method_errors  # mean log check error at the reference ratios (auto only)
    stats["method_seconds"] = round(method_time, 3)  # choosing the method at the reference ratios
    stats["sh_errors"] = {e.sh_degree: round(e.error(), 8) for e in encoders} if len(encoders) > 1 else {}
    stats["quantisation_level"] = chosen.level
    stats["quantisation_seconds"] = round(sum(e.level_seconds for e in encoders), 3)
    stats["level_errors"] = {level: round(error, 8) for level, error in sorted(chosen.level_errors.items())}
    stats["proxy"] = proxy  # {} unless the choices were made on a crop of the scene (large scenes)
    report("done", 1.0)
    return CompressResult(data, None, kept, stats, settings)


def _packable(scene: GaussianScene, settings: CompressSettings) -> GaussianScene:
    """`scene` without the SH bands above the highest degree any encoder may pack (degree 1 for "auto").

    Encoders select, merge and amplify Gaussians band by band and pack only up to their degree, so the files
    are the same; but every kept or merged copy of the Gaussians then holds 12 or 48 bytes of SH instead of
    192 at degree 3 (the kept Gaussians of a 10M scene at 100x are about 5M)."""
    if settings.sh_degree is None:
        return scene
    highest = max(SH_AUTO_DEGREES) if settings.sh_degree == SH_AUTO else int(settings.sh_degree)
    if highest >= scene.sh_degree:
        return scene
    work = scene.with_sh_degree(highest)
    work.metadata["source_sh_degree"] = scene.metadata.get("source_sh_degree", scene.sh_degree)  # for the header
    return work


def _searches(settings: CompressSettings, target: Target) -> bool:
    """Whether compress() chooses anything by rendered error for this target (a fixed count chooses nothing)."""
    sampling = settings.method != "merge" and settings.voxel_proportional is None
    return target.kind != "keep" and (settings.method == "auto" or settings.quantisation_level is None
                                      or settings.sh_degree == SH_AUTO or sampling)


def _scene_method(scene: GaussianScene, scores: np.ndarray, settings: CompressSettings, checks: "_CheckViews",
                  report: ProgressCallback) -> tuple[CompressSettings, dict[str, float], list["_Encoder"]]:
    """`settings` with the method fixed for this scene, whatever the target: the one whose files at
    REFERENCE_RATIOS (each method at its best level there) render closer to the full scene on the check views,
    by the geometric mean of the errors. The paper path's sampling is still chosen per target: kept from the
    100x reference it cost the donut 5.3 dB at 30x.
    At a fixed level per ratio instead, merge won on the hammer and the spot, where paper renders 3-6 dB better
    at 300x (docs/method.md).

    Once per scene, not per target: on the check views merge and paper are near-ties at some sizes of some
    scenes while one of them is 1-2 dB better on other views, so a choice per target flipped between nearby
    sizes and made quality fall with more bytes (the donut: 0.77 dB between 120x and 130x, docs/method.md)."""
    log_errors = {method: 0.0 for method in METHODS}
    made: list[_Encoder] = []
    for ratio in REFERENCE_RATIOS:
        target = Target("ratio", ratio)
        try:
            encoders = [_encode(scene, scores, settings, method, 0, target, checks, report, None) for method in METHODS]
        except ExgsError:  # a tiny scene cannot reach this ratio
            continue
        made += encoders
        for encoder in encoders:
            log_errors[encoder.method] += float(np.log(max(encoder.error(), 1e-30)))
    if not made:
        return settings, {}, []
    references = len(made) // len(METHODS)
    method = min(METHODS, key=lambda m: log_errors[m])
    chosen = replace(settings, method=method)
    return chosen, {m: round(v / references, 4) for m, v in log_errors.items()}, made


def _fixed_settings(settings: CompressSettings, encoder: "_Encoder") -> CompressSettings:
    """`settings` with `encoder`'s method, quantisation level, SH degree and (paper path) sampling fixed."""
    fixed = replace(settings, method=encoder.method, quantisation_level=encoder.level, sh_degree=encoder.sh_degree)
    if encoder.method != "paper" or encoder.proportional is None:
        return fixed
    amplification = settings.amplification if encoder.amplified else Amplification()
    return replace(fixed, voxel_coverage=encoder.coverage, voxel_proportional=encoder.proportional,
                   amplification=amplification)


def _candidates(scene: GaussianScene, scores: np.ndarray, settings: CompressSettings, target: Target,
                checks: "_CheckViews", report: ProgressCallback, last_fit: tuple[int, int, int] | None = None,
                made: Sequence["_Encoder"] = ()) -> list["_Encoder"]:
    """One encoder per method at the first SH degree, then the best method at the other degrees, each with its
    level and count chosen for `target` (the size search starting from `last_fit`'s bytes per Gaussian).
    An encoder of `made` (the method's references) that made the same search is taken instead of searching
    again: at 100x or 300x the first one is (a search at 1.5M Gaussians takes 5 s, on their crop)."""
    methods = METHODS if settings.method == "auto" else (settings.method,)
    degrees = SH_AUTO_DEGREES if settings.sh_degree == SH_AUTO else (settings.sh_degree,)
    degrees = tuple(d for d in degrees if d is None or d <= scene.sh_degree) or (0,)
    encoders: list[_Encoder] = []
    level = None
    for method in methods:
        same = [e for e in made if _same_search(e, scene, settings, method, degrees[0], target, level, last_fit)]
        encoders.append(same[0] if same else
                        _encode(scene, scores, settings, method, degrees[0], target, checks, report, level, last_fit))
        level = encoders[-1].level  # the next search starts there
    chosen = min(encoders, key=lambda e: e.error()) if len(encoders) > 1 else encoders[0]
    for degree in degrees[1:]:
        encoders.append(_encode(scene, scores, settings, chosen.method, degree, target, checks, report, chosen.level))
    return encoders


def _same_search(encoder: "_Encoder", scene: GaussianScene, settings: CompressSettings, method: str,
                 sh_degree: int | None, target: Target, first_level: int | None,
                 last_fit: tuple[int, int, int] | None) -> bool:
    """Whether `encoder` is what _encode would make of these arguments (the scores and check views being the
    same: both come with the scene). The settings may differ in their method alone, which the encoder's own
    method overrides everywhere."""
    return (encoder.scene is scene and encoder.method == method and encoder.sh_degree == sh_degree
            and encoder.target == target and encoder.first_level == first_level and encoder.started_from == last_fit
            and replace(encoder.settings, method=method) == replace(settings, method=method))


def proxy_crop(scene: GaussianScene, count: int | None = None) -> np.ndarray:
    """Indices of the `count` Gaussians nearest the scene's median point (sorted): a spatial crop that keeps
    the scene's local density, so that a compression ratio means the same there as on the whole scene."""
    means = scene.means.astype(np.float64)
    distance = np.linalg.norm(means - np.median(means, axis=0), axis=1)
    return np.sort(np.argsort(distance, kind="stable")[:count or PROXY_GAUSSIANS])


def _chosen_on_proxy(scene: GaussianScene, scores: np.ndarray, target: Target, settings: CompressSettings,
                     cameras: Sequence, report: ProgressCallback, crop: np.ndarray | None = None,
                     proxy: GaussianScene | None = None
                     ) -> tuple[CompressSettings, dict, tuple[int, int, int] | None]:
    """`settings` with the method, quantisation level, SH degree and sampling fixed to what renders best on a
    crop of PROXY_GAUSSIANS at the same ratio (as many views around the crop as were given, at their size):
    the search cost 2.5x a compress of a 1.5M scene, and what it finds depends on the scene's character and
    the ratio, not on its extent. Also the crop's last (level, count, bytes): its bytes per Gaussian start
    the whole scene's size search (each merge of 1.5M Gaussians takes 4 s)."""
    crop = proxy_crop(scene) if crop is None else crop
    proxy = scene.subset(crop) if proxy is None else proxy  # (the caller's crop when it has cut the SH bands)
    proxy_scores = scores[crop]
    ratio = INRIA_BYTES_PER_GAUSSIAN * len(scene) / target.size_in_bytes(len(scene))
    size = min(SCORING_SIZE, max(cameras[0].width, cameras[0].height)) if len(cameras) else SCORING_SIZE
    checks = _CheckViews(proxy, scoring_cameras(proxy, max(len(cameras), 2), size=size))  # as many, as large
    made: list[_Encoder] = []
    if settings.method == "auto":
        settings, _, made = _scene_method(proxy, proxy_scores, settings, checks, report)
    # The target's own ratio where it is one, so that a reference's search is the same search (_same_search)
    proxy_target = Target("ratio", target.value if target.kind == "ratio" else ratio, target.tolerance)
    encoders = _candidates(proxy, proxy_scores, settings, proxy_target, checks, report, made=made)
    del made
    chosen = min(encoders, key=lambda e: e.error()) if len(encoders) > 1 else encoders[0]
    choices = {"gaussians": len(proxy), "method": chosen.method, "quantisation_level": chosen.level,
               "sh_degree": chosen.sh_degree}
    return _fixed_settings(settings, chosen), choices, chosen.last_fit


def _encode(scene: GaussianScene, scores: np.ndarray, settings: CompressSettings, method: str, sh_degree: int | None,
            target: Target, checks: "_CheckViews", report: ProgressCallback, first_level: int | None,
            last_fit: tuple[int, int, int] | None = None) -> "_Encoder":
    """An encoder of `method` and `sh_degree` that has chosen its level and count for `target` (its size search
    starting from `last_fit`'s bytes per Gaussian when given)."""
    encoder = _Encoder(scene, scores, settings, method, sh_degree, target, checks, report)
    encoder.first_level, encoder.started_from = first_level, last_fit
    encoder.last_fit = last_fit
    budget = target.size_in_bytes(len(scene))
    if budget is None:  # a fixed count: nothing to trade against precision, so the finest level
        encoder.level, encoder.count = settings.quantisation_level or 0, encoder.initial_count()
    else:
        encoder.best_within(budget, first_level)
    return encoder


class _CheckViews:
    """Views halfway between consecutive scoring views, at scoring size, and the full scene's renders from them
    (made on first use): what sampling options, quantisation levels and methods are compared on.

    Not the scoring views themselves: merging is steered by what those views see, so on them it looked better
    than it rendered elsewhere (the hairy donut at 94x: merge chosen, 1.5 dB worse on held-out views)."""

    def __init__(self, scene: GaussianScene, cameras: Sequence, released: bool = False):
        from exgs_core.camera import views_between

        self.scene = scene
        self.released = released  # the scene's SH bands above what is packed were dropped: no references
        between = views_between(list(cameras)) or list(cameras)  # a single view has nothing between
        self.cameras = at_scoring_size(between[:: max(1, len(between) // CHECK_VIEWS)][:CHECK_VIEWS])
        self.references: list | None = None

    def error(self, candidate: GaussianScene) -> float:
        """Summed mean squared error of `candidate`'s renders against the full scene's."""
        from exgs_core.render import render_views

        if self.released:
            raise RuntimeError("compress: check views on a scene whose SH bands were released (release_input)")
        if self.references is None:
            self.references = [out.rgb for out in render_views(self.scene, self.cameras, backend="torch")]
        return sum(float(((out.rgb - reference) ** 2).mean())
                   for out, reference in zip(render_views(candidate, self.cameras, backend="torch"), self.references))


class _Encoder:
    """Encodes the best K Gaussians for any K, with one method.

    The voxel size and the proportional share are fixed at the first K, so later adjustments stay cheap.
    """

    def __init__(self, scene: GaussianScene, scores: np.ndarray, settings: CompressSettings, method: str,
                 sh_degree: int | None, target: Target, checks: _CheckViews, report: ProgressCallback):
        self.scene, self.scores, self.settings, self.target, self.report = scene, scores, settings, target, report
        self.method, self.sh_degree, self.checks = method, sh_degree, checks
        self.level = 0  # index into QUANTISATION_LEVELS of what encode() writes
        self.first_level: int | None = None  # where _encode started the search over levels, and the fit
        self.started_from: tuple[int, int, int] | None = None  # it started the size search from (_same_search)
        self.count = 0  # the count chosen for that level
        self.codec_ratio: float | None = None  # real coder's bytes / the fast coder's, for size estimates
        # (level, count, preview, pack fields, sections) of the last estimate: the exact file of the count the
        # search ends on packs the same Gaussians (a pack of 5M Gaussians takes 8 s)
        self.packed: tuple[int, int, bool, dict, dict] | None = None
        # (level, count, preview, file) of the real coder's file that measured codec_ratio: when the search ends on
        # that count (every Gaussian fits, or the first guess was right) it is the exact file (8 s at 1.7M)
        self.coded: tuple[int, int, bool, bytes] | None = None
        self.level_errors: dict[int, float] = {}  # check-view error of each level tried
        self.level_seconds = 0.0  # the whole search over levels (its packs and merges included)
        self.last_fit: tuple[int, int, int] | None = None  # (level, count, bytes) of the last file fitted
        self.selection_seconds = 0.0
        self.merge_seconds = 0.0  # all merges of the size search
        self.packing_seconds = 0.0  # all encodes of the size search
        self.grids: dict[float, VoxelGrid] = {}  # per voxel coverage; the voxel size is fixed at the first K
        self.coverage = settings.voxel_coverage
        self.proportional = settings.voxel_proportional
        self.merged = method == "merge"
        self.merger: Merger | None = None
        self.preview = False  # True while _fit looks for the count on unmerged packs (merge method)
        self.selected: dict[tuple[int, bool], tuple[np.ndarray, GaussianScene]] = {}  # the last few selections
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

    def best_within(self, budget: int, first: int | None = None) -> None:
        """Find the level and count whose file (within `budget` bytes) renders closest to the full scene on the
        check views: a descent from a first guess by ratio to the level whose neighbours both render worse (at
        a fixed size, quality rises and then falls as the levels get coarser). Sizes are estimated here;
        `write` makes the exact file."""
        if self.settings.quantisation_level is not None or not self.checks.cameras:
            self.level = self.settings.quantisation_level
            if self.level is None:
                self.level = first_level(INRIA_BYTES_PER_GAUSSIAN * len(self.scene) / budget)
            self.count = self._fit(budget)[0]
            return
        started = time.perf_counter()
        counts: dict[int, int] = {}

        def error(level: int) -> float:
            if level not in counts:
                self.level = level
                counts[level], packed = self._fit(budget)
                candidate = unpack_scene(*packed)
                self.level_errors[level] = self.checks.error(candidate)
            return self.level_errors[level]

        level = first_level(INRIA_BYTES_PER_GAUSSIAN * len(self.scene) / budget) if first is None else first
        for step in (-1, 1):
            moved = False
            while 0 <= level + step < len(QUANTISATION_LEVELS) and error(level + step) < error(level):
                level, moved = level + step, True
            if moved:
                break
        self.level, self.count = level, counts[level]
        self.level_seconds = time.perf_counter() - started

    def write(self, budget: int | None) -> tuple[bytes, np.ndarray]:
        """The exact .exgs file at the chosen level: at the chosen count, moved until it is within budget."""
        if budget is None:
            return self.encode(self.count)
        _, (data, kept) = self._search(self.count, budget, 6, self._exact)
        return data, kept

    def _fit(self, budget: int) -> tuple[int, tuple[dict, dict]]:
        """(count, (pack fields, sections)) of the most Gaussians whose estimated file size is within `budget`
        bytes (unpack_scene decodes them where they are rendered: not at a fixed level, where a decode of
        millions of Gaussians was the memory peak of the search)."""
        count = self.initial_count()
        if self.last_fit is not None:  # another level's bytes per Gaussian, scaled by the bits per Gaussian
            level, fit_count, fit_bytes = self.last_fit
            per_gaussian = fit_bytes / fit_count * self._raw_bits(self.level) / self._raw_bits(level)
            count = int(np.clip(budget * (1 - self.target.tolerance / 2) / per_gaussian, 1, len(self.scene)))
        elif self.merged:  # find the count on unmerged packs first: merging changes the bytes per Gaussian little
            self.preview = True
            count = self._search(count, budget, 8, self._estimate)[0]
            self.preview = False
        count, (fields, sections, size) = self._search(count, budget, 10, self._estimate)
        self.last_fit = (self.level, count, size)
        return count, (fields, sections)

    def _estimate(self, count: int) -> tuple[int, tuple[dict, dict, int]]:
        """(estimated file bytes, (pack fields, sections, estimate)) of `count` Gaussians: the sections coded
        by a fast zstd, times the size ratio of the real coder measured once per encoder (lzma at its
        strongest takes 5 s for 470k Gaussians, the fast coder 0.1 s; the ratio varied by +-3% over levels
        and counts)."""
        kept, pruned = self.select(count)
        start = time.perf_counter()
        fields, sections = pack_scene(pruned, sh_degree=self.sh_degree, settings=QUANTISATION_LEVELS[self.level])
        self.packed = (self.level, count, self.preview, fields, sections)
        fast = sum(len(coded) for coded in run_side_by_side(
            {name: (lambda section=section: _fast_coded(section)) for name, section in sections.items()},
            count >= LARGE).values())
        if self.codec_ratio is None:
            data = self._container(pruned, kept)
            self.codec_ratio = len(data) / fast
            self.coded = (self.level, count, self.preview, data)
        self.packing_seconds += time.perf_counter() - start
        size = int(fast * self.codec_ratio)
        return size, (fields, sections, size)

    def _exact(self, count: int) -> tuple[int, tuple[bytes, np.ndarray]]:
        data, kept = self.encode(count)
        return len(data), (data, kept)

    def _raw_bits(self, level: int) -> int:
        """Bits per Gaussian at `level` before entropy coding."""
        bits = QUANTISATION_LEVELS[level]
        sh_rest = sum(3 * (2 * band + 1) * bits.sh_bits[band - 1] for band in range(1, self._degree() + 1))
        return (3 * bits.position_bits + 3 * bits.rotation_bits + 2 + 3 * bits.scale_bits + bits.opacity_bits
                + 3 * bits.color_bits + sh_rest)

    def _search(self, count: int, budget: int, attempts: int, measure: Callable[[int], tuple[int, Any]]
                ) -> tuple[int, Any]:
        """(count, what `measure` gave) of the largest count found whose size is within budget, by secant steps
        inside a bracket (safe where the bytes do not grow in proportion to the count: merged Gaussians of
        mesh objects). `measure(count)` -> (bytes, anything)."""
        n = len(self.scene)
        below: tuple[int, int, Any] | None = None  # the largest count within budget so far
        above: tuple[int, int] | None = None  # the smallest count over budget so far
        slope = None  # bytes per Gaussian between the last two tries (the marginal cost, not the average)
        previous: tuple[int, int] | None = None
        for attempt in range(attempts):
            size, result = measure(count)
            self.report("packing", (attempt + 1) / attempts)
            if previous is not None and previous[0] != count and size != previous[1]:
                slope = (size - previous[1]) / (count - previous[0])
            previous = (count, size)
            if size <= budget:
                if below is None or count > below[0]:
                    below = (count, size, result)
                if size >= (1 - self.target.tolerance) * budget or count >= n:
                    break
            elif above is None or count < above[0]:
                above = (count, size)
            next_count = _next_count(below[:2] if below else None, above, budget, n, slope, self.target.tolerance)
            if next_count is None:
                break
            count = next_count
        while below is None:  # out of attempts above the budget: halve until a file fits
            count = max(1, count // 2)
            size, result = measure(count)
            if size <= budget:
                below = (count, size, result)
            elif count == 1:
                raise ExgsError(f"cannot reach {self.target.describe()}: even 1 Gaussian takes {size:,} bytes")
        return below[0], below[2]

    def encode(self, count: int) -> tuple[bytes, np.ndarray]:
        """The .exgs file of `count` Gaussians at the current level, and the kept indices."""
        kept, pruned = self.select(count)
        if self.coded is not None and self.coded[:3] == (self.level, count, self.preview):
            return self.coded[3], kept
        start = time.perf_counter()
        data = self._container(pruned, kept)
        self.packing_seconds += time.perf_counter() - start
        return data, kept

    def _container(self, pruned: GaussianScene, kept: np.ndarray) -> bytes:
        header = {"compression": {**self.settings.to_dict(), "method": self.method, "sh_degree": self.sh_degree,
                                  "voxel_coverage": self.coverage, "voxel_proportional": self.proportional,
                                  "amplified": self.amplified, "quantisation_level": self.level,
                                  "target": {"kind": self.target.kind, "value": self.target.value},
                                  "kept": len(kept), "input_count": len(self.scene)}}
        packed = None
        if self.packed is not None and self.packed[:3] == (self.level, len(kept), self.preview):
            packed = self.packed[3:]
        return encode_exgs(pruned, QUANTISATION_LEVELS[self.level], sh_degree=self.sh_degree, extra_header=header,
                           packed=packed)

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
        key = (count, self.preview)
        if key not in self.selected:  # the searches of several levels and the final write ask for counts again
            keep = self._voxel_keep(count, self.coverage, self.proportional)
            self.selected[key] = self._kept(keep, self.amplified, self.coverage, count)
            while len(self.selected) > 1 and (len(self.selected) > SELECTIONS_KEPT or sum(
                    len(kept) for kept, _ in self.selected.values()) > SELECTIONS_KEPT_GAUSSIANS):
                del self.selected[next(iter(self.selected))]
        return self.selected[key]

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
        if not self.checks.cameras:
            return (self.settings.voxel_coverage, 1.0), amplify_option
        errors: dict[tuple[tuple[float, float], bool], float] = {}

        def error(option: tuple[tuple[float, float], bool]) -> float:
            if option not in errors:
                (coverage, proportional), amplified = option
                keep = self._voxel_keep(count, coverage, proportional)
                _, candidate = self._kept(keep, amplified, coverage, count)
                errors[option] = self.checks.error(candidate)
                self.report("sampling", len(errors) / (len(SAMPLING_CANDIDATES) + 1))
            return errors[option]

        best = min(((option, amplify_option) for option in SAMPLING_CANDIDATES), key=error)
        if amplify_option:
            best = min([best, (best[0], False)], key=error)
        return best

    def error(self) -> float:
        """The check-view error of the chosen level and count."""
        if self.level not in self.level_errors:
            fields, sections, _ = self._estimate(self.count)[1]
            self.level_errors[self.level] = self.checks.error(unpack_scene(fields, sections))
        return self.level_errors[self.level]

    def _degree(self) -> int:
        degree = self.sh_degree
        return self.scene.sh_degree if degree is None else min(degree, self.scene.sh_degree)


def _fast_coded(section: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=3).compress(section)


def first_level(ratio: float) -> int:
    """Where the search over quantisation levels starts for a ratio against the INRIA .ply."""
    return next(level for below, level in FIRST_LEVEL_BY_RATIO if ratio < below)


def _next_count(below: tuple[int, int] | None, above: tuple[int, int] | None, budget: int, n: int,
                slope: float | None = None, tolerance: float = SIZE_TOLERANCE) -> int | None:
    """The next count to try given (count, bytes) of the largest count within budget and of the smallest over
    it, and the last measured bytes per added Gaussian; None when there is nothing left between them."""
    aim = budget * (1 - tolerance / 2)
    if below and above:
        (low, low_size), (high, high_size) = below, above
        if high - low <= 1:
            return None
        guess = low + (aim - low_size) * (high - low) / max(high_size - low_size, 1)
        margin = max(1, (high - low) // 8)  # the bracket shrinks by an eighth at least
        return int(np.clip(round(guess), low + margin, high - margin))
    count, size = below or above  # type: ignore[misc]
    per_gaussian = slope if slope is not None and slope > 0 else size / max(count, 1)
    guess = count + (aim - size) / max(per_gaussian, 0.5)
    if below:
        return None if count >= n else int(np.clip(guess, count + 1, n))
    return None if count <= 1 else int(np.clip(guess, 1, count - 1))


def _stats(original: GaussianScene, count_after: int, data: bytes, score_time: float, total_time: float,
           views: int, target: Target) -> dict:
    source_bytes = original.metadata.get("source_bytes")
    inria_bytes = INRIA_BYTES_PER_GAUSSIAN * len(original)
    return {
        "target": target.describe(),
        "gaussians_before": len(original),
        "gaussians_after": count_after,
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
