"""Training GaussPainter (and the pixel baseline) on pairs from make_pairs(), with accelerate.

GaussPainter trains in two stages:
  1. "vae": AutoencoderTiny alone, reconstructing target and input renders (L1 + SSIM).
  2. "painter": the encoder is frozen (it also defines the latent targets); the UNet, the skip paths and the
     decoder learn to map (raw render, mask) to the full render: L1 + SSIM on pixels plus latent supervision
     |denoised latent - encoder(target)|.
The baseline trains in one stage ("pixel") with the same pixel losses.

Runs unchanged on a CPU (`python -m exgs_core.painter train ...`) or as N processes, one per GPU
(`accelerate launch --multi_gpu --num_processes N -m exgs_core.painter train ...`; on a machine without CUDA
the same line runs N CPU processes over gloo). `batch_size` is the global batch: step s draws the same
batch_size samples whatever the process count (from seed, stage and step alone) and process r of N takes
samples [r B/N, (r + 1) B/N); DDP averages the gradients, so N processes compute the step one process would,
up to float rounding. Only process 0 writes (checkpoints, logs, weights); at every checkpoint the processes
compare digests of their weights and stop if they differ.

Resumable: <out>/checkpoint holds the model (safetensors), the optimiser state and the step; a run restarted
with the same command continues from it, with any number of processes (nothing in it depends on the count).
The loss log is <out>/log.jsonl, held-out evaluations go to <out>/eval.jsonl, final weights to <out>/weights.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import gather_object

from exgs_core.errors import ExgsError
from exgs_core.fileio import atomic_write
from exgs_core.metrics import psnr, ssim
from exgs_core.painter.baseline import PixelUNet
from exgs_core.painter.data import load_samples
from exgs_core.painter.model import GaussPainter, PainterConfig
from exgs_core.painter.restore import restore_batch
from exgs_core.painter.strength import strength_for_ratio
from exgs_core.painter.weights import Restorer, load_painter_folder, save_painter
from exgs_core.progress import progress

CHECKPOINT_DIR = "checkpoint"
WEIGHTS_DIR = "weights"
# Settings a checkpoint must be resumed with: they define the model and the sample stream (batch_size is the
# global batch, so a change of process count is not a change here).
RESUME_SETTINGS = ("model", "painter_config", "baseline_channels", "batch_size", "seed")


class SessionEnd(Exception):
    """This session's step allowance (TrainSettings.session_steps) is used up; the checkpoint is saved."""


@dataclass
class TrainSettings:
    model: str = "painter"  # "painter" or "baseline"
    painter_config: dict = field(default_factory=dict)  # PainterConfig overrides
    baseline_channels: tuple[int, ...] = (16, 32, 64, 128, 128)
    vae_steps: int = 1500
    steps: int = 6000  # stage-2 steps (painter) or all steps (baseline)
    cpu_seconds: float | None = None  # total process CPU-time budget; the VAE stage gets vae_fraction of it
    vae_fraction: float = 0.2
    batch_size: int = 8
    crop: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    min_lr_fraction: float = 0.05
    hard_fraction: float = 0.5  # share of training draws weighted by the pair's raw error
    min_ratio: float = 0.0  # train only on pairs compressed at least this much (strength_for_ratio skips lighter ones)
    latent_weight: float = 0.1
    ssim_weight: float = 0.2
    train_encoder: bool = False  # stage 2: fine-tune the encoder too (the latent targets stay frozen)
    checkpoint_every: int = 100  # steps
    checkpoint_minutes: float = 5.0
    eval_data: str | None = None
    eval_every: int = 500
    eval_samples: int = 64
    session_steps: int | None = None  # stop this session after so many steps (resume later with the same command)
    session_cpu_seconds: float | None = None  # or after so much CPU time (time-slicing runs on a shared machine)
    seed: int = 0

    def stages(self) -> list[str]:
        return ["vae", "painter"] if self.model == "painter" else ["pixel"]


