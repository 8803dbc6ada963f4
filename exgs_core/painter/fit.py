"""Restoration fitted per scene while compressing it (docs/painter.md, "Restoration per scene").

The compressor has the full scene, so it can render pairs (the decoded compressed scene against the full one)
from many views and fit a small correction to exactly this scene's losses. The correction is a tiny residual
CNN (3 convolutions, 8 channels: 1,099 parameters, 2.2 KB in fp16) called like GaussPainter,
`module(rgb, mask)`, so exgs_core.painter.restore works with it unchanged. Views never used for fitting
choose how much of it to apply (the strength, 0 when it does not help).

    pairs = render_pairs(full, decoded, fit_views)
    result = fit_restoration(pairs, validation_pairs, steps=1000)
    restoration = result.to_restoration()            # exgs_core.io.exgs.Restoration: the .exgs section
    module = restoration_module(restoration)         # back to a torch module, e.g. in exgs restore
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from exgs_core.camera import Camera, look_at, robust_bounds
from exgs_core.painter.data import background_for
from exgs_core.io.exgs import Restoration
from exgs_core.metrics import psnr
from exgs_core.scene import GaussianScene

KIND = "residual_cnn"
DEFAULT_CHANNELS = 8  # 16 channels gained no more in the same CPU time on the fox at 100x, at 3x the bytes
DEFAULT_DTYPE = "float16"  # of the stored weights: "float16" or "int8" (exgs_core.io.exgs.RESTORATION_DTYPES)
LEARNING_RATE = 3e-3  # 6e-3 diverged on the cat at 100x
FIT_VIEWS = 48  # jittered views on top of the scoring (or user) views
VALIDATION_VIEWS = 8
VIEW_SIZE = 192
DISTANCE_RANGE = (0.45, 1.3)  # of the jittered fitting and validation views, times the framing distance
STRENGTHS = tuple(round(0.1 * k, 1) for k in range(11))
MIN_GAIN_DB = 0.02  # below this the correction is not worth its bytes
# Optimisation steps of the default fit, aiming at 90 s on 2 cores for a 200k-Gaussian scene's whole fit,
# rendering and validation included. The old 90 CPU-s budget gave 3,500-4,200 steps on a quiet machine; 2,500
# gained as much on held-out scenes (docs/painter.md, "Restoration per scene").
DEFAULT_STEPS = 2500

ProgressCallback = Callable[[str, float], None]


class ResidualCNN(nn.Module):
    """rgb + conv(relu(conv(relu(conv([rgb, mask]))))): a local correction, zero at initialisation."""

    pad_multiple = 1  # any size works (restore_batch pads to this)

    def __init__(self, channels: int = DEFAULT_CHANNELS):
        super().__init__()
        self.channels = channels
        self.conv1 = nn.Conv2d(4, channels, 3, padding=1, padding_mode="replicate")
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=2, dilation=2, padding_mode="replicate")
        self.conv3 = nn.Conv2d(channels, 3, 3, padding=1, padding_mode="replicate")
        nn.init.zeros_(self.conv3.weight)
        nn.init.zeros_(self.conv3.bias)

    def forward(self, rgb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(torch.cat([rgb, mask], dim=1)))
        x = F.relu(self.conv2(x))
        return rgb + self.conv3(x)


def restoration_module(restoration: Restoration, device: str | torch.device | None = None) -> ResidualCNN:
    """The torch module of a stored restoration, in eval mode without gradients (fp32 on the CPU)."""
    if restoration.kind != KIND:
        raise ValueError(f"unknown restoration kind {restoration.kind!r}")
    module = ResidualCNN(int(restoration.info["config"].get("channels", DEFAULT_CHANNELS)))
    state = {name: torch.from_numpy(np.array(value, np.float32)) for name, value in restoration.arrays().items()}
    expected = module.state_dict()
    if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
        raise ValueError("the restoration's tensors do not match its configuration")
    module.load_state_dict(state)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return module.to(device).eval().requires_grad_(False)


# --- views and pairs -----------------------------------------------------------------------------------------


def jittered_views(scene: GaussianScene, n: int, seed: int, size: int = VIEW_SIZE,
                   distance_range: tuple[float, float] | None = None, fov_range: tuple[float, float] = (30.0, 75.0)
                   ) -> list[Camera]:
    """`n` views from random directions around the scene, at varied distance and field of view (no up axis).

    Distance is a factor of the one where the robust bounding sphere just fits the view (log-uniform in
    `distance_range`), so close-ups, where pruning shows most, are well represented.
    """
    from exgs_core.camera import fit_distance

    distance_range = distance_range or DISTANCE_RANGE
    rng = np.random.default_rng(seed)
    center, radius = robust_bounds(scene.means, scene.opacities())
    cameras = []
    for _ in range(n):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction) + 1e-12
        fov = rng.uniform(*fov_range)
        focal = 0.5 * size / math.tan(math.radians(fov) / 2)
        distance = fit_distance(radius, focal, size, size) * math.exp(rng.uniform(*np.log(distance_range)))
        target = center + rng.uniform(-0.15, 0.15, 3) * radius
        up = np.array([0.0, 0.0, 1.0]) if abs(direction[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
        cameras.append(Camera(look_at(target + distance * direction, target, up), focal, focal, size / 2, size / 2,
                              size, size))
    return cameras


@dataclass
class Pairs:
    """Frames of the decoded compressed scene (inputs: rgb + mask = 1 - alpha) and of the full scene (targets)."""

    inputs: list[torch.Tensor]  # (4, H, W) each
    targets: list[torch.Tensor]  # (3, H, W) each

    def __len__(self) -> int:
        return len(self.inputs)


def backgrounds_for(count: int, seed: int) -> list[tuple[float, float, float]]:
    rng = np.random.default_rng(seed)
    return [background_for(rng, black=0.35, white=0.15, grey=0.2) for _ in range(count)]


def render_inputs(decoded: GaussianScene, cameras: Sequence[Camera], backgrounds: Sequence[tuple],
                  on_view: Callable[[], None] | None = None) -> list[torch.Tensor]:
    """(4, H, W) frames of a decoded compressed scene: rgb on the given background, then mask = 1 - alpha."""
    from exgs_core.render import render

    out = []
    for camera, background in zip(cameras, backgrounds):
        frame = render(decoded, camera, background=background)
        out.append(torch.cat([frame.rgb.permute(2, 0, 1), (1.0 - frame.alpha)[None]]).float().clamp(0, 1))
        if on_view is not None:
            on_view()
    return out


def render_targets(full: GaussianScene, cameras: Sequence[Camera], backgrounds: Sequence[tuple],
                   on_view: Callable[[], None] | None = None) -> list[torch.Tensor]:
    """(3, H, W) frames of the full scene on the given backgrounds."""
    from exgs_core.render import render

    out = []
    for camera, background in zip(cameras, backgrounds):
        out.append(render(full, camera, background=background).rgb.permute(2, 0, 1).float().clamp(0, 1))
        if on_view is not None:
            on_view()
    return out


def render_pairs(full: GaussianScene, decoded: GaussianScene, cameras: Sequence[Camera], seed: int = 0,
                 on_view: Callable[[], None] | None = None) -> Pairs:
    """Render both scenes from each camera on a varied background (seeded)."""
    backgrounds = backgrounds_for(len(cameras), seed)
    return Pairs(render_inputs(decoded, cameras, backgrounds, on_view),
                 render_targets(full, cameras, backgrounds, on_view))


# --- fitting -------------------------------------------------------------------------------------------------


@dataclass
class FitResult:
    module: ResidualCNN
    strength: float
    gain_db: float  # mean PSNR gain over raw on the validation views, at `strength`
    raw_psnr: float  # mean over validation views
    restored_psnr: float
    worst_view_gain_db: float
    worst_view: int
    steps: int
    seconds: float  # wall time of the optimisation
    per_view_gain_db: list[float] = field(default_factory=list)
    timings: dict[str, tuple[float, float]] = field(default_factory=dict)  # stage -> (wall s, process CPU s)
    dtype: str = DEFAULT_DTYPE

    def to_restoration(self) -> Restoration:
        validated = {"gain_db": round(self.gain_db, 3), "raw_psnr": round(self.raw_psnr, 3),
                     "restored_psnr": round(self.restored_psnr, 3), "views": len(self.per_view_gain_db),
                     "worst_view_gain_db": round(self.worst_view_gain_db, 3), "worst_view": self.worst_view,
                     "fit_steps": self.steps}  # no times: the same input must give the same bytes
        return _stored(self.module, self.strength, validated, self.dtype)


def _stored(module: ResidualCNN, strength: float, validated: dict, dtype: str) -> Restoration:
    arrays = {name: value.detach().cpu().numpy() for name, value in module.state_dict().items()}
    return Restoration.from_arrays(KIND, {"channels": module.channels}, arrays, strength, validated, dtype)


def fit_restoration(pairs: Pairs, validation: Pairs, steps: int = DEFAULT_STEPS, seconds: float | None = None,
                    channels: int = DEFAULT_CHANNELS, seed: int = 0, device: str | torch.device | None = None,
                    on_progress: ProgressCallback | None = None, dtype: str = DEFAULT_DTYPE) -> FitResult:
    """Fit a ResidualCNN on `pairs` for `steps` optimisation steps, then choose its strength on `validation`.

    A number of steps, not a time, is the budget, so the same pairs and seed give the same weights, bit for
    bit, on a busy machine as on an idle one (one torch thread on the CPU, seeded crops and initialisation).
    `seconds` optionally caps the optimisation's wall time: when it binds, fewer steps are done (the cosine
    schedule follows whichever of steps and time is further along) and the result depends on the machine.
    Random 64 px crops, half of them centred where the raw frame is most wrong; Adam with cosine decay; MSE
    loss (L1 gained 20x less PSNR in the same time on the fox at 100x). The module is rounded to the stored
    `dtype` (fp16 or int8) before validation, so the validated gain is the stored file's.
    """
    if len(pairs) == 0 or len(validation) == 0:
        raise ValueError("fitting a restoration needs fitting and validation pairs")
    if steps < 1:
        raise ValueError(f"fitting a restoration needs at least one step, got {steps}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    threads = torch.get_num_threads()
    if device.type == "cpu":
        # One thread: these small convolutions ran 3-5x slower per step on two threads of a busy 2-core machine,
        # and a fixed thread count keeps the floating-point sums in the same order run to run.
        torch.set_num_threads(1)
    try:
        return _fit(pairs, validation, steps, seconds, channels, seed, device, on_progress, dtype)
    finally:
        torch.set_num_threads(threads)


def _fit(pairs: Pairs, validation: Pairs, steps: int, seconds: float | None, channels: int, seed: int,
         device: torch.device, on_progress: ProgressCallback | None, dtype: str) -> FitResult:
    start, cpu_start = time.perf_counter(), time.process_time()  # the first optimiser in a process imports dynamo
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    module = ResidualCNN(channels).to(device, memory_format=torch.channels_last)  # 1.4x faster steps on a CPU
    optimiser = torch.optim.Adam(module.parameters(), lr=LEARNING_RATE)
    sampler = _CropSampler(pairs, rng, device)
    step = 0
    while step < steps:
        progress = step / steps
        if seconds is not None:
            progress = max(progress, (time.perf_counter() - start) / seconds)
            if progress >= 1.0:
                break
        for group in optimiser.param_groups:
            group["lr"] = LEARNING_RATE * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))
        x, y = sampler.batch()
        x = x.contiguous(memory_format=torch.channels_last)
        out = module(x[:, :3], x[:, 3:])
        loss = ((out - y) ** 2).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimiser.step()
        step += 1
        if on_progress is not None and step % 20 == 0:
            on_progress("fitting", min(1.0, progress))
    timings = {"optimisation": (time.perf_counter() - start, time.process_time() - cpu_start)}
    module = restoration_module(_stored(module, 1.0, {}, dtype), device)  # what the file will hold
    start, cpu_start = time.perf_counter(), time.process_time()
    result = _validate(module, validation, device, step, timings["optimisation"][0])
    result.timings = {**timings, "validation": (time.perf_counter() - start, time.process_time() - cpu_start)}
    result.dtype = dtype
    return result


class _CropSampler:
    """Batches of random crops; half centred on pixels drawn by the raw frame's error."""

    def __init__(self, pairs: Pairs, rng: np.random.Generator, device: torch.device, crop: int = 64, batch: int = 8):
        self.pairs, self.rng, self.device, self.batch_size = pairs, rng, device, batch
        # one crop size for every frame, so a batch stacks when some views are smaller (small user cameras)
        self.crop = min(crop, *(min(x.shape[-2:]) for x in pairs.inputs))
        self.cdfs = []  # of each frame's pixels, drawn by error: what rng.choice(p=...) computes on every call
        for x, y in zip(pairs.inputs, pairs.targets):
            error = (x[:3] - y).abs().sum(0).flatten().double().numpy() + 1e-6
            cdf = (error / error.sum()).cumsum()
            self.cdfs.append(cdf / cdf[-1])

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for k in range(self.batch_size):
            index = int(self.rng.integers(len(self.pairs)))
            x, y = self.pairs.inputs[index], self.pairs.targets[index]
            height, width = x.shape[-2:]
            crop = self.crop
            if k % 2 == 0:
                top = int(self.rng.integers(height - crop + 1))
                left = int(self.rng.integers(width - crop + 1))
            else:
                pixel = int(self.cdfs[index].searchsorted(self.rng.random(), side="right"))
                top = int(np.clip(pixel // width - crop // 2, 0, height - crop))
                left = int(np.clip(pixel % width - crop // 2, 0, width - crop))
            xs.append(x[:, top:top + crop, left:left + crop])
            ys.append(y[:, top:top + crop, left:left + crop])
        return torch.stack(xs).to(self.device), torch.stack(ys).to(self.device)


def _validate(module: ResidualCNN, validation: Pairs, device: torch.device, steps: int, seconds: float
              ) -> FitResult:
    """Per-view PSNR of raw and restored frames for each strength; the strength with the best mean PSNR."""
    psnr = np.zeros((len(validation), len(STRENGTHS)))
    with torch.inference_mode():
        for v, (x, y) in enumerate(zip(validation.inputs, validation.targets)):
            raw = x[None, :3].to(device)
            out = module(raw, x[None, 3:].to(device))
            target = y[None].to(device)
            for s, strength in enumerate(STRENGTHS):
                frame = (raw + strength * (out - raw)).clamp(0, 1)
                psnr[v, s] = frame_psnr(frame, target)
    means = psnr.mean(axis=0)
    best = int(np.argmax(means))
    gain = float(means[best] - means[0])
    if gain < MIN_GAIN_DB:
        best, gain = 0, 0.0
    per_view = psnr[:, best] - psnr[:, 0]
    worst = int(np.argmin(per_view))
    return FitResult(module.cpu(), STRENGTHS[best], gain, float(means[0]), float(means[best]),
                     float(per_view[worst]), worst, steps, seconds, [round(float(g), 3) for g in per_view])


def frame_psnr(image: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of images in [0, 1], after 8-bit rounding as a saved frame would have (capped at 60 dB)."""
    def saved(x: torch.Tensor) -> torch.Tensor:
        return (x.float().clamp(0, 1) * 255).round() / 255

    return min(60.0, float(psnr(saved(image), saved(target))))


def scene_restorer(scene: GaussianScene, device: str | torch.device | None = None
                   ) -> tuple[ResidualCNN, float] | None:
    """(module, strength) of the restoration a scene's .exgs file holds, or None (none, or strength 0)."""
    restoration = scene.metadata.get("restoration")
    if not isinstance(restoration, Restoration) or restoration.strength <= 0:
        return None
    return restoration_module(restoration, device), restoration.strength
