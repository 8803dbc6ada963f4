"""Per-scene restorations built on the shipped GaussPainter, against the default residual CNN, at equal bytes
(docs/results.md, "Restorations built on GaussPainter"). Prototypes: nothing here is in the product.

For each scene the full-budget file (no correction) is compared with the budget less each variant's bytes plus
the variant fitted on that smaller file, on bench/restoration.py's test views (the same views, backgrounds and
significance scores). Each variant is fitted for 2,500 steps of 8 crops of 64 px on the same views as the
default (exgs_core.ugc.restoration.restoration_views), its strength chosen on the same validation views.

- cnn: the default residual CNN (fp16), fitted here by the same loop as the other variants.
- painter-input: the residual CNN with GaussPainter's output as 3 more input channels (fp16).
- conditioning: GaussPainter's conditioning layers (stem, skips, head: 5,243 values, int8) fine-tuned; the
  encoder and the UNet stay frozen, so their outputs are computed once per frame.
- skips-head: the same without the stem (2,331 values, int8).

    python bench/restoration_painter_variants.py OUT.jsonl --ratio 300 --variants cnn conditioning [--scenes fox cat]

"own gain" in the rows is over the smaller file's raw frames: what the variant gains when its bytes are free.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from bench.restoration import HELD_OUT, TEST_SEED, TEST_VIEWS  # noqa: E402
from exgs_core.io import read_scene  # noqa: E402
from exgs_core.io.exgs import Restoration  # noqa: E402
from exgs_core.painter import fit, load_painter  # noqa: E402
from exgs_core.painter.restore import restore_batch  # noqa: E402
from exgs_core.ugc.compress import CompressSettings, Target, compress, scoring_cameras  # noqa: E402
from exgs_core.ugc.restoration import SECTION_MARGIN, restoration_views, section_reserve, view_scale  # noqa: E402
from exgs_core.ugc.significance import significance  # noqa: E402

VARIANTS = ("cnn", "painter-input", "conditioning", "skips-head")
STEPS = 2500
CROP = 64


class PainterInputCNN(nn.Module):
    """The default ResidualCNN's shape, with GaussPainter's correction (painted - rgb) as 3 more inputs."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(7, channels, 3, padding=1, padding_mode="replicate")
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=2, dilation=2, padding_mode="replicate")
        self.conv3 = nn.Conv2d(channels, 3, 3, padding=1, padding_mode="replicate")
        nn.init.zeros_(self.conv3.weight)
        nn.init.zeros_(self.conv3.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: rgb, mask, painted
        rgb = x[:, :3]
        h = F.relu(self.conv1(torch.cat([x[:, :4], x[:, 4:7] - rgb], dim=1)))
        return rgb + self.conv3(F.relu(self.conv2(h)))


def crop_windows(inputs: list[torch.Tensor], targets: list[torch.Tensor], rng: np.random.Generator):
    """Batches of 8 (frame, top, left): half random, half centred by the raw error, on the 8-px latent grid."""
    cdfs = []
    for x, y in zip(inputs, targets):
        error = (x[:3] - y).abs().sum(0).flatten().double().numpy() + 1e-6
        cdf = (error / error.sum()).cumsum()
        cdfs.append(cdf / cdf[-1])
    while True:
        batch = []
        for k in range(8):
            i = int(rng.integers(len(inputs)))
            height, width = inputs[i].shape[-2:]
            if k % 2 == 0:
                top, left = int(rng.integers(height - CROP + 1)), int(rng.integers(width - CROP + 1))
            else:
                pixel = int(cdfs[i].searchsorted(rng.random(), side="right"))
                top = int(np.clip(pixel // width - CROP // 2, 0, height - CROP))
                left = int(np.clip(pixel % width - CROP // 2, 0, width - CROP))
            batch.append((i, top // 8 * 8, left // 8 * 8))
        yield batch


def optimise(parameters: list[torch.Tensor], loss_of, steps: int, lr: float) -> None:
    """Adam with cosine decay and gradient clipping, as exgs_core.painter.fit does."""
    optimiser = torch.optim.Adam(parameters, lr=lr)
    for step in range(steps):
        for group in optimiser.param_groups:
            group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        loss = loss_of()
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimiser.step()


def fit_cnn(module: nn.Module, inputs, targets, steps: int):
    """The residual CNN (or PainterInputCNN) on crops of `inputs` (rgb, mask[, painted]); fp16 weights after."""
    windows = crop_windows(inputs, targets, np.random.default_rng(0))
    torch.manual_seed(0)

    def loss():
        batch = next(windows)
        x = torch.stack([inputs[i][:, t:t + CROP, l:l + CROP] for i, t, l in batch])
        y = torch.stack([targets[i][:, t:t + CROP, l:l + CROP] for i, t, l in batch])
        out = module(x) if isinstance(module, PainterInputCNN) else module(x[:, :3], x[:, 3:4])
        return ((out - y) ** 2).mean()

    optimise(list(module.parameters()), loss, steps, 3e-3)
    module = module.half().float().eval().requires_grad_(False)
    if isinstance(module, PainterInputCNN):
        return lambda x: module(x)
    return lambda x: module(x[:, :3], x[:, 3:4])


def tuned_parameters(painter, variant: str) -> list[tuple[str, torch.Tensor]]:
    return [(name, value) for name, value in painter.conditioning.named_parameters()
            if variant == "conditioning" or not name.startswith("stem")]


def fit_conditioning(shipped, variant: str, inputs, targets, steps: int):
    """GaussPainter with its conditioning layers (all, or all but the stem) fine-tuned; int8 weights after."""
    painter = copy.deepcopy(shipped).requires_grad_(False)
    tuned = [value for _, value in tuned_parameters(painter, variant)]
    for value in tuned:
        value.requires_grad_(True)
    with torch.no_grad():  # the frozen encoder and denoiser, once per frame
        frozen = []
        for x in inputs:
            latent, skips = painter.encode(x[None, :3])
            frozen.append((painter.denoise(latent, x[None, 3:4])[0], [s[0] for s in skips]))
    windows = crop_windows(inputs, targets, np.random.default_rng(0))
    torch.manual_seed(0)

    def loss():
        batch = next(windows)
        latents = torch.stack([frozen[i][0][:, t // 8:(t + CROP) // 8, l // 8:(l + CROP) // 8] for i, t, l in batch])
        skips = [torch.stack([frozen[i][1][k][:, t >> k:(t + CROP) >> k, l >> k:(l + CROP) >> k]
                              for i, t, l in batch]) for k in range(3)]
        x = torch.stack([inputs[i][:, t:t + CROP, l:l + CROP] for i, t, l in batch])
        y = torch.stack([targets[i][:, t:t + CROP, l:l + CROP] for i, t, l in batch])
        _, features = painter.decode(latents, skips, x[:, 3:4], x[:, :3], return_features=True)
        return ((x[:, :3] + painter.conditioning.head(features) - y) ** 2).mean()

    optimise(tuned, loss, steps, 1e-3)
    named = dict(tuned_parameters(painter, variant))
    arrays = {name: value.detach().numpy() for name, value in named.items()}
    # what an int8 section would hold (the codec knows one kind; the tensors are what matters here)
    stored = Restoration.from_arrays(fit.KIND, {}, arrays, 1.0, dtype="int8").arrays()
    with torch.no_grad():
        for name, value in named.items():
            value.copy_(torch.from_numpy(stored[name]))
    painter.eval().requires_grad_(False)
    return lambda x: restore_batch(x[:, :3], x[:, 3:4], painter, 1.0)


def reserve_for(variant: str, shipped) -> int:
    """Bytes the variant takes in the file: the default's measured reserve, or values plus a header entry."""
    if variant == "cnn":
        return section_reserve()
    if variant == "painter-input":
        return section_reserve() + 2 * (7 - 4) * 8 * 9  # conv1's extra inputs in fp16
    names = [[name, list(value.shape)] for name, value in tuned_parameters(shipped, variant)]
    entry = {"kind": variant, "config": {"painter": "0123456789abcdef"}, "dtype": "int8", "strength": 0.9,
             "tensors": names, "scales": [0.00123] * len(names),
             "validated": {"gain_db": -1.234, "raw_psnr": 59.123, "restored_psnr": 59.123, "views": 99,
                           "worst_view_gain_db": -10.123, "worst_view": 99, "fit_steps": STEPS,
                           "equal_bytes_gain_db": -1.234}}
    values = sum(int(np.prod(shape)) for _, shape in names)
    return values + len(json.dumps(entry, separators=(",", ":"))) + SECTION_MARGIN


def with_painted(frames: list[torch.Tensor], shipped) -> list[torch.Tensor]:
    with torch.inference_mode():
        return [torch.cat([x, restore_batch(x[None, :3], x[None, 3:4], shipped, 1.0)[0]]) for x in frames]


def mean_psnr(restorer, strength: float, inputs, targets) -> float:
    with torch.inference_mode():
        frames = [x[:3] if strength == 0 else (x[:3] + strength * (restorer(x[None])[0] - x[:3])).clamp(0, 1)
                  for x in inputs]
    return float(np.mean([fit.frame_psnr(frame, y) for frame, y in zip(frames, targets)]))


def best_strength(restorer, inputs, targets) -> float:
    scores = [mean_psnr(restorer, s, inputs, targets) for s in fit.STRENGTHS]
    return fit.STRENGTHS[int(np.argmax(scores))]


def measure(path: Path, ratio: float, variants: list[str], shipped, steps: int) -> list[dict]:
    scene = read_scene(path)
    cameras = scoring_cameras(scene)
    settings = CompressSettings()
    scores = significance(scene, cameras, settings.variant)
    target = Target("ratio", ratio)
    budget = target.size_in_bytes(len(scene))
    base = compress(scene, target, cameras, settings, None, scores)
    views = fit.jittered_views(scene, TEST_VIEWS, TEST_SEED, distance_range=(0.4, 1.0))
    backgrounds = fit.backgrounds_for(len(views), TEST_SEED)
    test_targets = fit.render_targets(scene, views, backgrounds)
    raw_base = mean_psnr(None, 0, fit.render_inputs(base.scene, views, backgrounds), test_targets)
    rows = []
    for variant in variants:
        start = time.perf_counter()
        reserve = reserve_for(variant, shipped)
        smaller = compress(scene, Target("size", budget - reserve), cameras, base.scene_settings or settings, None,
                           scores)
        fit_views, validation_views = restoration_views(scene, cameras, 0, view_scale(len(scene), len(smaller.scene)))
        pairs = fit.render_pairs(scene, smaller.scene, fit_views, 0)
        validation = fit.render_pairs(scene, smaller.scene, validation_views, 1)
        test_inputs = fit.render_inputs(smaller.scene, views, backgrounds)
        if variant == "painter-input":
            fit_inputs, validation.inputs, test_inputs = (with_painted(frames, shipped) for frames in
                                                          (pairs.inputs, validation.inputs, test_inputs))
            restorer = fit_cnn(PainterInputCNN(), fit_inputs, pairs.targets, steps)
        elif variant == "cnn":
            restorer = fit_cnn(fit.ResidualCNN(), pairs.inputs, pairs.targets, steps)
        else:
            restorer = fit_conditioning(shipped, variant, pairs.inputs, pairs.targets, steps)
        strength = best_strength(restorer, validation.inputs, validation.targets)
        raw = mean_psnr(None, 0, test_inputs, test_targets)
        restored = mean_psnr(restorer, strength, test_inputs, test_targets)
        rows.append({"scene": path.name, "ratio": ratio, "variant": variant, "reserve": reserve, "budget": budget,
                     "base_gaussians": len(base.scene), "smaller_gaussians": len(smaller.scene),
                     "raw_base_psnr": raw_base, "raw_smaller_psnr": raw, "restored_psnr": restored,
                     "strength": strength, "gain_db": round(restored - raw_base, 3),
                     "own_gain_db": round(restored - raw, 3), "steps": steps,
                     "seconds": round(time.perf_counter() - start, 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="JSON-lines rows (appended)")
    parser.add_argument("--ratio", type=float, default=300.0)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--scenes", nargs="*", help="fragments of the held-out scenes' names (default: all)")
    parser.add_argument("--steps", type=int, default=STEPS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    shipped = load_painter(device="cpu")
    for path in HELD_OUT:
        if args.scenes and not any(fragment in path.name for fragment in args.scenes):
            continue
        for row in measure(path, args.ratio, args.variants, shipped, args.steps):
            print(json.dumps(row), flush=True)
            with args.out.open("a") as handle:
                handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