# --- data ------------------------------------------------------------------------------------------------


class PairBank:
    """All training pairs in memory as uint8, and seeded random crops/flips/rotations from them."""

    def __init__(self, data_dirs: str | os.PathLike | Sequence[str | os.PathLike], split: str = "train",
                 min_ratio: float = 0.0):
        data_dirs = [data_dirs] if isinstance(data_dirs, (str, os.PathLike)) else list(data_dirs)
        samples = [sample for folder in data_dirs for sample in load_samples(folder, split)
                   if float(sample[0].get("ratio") or 0.0) >= min_ratio]
        if not samples:
            at_least = f" compressed at least {min_ratio:g}x" if min_ratio > 0 else ""
            raise ValueError(f"{', '.join(map(str, data_dirs))}: no {split} samples{at_least} "
                             "(run the pairs command first)")
        self.records = [s[0] for s in samples]
        self.inputs = [s[1] for s in samples]
        self.targets = [s[2] for s in samples]
        # raw error per sample: "hard" draws favour pairs with something to restore over near-identical ones
        rmse = np.array([np.sqrt(np.mean((s[1][..., :3].astype(np.float32) - s[2]) ** 2)) for s in samples])
        self.hard_weights = (rmse + 1e-3) / (rmse + 1e-3).sum()

    def __len__(self) -> int:
        return len(self.records)

    def batch(self, rng: np.random.Generator, size: int, crop: int, hard_fraction: float = 0.0, multiple: int = 1,
              part: range | None = None) -> tuple[torch.Tensor, ...]:
        """(rgb, mask, target) float tensors (B, C, c, c); a `hard_fraction` of draws weighted by raw error.

        c is `crop`, or less for smaller pairs, rounded down to a multiple of `multiple` (the model's grid).
        `part` makes only those samples of the `size`-sample batch (a process's share of the global batch):
        `rng` draws every sample's pair and its own seed for its crop, rotation and flip, so sample i is the
        same whichever part it is made in.
        """
        raws, targets = [], []
        uniform = rng.integers(0, len(self), size)
        hard = rng.choice(len(self), size=size, p=self.hard_weights)
        indices = np.where(rng.uniform(size=size) < hard_fraction, hard, uniform)
        sample_seeds = rng.integers(0, 2**63 - 1, size)
        for i in part if part is not None else range(size):
            index, sample_rng = indices[i], np.random.default_rng(int(sample_seeds[i]))
            raw, target = self.inputs[index], self.targets[index]
            h, w = raw.shape[:2]
            c = min(crop, h, w) // multiple * multiple
            if c == 0:
                raise ValueError(f"{self.records[index]['input']}: {w}x{h} pairs are smaller than the model's "
                                 f"{multiple} px grid; make pairs with a larger --size")
            y, x = int(sample_rng.integers(0, h - c + 1)), int(sample_rng.integers(0, w - c + 1))
            pair = np.concatenate([raw[y:y + c, x:x + c], target[y:y + c, x:x + c]], axis=2)
            pair = np.rot90(pair, int(sample_rng.integers(0, 4)))
            if sample_rng.uniform() < 0.5:
                pair = pair[:, ::-1]
            raws.append(pair[..., :4])
            targets.append(pair[..., 4:])
        raw = torch.from_numpy(np.stack(raws)).permute(0, 3, 1, 2).float() / 255.0
        target = torch.from_numpy(np.stack(targets)).permute(0, 3, 1, 2).float() / 255.0
        return raw[:, :3], 1.0 - raw[:, 3:], target


# --- model construction and checkpoints ------------------------------------------------------------------


def build_model(settings: TrainSettings) -> Restorer:
    torch.manual_seed(settings.seed)
    if settings.model == "painter":
        return GaussPainter.from_config(PainterConfig(**settings.painter_config))
    if settings.model == "baseline":
        return PixelUNet(channels=tuple(settings.baseline_channels))
    raise ValueError(f"unknown model {settings.model!r}; choose painter or baseline")


def trainable_parameters(model: Restorer, stage: str, settings: TrainSettings) -> list[torch.nn.Parameter]:
    """The parameters a stage optimises (and requires_grad set accordingly)."""
    model.requires_grad_(False)
    if stage == "vae":
        parts = [model.vae]
    elif stage == "painter":
        parts = [model.unet, model.conditioning, model.vae.decoder] + ([model.vae.encoder] if settings.train_encoder else [])
    else:
        parts = [model]
    for part in parts:
        part.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    if stage == "painter" and model.conditioning.head is not None and model.conditioning.config.output == "residual":
        # The decoder's RGB convolution is outside the residual output's graph: it never gets a gradient.
        # Frozen (but kept in the optimiser's list, as checkpoints have it), so that DDP expects none.
        model.vae.decoder.layers[-1].requires_grad_(False)
    return params


@dataclass
class Progress:
    stage: str
    step: int = 0  # steps done in this stage
    stage_index: int = 0
    cpu_seconds: float = 0.0  # training CPU time so far (all stages, evaluation excluded)
    stage_cpu_seconds: float = 0.0


def save_checkpoint(out: Path, model: Restorer, optimizer: torch.optim.Optimizer, state: Progress,
                    settings: TrainSettings, facts: dict | None = None) -> None:
    """<out>/checkpoint: model/ (safetensors folder), optimizer.pt (state dict), state.json (progress, settings
    and `facts`: the process count and each process's weights digest). Replaced atomically."""
    def write(folder: Path) -> None:
        save_painter(model, folder / "model")
        torch.save(optimizer.state_dict(), folder / "optimizer.pt")
        with atomic_write(folder / "state.json", "w") as handle:
            json.dump({"progress": asdict(state), "settings": asdict(settings), **(facts or {})}, handle, indent=1)

    replace_folder(out / CHECKPOINT_DIR, write)


def replace_folder(final: Path, write: Callable[[Path], None]) -> None:
    """Write a folder beside `final` (its files through atomic_write), then rename it over `final`: a reader
    sees the old folder or the new one, never a mix (after a crash between the renames, `.NAME.old`)."""
    temp = final.parent / f".{final.name}.tmp"
    if temp.exists():
        _remove_tree(temp)
    write(temp)
    old = final.parent / f".{final.name}.old"
    if final.exists():
        if old.exists():
            _remove_tree(old)
        final.rename(old)
    temp.rename(final)
    if old.exists():
        _remove_tree(old)


def resume_conflict(stored: dict, settings: TrainSettings) -> str | None:
    """Why a checkpoint trained with `stored` settings cannot be resumed with `settings`, or None."""
    def normal(name: str, value) -> str:
        if name == "painter_config" and isinstance(value, dict):
            try:
                value = asdict(PainterConfig(**value))  # {} and the defaults spelt out are the same model
            except TypeError:
                pass
        return json.dumps(value, sort_keys=True)

    for name in RESUME_SETTINGS:
        if name not in stored or (name == "painter_config" and settings.model != "painter") or (
                name == "baseline_channels" and settings.model != "baseline"):
            continue
        old, new = stored[name], asdict(settings)[name]
        if normal(name, old) != normal(name, new):
            why = " (--batch-size is the global batch, whatever the process count)" if name == "batch_size" else ""
            return (f"the checkpoint was trained with {name} {json.dumps(old)} and this run asks for "
                    f"{json.dumps(new)}{why}; resume with the checkpoint's value or train into another --out")
    return None


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a model's parameters and buffers (names, dtypes, shapes and bytes, in state_dict order)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        value = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name} {value.dtype} {tuple(value.shape)}\n".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _remove_tree(path: Path) -> None:
    for child in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()
    path.rmdir()


def load_checkpoint(out: Path, settings: TrainSettings | None = None) -> tuple[Restorer, dict, Progress] | None:
    """(model, optimizer state dict, progress) from <out>/checkpoint, or None when there is none.

    With `settings`, an ExgsError when the checkpoint was trained with other RESUME_SETTINGS.
    """
    folder = out / CHECKPOINT_DIR
    if not (folder / "state.json").is_file():
        old = out / f".{CHECKPOINT_DIR}.old"  # interrupted between the two renames
        if not (old / "state.json").is_file():
            return None
        folder = old
    state = json.loads((folder / "state.json").read_text())
    if settings is not None:
        problem = resume_conflict(state.get("settings") or {}, settings)
        if problem:
            raise ExgsError(f"{folder}: {problem}")
    model = load_painter_folder(folder / "model")
    optimizer_state = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
    return model, optimizer_state, Progress(**state["progress"])


# --- losses ----------------------------------------------------------------------------------------------


def pixel_loss(out: torch.Tensor, target: torch.Tensor, settings: TrainSettings) -> tuple[torch.Tensor, dict]:
    out, target = out.float(), target.float()  # losses in fp32 also under fp16 autocast
    l1 = F.l1_loss(out, target)
    structural = 1.0 - ssim(out.clamp(0, 1), target)
    return l1 + settings.ssim_weight * structural, {"l1": float(l1.detach()), "ssim": float(1.0 - structural.detach())}


def stage_loss(model, core: Restorer, stage: str, batch: tuple[torch.Tensor, ...], settings: TrainSettings,
               shard: tuple[int, int] | None = None) -> tuple[torch.Tensor, dict]:
    """Loss of one batch; `model` is what accelerate prepared (called for gradients), `core` the plain module.

    `shard` = (index of the first sample in the global batch, global batch size) when `batch` is one process's
    share of it; every sample is treated as in the whole batch, so the mean of the shards' losses (and of
    their gradients) is the whole batch's.
    """
    rgb, mask, target = batch
    if stage == "vae":  # the first half of the global batch targets, the rest raw renders: the encoder sees both
        first, total = shard or (0, rgb.shape[0])
        is_target = (torch.arange(rgb.shape[0]) + first < max(1, total // 2)).view(-1, 1, 1, 1)
        images = torch.where(is_target.to(rgb.device), target, rgb)
        return pixel_loss(model(images, reconstruct=True), images, settings)
    if stage == "pixel":
        return pixel_loss(model(rgb, mask), target, settings)
    out, latent = model(rgb, mask, return_latent=True)
    with torch.no_grad():
        target_latent, _ = core.encode(target)
    latent_l1 = F.l1_loss(latent.float(), target_latent.float())
    loss, parts = pixel_loss(out, target, settings)
    return loss + settings.latent_weight * latent_l1, {**parts, "latent_l1": float(latent_l1.detach())}


def learning_rate(settings: TrainSettings, step: int, fraction_done: float) -> float:
    """Linear warm-up, then cosine decay to min_lr_fraction over the stage (by steps or CPU budget)."""
    warm = min(1.0, (step + 1) / max(1, settings.warmup_steps))
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, fraction_done)))
    return settings.lr * warm * (settings.min_lr_fraction + (1.0 - settings.min_lr_fraction) * cosine)


# --- the loop --------------------------------------------------------------------------------------------


def make_accelerator() -> Accelerator:
    """This process's Accelerator. Processes started by torchrun (`accelerate launch --multi_gpu`) on a machine
    without CUDA train on the CPU over gloo; accelerate would otherwise make each of them a run of its own."""
    warning = single_process_launch_warning(os.environ)
    if warning:
        warnings.warn(warning, stacklevel=2)
    if int(os.environ.get("WORLD_SIZE") or 1) > 1 and not torch.cuda.is_available():
        return Accelerator(cpu=True)
    return Accelerator()


def single_process_launch_warning(environ: Mapping[str, str]) -> str | None:
    """A warning when `accelerate launch --cpu --num_processes N` (N > 1) started this one process alone:
    accelerate starts several CPU processes only through mpirun (--mpirun_hostfile), else it runs one."""
    cpu = environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    ranks = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
    if not (cpu and "MASTER_PORT" in environ and not any(environ.get(name) for name in ranks)):
        return None
    return ("accelerate launch --cpu started a single training process (it starts several CPU processes only "
            "through mpirun); the result is the same, --batch-size being the global batch. For N CPU processes "
            "use accelerate launch --multi_gpu --num_processes N on a machine without CUDA")


def train(data_dir: str | os.PathLike | Sequence[str | os.PathLike], out_dir: str | os.PathLike,
          settings: TrainSettings | None = None, accelerator: Accelerator | None = None) -> Path:
    """Train on the train split of one or more pairs folders; returns <out_dir>/weights (resumable).

    With several processes, `settings.batch_size` is the global batch (a multiple of the process count) and
    only process 0 writes into `out_dir`.
    """
    settings = settings or TrainSettings()
    accelerator = accelerator or make_accelerator()
    out = Path(out_dir)
    processes = accelerator.num_processes
    if settings.batch_size % processes:
        raise ExgsError(f"--batch-size {settings.batch_size} is not a multiple of the {processes} training "
                        f"processes: it is the global batch, and each process takes an equal share of it")
    bank = PairBank(data_dir, "train", settings.min_ratio)
    eval_set = _eval_subset(settings) if accelerator.is_main_process else None
    resumed = load_checkpoint(out, settings)
    reached: list[Progress] = []  # the stage being trained (for the message when a process is lost)
    try:
        return _train_loaded(resumed, bank, eval_set, settings, accelerator, out, reached)
    except RuntimeError as error:
        if processes == 1 or not _lost_contact(error):
            raise
        where = f"at {reached[-1].stage} step {reached[-1].step}" if reached else "before training"
        raise ExgsError(f"training process {accelerator.process_index} of {processes} lost contact with the "
                        f"others {where} (another process stopped: its own error or the launcher's report says "
                        f"why); no weights written, {_resume_point(out)}") from None


def _train_loaded(resumed: tuple | None, bank: PairBank, eval_set: list | None, settings: TrainSettings,
                  accelerator: Accelerator, out: Path, reached: list[Progress]) -> Path:
    model, optimizer_state, state = resumed if resumed else (build_model(settings), None, Progress(settings.stages()[0]))
    # the processes must start from the same data and step (the model itself DDP copies from process 0)
    _agree(accelerator, "the training pairs or the checkpoint to resume", hashlib.sha256(json.dumps(
        [[r.get("id", r.get("input")) for r in bank.records], asdict(state), asdict(settings)],
        sort_keys=True, default=str).encode()).hexdigest(), "nothing was trained")
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    stages = settings.stages()
    session = {"steps_left": settings.session_steps, "cpu_left": settings.session_cpu_seconds}
    for stage_index in range(state.stage_index, len(stages)):
        if stage_index != state.stage_index:
            state = Progress(stages[stage_index], 0, stage_index, state.cpu_seconds, 0.0)
            optimizer_state = None
        reached.append(state)
        model = _run_stage(model, optimizer_state, state, bank, eval_set, settings, accelerator, out, session)
        optimizer_state = None
    weights = out / WEIGHTS_DIR
    if accelerator.is_main_process:
        replace_folder(weights, lambda folder: save_painter(accelerator.unwrap_model(model), folder))
        if eval_set is not None:
            _log(out / "eval.jsonl", {"final": True, **_evaluate_subset(accelerator.unwrap_model(model), eval_set)})
    accelerator.wait_for_everyone()
    return weights


def _stage_budget(settings: TrainSettings, stage: str) -> tuple[int, float | None]:
    """(max steps, CPU-second budget or None) for a stage."""
    steps = settings.vae_steps if stage == "vae" else settings.steps
    if settings.cpu_seconds is None:
        return steps, None
    share = settings.vae_fraction if stage == "vae" else (1.0 - settings.vae_fraction)
    return steps, settings.cpu_seconds * (share if settings.model == "painter" else 1.0)


def _run_stage(model: Restorer, optimizer_state: dict | None, state: Progress, bank: PairBank,
               eval_set: list | None, settings: TrainSettings, accelerator: Accelerator, out: Path,
               session: dict) -> Restorer:
    stage = state.stage
    max_steps, cpu_budget = _stage_budget(settings, stage)
    model = accelerator.unwrap_model(model)
    params = trainable_parameters(model, stage, settings)
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    model.train()
    model, optimizer = accelerator.prepare(model, optimizer)
    model_grid = accelerator.unwrap_model(model).pad_multiple
    share = settings.batch_size // accelerator.num_processes
    part = range(accelerator.process_index * share, (accelerator.process_index + 1) * share)
    last_save = time.monotonic()
    cpu_mark = time.process_time()
    bar = progress(range(state.step, max_steps), desc=f"{settings.model}:{stage}", unit="step", total=max_steps)
    for step in bar:
        if cpu_budget is not None and state.stage_cpu_seconds >= cpu_budget:
            break
        if _session_over(session):
            _checkpoint(accelerator, model, optimizer, state, settings, out)
            raise SessionEnd(f"{out}: session allowance used up at {stage} step {step}; run again to resume")
        if session["steps_left"] is not None:
            session["steps_left"] -= 1
        fraction = max(step / max_steps, state.stage_cpu_seconds / cpu_budget if cpu_budget else 0.0)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(settings, step, fraction)
        # the global batch of this step (seed, stage and step: not the process count); this process's share
        rng = np.random.default_rng([settings.seed, state.stage_index, step])
        batch = [t.to(accelerator.device) for t in bank.batch(rng, settings.batch_size, settings.crop, settings.hard_fraction,
                                                                  model_grid, part)]
        wall = time.perf_counter()
        with accelerator.autocast():
            loss, parts = stage_loss(model, accelerator.unwrap_model(model), stage, batch, settings,
                                     shard=(part.start, settings.batch_size))
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        optimizer.step()
        now = time.process_time()
        loss_value, parts, cpu_step, time_due = _measured(
            accelerator, float(loss.detach()), parts, now - cpu_mark,
            time.monotonic() - last_save > 60 * settings.checkpoint_minutes)
        state.cpu_seconds += cpu_step
        state.stage_cpu_seconds += cpu_step
        if session["cpu_left"] is not None:
            session["cpu_left"] -= cpu_step
        cpu_mark = now
        state.step = step + 1
        if accelerator.is_main_process:
            _log(out / "log.jsonl", {"stage": stage, "step": state.step, "loss": round(loss_value, 5),
                                     **{k: round(v, 5) for k, v in parts.items()}, "lr": optimizer.param_groups[0]["lr"],
                                     "step_seconds": round(time.perf_counter() - wall, 3),
                                     "cpu_seconds": round(state.cpu_seconds, 1)})
        due = state.step % settings.checkpoint_every == 0 or time_due
        if due:
            _checkpoint(accelerator, model, optimizer, state, settings, out)
            last_save = time.monotonic()
        if eval_set is not None and stage != "vae" and state.step % settings.eval_every == 0:
            _log(out / "eval.jsonl", {"stage": stage, "step": state.step, "cpu_seconds": round(state.cpu_seconds, 1),
                                      **_evaluate_subset(accelerator.unwrap_model(model), eval_set)})
            model.train()
            cpu_mark = time.process_time()  # evaluation does not count against the training budget
    _checkpoint(accelerator, model, optimizer, state, settings, out)
    return accelerator.unwrap_model(model)


def _lost_contact(error: RuntimeError) -> bool:
    """Whether a collective operation failed because another process is gone (gloo and NCCL say so in text)."""
    text = str(error)
    return isinstance(error, torch.distributed.DistError) or any(
        word in text for word in ("gloo", "NCCL", "Connection reset", "Connection closed"))


def _resume_point(out: Path) -> str:
    """Where a rerun of the same command continues, from <out>/checkpoint/state.json."""
    try:
        progress = json.loads((out / CHECKPOINT_DIR / "state.json").read_text())["progress"]
    except (OSError, ValueError, KeyError):
        return "no checkpoint yet: a rerun starts from the beginning"
    return f"a rerun resumes from {out / CHECKPOINT_DIR} ({progress['stage']} step {progress['step']})"


def _session_over(session: dict) -> bool:
    return any(session[key] is not None and session[key] <= 0 for key in ("steps_left", "cpu_left"))


def _measured(accelerator: Accelerator, loss: float, parts: dict, cpu_seconds: float, time_due: bool
              ) -> tuple[float, dict, float, bool]:
    """What the processes measured in a step, agreed on by all of them (every decision taken on it must be the
    same in each process, or they would wait for each other forever): the loss and its parts averaged over
    the processes (the global batch's), the CPU seconds of the busiest process and process 0's checkpoint clock."""
    values = torch.tensor([loss, *parts.values(), cpu_seconds, float(time_due)], dtype=torch.float64)
    if accelerator.num_processes > 1:
        values = accelerator.gather(values.to(accelerator.device)).cpu()
    rows = values.view(accelerator.num_processes, -1)
    means = rows[:, :-2].mean(dim=0).tolist()
    return means[0], dict(zip(parts, means[1:])), float(rows[:, -2].max()), bool(rows[0, -1])


def disagreement(what: str, values: Sequence[str], consequence: str) -> str | None:
    """The error when the processes' values (one per process, in process order) differ, else None."""
    if len(set(values)) <= 1:
        return None
    differ = [str(rank) for rank, value in enumerate(values) if value != values[0]]
    return (f"the {len(values)} training processes disagree on {what} (process {', '.join(differ)} differs from "
            f"process 0); {consequence}")


def _agree(accelerator: Accelerator, what: str, value: str, consequence: str) -> list[str]:
    """Every process's `value` (process order); an ExgsError, raised in every process, when they differ."""
    values = list(gather_object([value])) if accelerator.num_processes > 1 else [value]
    problem = disagreement(what, values, consequence)
    if problem:
        raise ExgsError(problem)
    return values


def _checkpoint(accelerator: Accelerator, model, optimizer, state: Progress, settings: TrainSettings, out: Path) -> None:
    """Process 0 saves the checkpoint once every process has shown it holds the same weights."""
    digests = _agree(accelerator, f"the weights after {state.stage} step {state.step}",
                     weights_digest(accelerator.unwrap_model(model)),
                     "the checkpoint was not updated and no weights were written")
    if accelerator.is_main_process:
        save_checkpoint(out, accelerator.unwrap_model(model), optimizer, state, settings,
                        {"processes": accelerator.num_processes, "weights_sha256": digests})
    accelerator.wait_for_everyone()


def _log(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


# --- evaluation ------------------------------------------------------------------------------------------


def as_8bit(image: torch.Tensor) -> torch.Tensor:
    """Restored frames are scored as the 8-bit PNGs `exgs restore` writes (the raw inputs already are 8-bit)."""
    return torch.round(image * 255.0) / 255.0


def _eval_subset(settings: TrainSettings) -> list | None:
    if not settings.eval_data:
        return None
    samples = load_samples(settings.eval_data, "eval")
    rng = np.random.default_rng(12345)
    if len(samples) > settings.eval_samples:
        picked = sorted(rng.choice(len(samples), settings.eval_samples, replace=False).tolist())
        samples = [samples[i] for i in picked]
    return samples


def _evaluate_subset(model: Restorer, samples: list) -> dict:
    was_training = model.training
    model.eval()
    raw_psnr, out_psnr, raw_ssim, out_ssim = [], [], [], []
    for record, raw, target in samples:
        rgb = torch.from_numpy(raw[..., :3].copy()).permute(2, 0, 1)[None].float() / 255.0
        mask = 1.0 - torch.from_numpy(raw[..., 3:].copy()).permute(2, 0, 1)[None].float() / 255.0
        tgt = torch.from_numpy(target.copy()).permute(2, 0, 1)[None].float() / 255.0
        out = as_8bit(restore_batch(rgb, mask, model))
        raw_psnr.append(float(psnr(rgb, tgt)))
        out_psnr.append(float(psnr(out, tgt)))
        raw_ssim.append(float(ssim(rgb, tgt)))
        out_ssim.append(float(ssim(out, tgt)))
    model.train(was_training)
    return {"raw_psnr": round(float(np.mean(raw_psnr)), 3), "psnr": round(float(np.mean(out_psnr)), 3),
            "raw_ssim": round(float(np.mean(raw_ssim)), 4), "ssim": round(float(np.mean(out_ssim)), 4),
            "samples": len(samples)}


def evaluate(model: Restorer, data_dir: str | os.PathLike, size: int | None = None,
             scenes: Sequence[str] | None = None, split: str = "eval", strength_by_ratio: bool = False) -> dict:
    """PSNR/SSIM of raw and restored frames on a pairs folder's `split`, per scene and per target ratio.

    `size` resizes frames (bilinear, for speed checks only); None keeps the stored size. With
    `strength_by_ratio` each frame gets restore's strength_for_ratio() of its scene's compression ratio.
    """
    model.eval()
    rows = []
    for record, raw, target in progress(load_samples(data_dir, split, scenes), desc="eval", unit="frame"):
        rgb = torch.from_numpy(raw[..., :3].copy()).permute(2, 0, 1)[None].float() / 255.0
        mask = 1.0 - torch.from_numpy(raw[..., 3:].copy()).permute(2, 0, 1)[None].float() / 255.0
        tgt = torch.from_numpy(target.copy()).permute(2, 0, 1)[None].float() / 255.0
        if size:
            rgb, mask, tgt = (F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
                              for t in (rgb, mask, tgt))
        start = time.perf_counter()
        strength = strength_for_ratio(record.get("ratio")) if strength_by_ratio else 1.0
        out = as_8bit(restore_batch(rgb, mask, model, strength))
        seconds = time.perf_counter() - start
        rows.append({"scene": record["scene"], "ratio": record["target_ratio"], "seconds": seconds,
                     "raw_psnr": float(psnr(rgb, tgt)), "psnr": float(psnr(out, tgt)),
                     "raw_ssim": float(ssim(rgb, tgt)), "ssim": float(ssim(out, tgt))})
    return summarise(rows)


def summarise(rows: list[dict]) -> dict:
    """Means overall, per scene and per ratio of the rows evaluate() collects."""
    def mean(subset: list[dict]) -> dict:
        keys = ("raw_psnr", "psnr", "raw_ssim", "ssim", "seconds")
        return {k: round(float(np.mean([r[k] for r in subset])), 4) for k in keys} | {"frames": len(subset)}

    scenes, ratios = sorted({r["scene"] for r in rows}), sorted({r["ratio"] for r in rows})
    return {
        "overall": mean(rows),
        "per_scene": {s: mean([r for r in rows if r["scene"] == s]) for s in scenes},
        "per_ratio": {str(q): mean([r for r in rows if r["ratio"] == q]) for q in ratios},
        "per_scene_ratio": {f"{s} {q:g}x": mean(subset) for s in scenes for q in ratios
                            if (subset := [r for r in rows if r["scene"] == s and r["ratio"] == q])},
    }
