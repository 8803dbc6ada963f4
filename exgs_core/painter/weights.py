"""Save and load GaussPainter (and the pixel baseline) in diffusers' folder format, safetensors only.

Layout of a weights folder:

    model_index.json                    {"_class_name": "GaussPainter", "vae": [...], "unet": [...], ...}
    vae/config.json                     diffusers AutoencoderTiny config
    vae/diffusion_pytorch_model.safetensors
    unet/config.json                    diffusers UNet2DModel config
    unet/diffusion_pytorch_model.safetensors
    conditioning/config.json            skip convs and the fixed timestep (PainterConditioning)
    conditioning/diffusion_pytorch_model.safetensors

The baseline's folder has model_index.json with "_class_name": "PixelUNet" and one component, pixel_unet/.
Each component loads in diffusers too (AutoencoderTiny.from_pretrained(folder, subfolder="vae")).
Nothing here ever unpickles: weights come only from .safetensors files.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderTiny, UNet2DModel
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from exgs_core.errors import ExgsError
from exgs_core.fileio import atomic_write
from exgs_core.painter.baseline import PixelUNet
from exgs_core.painter.model import GaussPainter, PainterConditioning, check_components
from exgs_core.validate import JsonError, is_number, parse_json

INDEX_NAME = "model_index.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
CONFIG_NAME = "config.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
FORMAT_VERSION = 1
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "default_weights"

# class name in model_index.json -> its components: name -> (library, class)
LAYOUTS: dict[str, dict[str, tuple[str, type]]] = {
    "GaussPainter": {"vae": ("diffusers", AutoencoderTiny), "unet": ("diffusers", UNet2DModel),
                     "conditioning": ("exgs_core.painter.model", PainterConditioning)},
    "PixelUNet": {"pixel_unet": ("exgs_core.painter.baseline", PixelUNet)},
}

Restorer = GaussPainter | PixelUNet

# Bounds on config values, checked before anything is built: our models use widths <= 128, and a config
# asking for a million channels or 1024x upsampling could only exhaust memory.
MAX_CONFIG_INTEGER = 2048
CONFIG_INTEGER_LIMITS = {"upsampling_scaling_factor": 8, "layers_per_block": 16, "timestep": 100_000,
                         "num_train_timesteps": 100_000, "num_class_embeds": 100_000}
MAX_CONFIG_LIST = 16


class PainterWeightsError(ExgsError):
    """A weights folder (or hub id) cannot be used: names the file and what is wrong with it."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


# --- saving ----------------------------------------------------------------------------------------------


def save_painter(model: Restorer, folder: str | os.PathLike) -> Path:
    """Write `model` (GaussPainter or PixelUNet) as a diffusers-style folder of configs and safetensors."""
    folder = Path(folder)
    class_name = type(model).__name__
    components = _components_of(model)
    index = {"_class_name": class_name, "_exgs_format": FORMAT_VERSION}
    for name, (library, cls) in LAYOUTS[class_name].items():
        index[name] = [library, cls.__name__]
        _save_component(components[name], folder / name)
    with atomic_write(folder / INDEX_NAME, "w") as handle:
        json.dump(index, handle, indent=2, sort_keys=True)
    return folder


def _components_of(model: Restorer) -> dict[str, nn.Module]:
    if isinstance(model, GaussPainter):
        return {"vae": model.vae, "unet": model.unet, "conditioning": model.conditioning}
    if isinstance(model, PixelUNet):
        return {"pixel_unet": model}
    raise TypeError(f"cannot save a {type(model).__name__}; expected GaussPainter or PixelUNet")


def _save_component(module: nn.Module, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in dict(module.config).items() if k != "_use_default_values"}
    config["_class_name"] = type(module).__name__
    with atomic_write(folder / CONFIG_NAME, "w") as handle:
        json.dump(config, handle, indent=2, sort_keys=True, default=list)
    tensors = {key: value.detach().to("cpu", torch.float32).contiguous() for key, value in module.state_dict().items()}
    with atomic_write(folder / WEIGHTS_NAME) as handle:
        handle.write(save_safetensors(tensors, metadata={"format": "pt"}))


# --- loading ---------------------------------------------------------------------------------------------


def default_weights_path() -> Path:
    """The weights shipped with exgs (exgs_core/painter/default_weights)."""
    return DEFAULT_WEIGHTS


def default_weights_installed() -> bool:
    return (DEFAULT_WEIGHTS / INDEX_NAME).is_file()


def load_painter(weights: str | os.PathLike | None = None, device: str | torch.device | None = None) -> Restorer:
    """A GaussPainter (or PixelUNet) from a local weights folder, a hub id (only when online), or by default
    the weights shipped with exgs.

    On CUDA (the default when available) the model runs in fp16 with channels_last; on the CPU in fp32.
    The model is returned in eval mode with gradients off.
    """
    if weights is None and not default_weights_installed():
        raise PainterWeightsError(None, f"no default GaussPainter weights are installed (looked for {DEFAULT_WEIGHTS}); "
                                        "pass --weights with a weights folder (the one holding model_index.json, "
                                        "e.g. <run>/weights written by `exgs train-painter`)")
    folder = resolve_weights(DEFAULT_WEIGHTS if weights is None else weights)
    model = load_painter_folder(folder)
    return prepare_for_inference(model, device)


def prepare_for_inference(model: Restorer, device: str | torch.device | None = None) -> Restorer:
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(device).eval().requires_grad_(False)
    if device.type == "cuda":
        model = model.half().to(memory_format=torch.channels_last)
    return model


def resolve_weights(weights: str | os.PathLike) -> Path:
    """The local folder for `weights`: the folder itself, or a hub snapshot (only when online)."""
    path = Path(weights).expanduser()
    if path.exists():
        if not path.is_dir():
            raise PainterWeightsError(path, f"is a file; pass the weights folder that holds {INDEX_NAME}")
        return path
    text = os.fspath(weights)
    if not _looks_like_hub_id(text):
        raise PainterWeightsError(path, "no such weights folder")
    return _download(text)


def _looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~")) and "\\" not in text


def _download(repo_id: str) -> Path:
    how = "pass a local weights folder instead (e.g. --weights /path/to/painter_weights, the folder with model_index.json)"
    if _hub_offline():
        raise PainterWeightsError(None, f"{repo_id!r} is not a local folder and the Hugging Face hub is offline "
                                        f"(HF_HUB_OFFLINE); {how}")
    try:
        from huggingface_hub import snapshot_download
        local = snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors"])
    except Exception as error:  # network, auth, missing repo: all end the same way for the user
        raise PainterWeightsError(None, f"cannot fetch {repo_id!r} from the Hugging Face hub "
                                        f"({type(error).__name__}: {error}); {how}") from None
    return Path(local)


def _hub_offline() -> bool:
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DIFFUSERS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    return False


def load_painter_folder(folder: str | os.PathLike) -> Restorer:
    """Build the model named by model_index.json and load every component's safetensors (CPU, fp32)."""
    folder = Path(folder)
    index = _read_json(folder / INDEX_NAME)
    class_name = index.get("_class_name")
    if class_name not in LAYOUTS:
        raise PainterWeightsError(folder / INDEX_NAME, f"_class_name is {class_name!r}; expected one of "
                                                       f"{', '.join(LAYOUTS)}")
    components = {name: _load_component(folder / name, cls) for name, (_, cls) in LAYOUTS[class_name].items()}
    if class_name == "PixelUNet":
        return components["pixel_unet"]
    try:
        check_components(components["vae"], components["unet"], components["conditioning"])
    except ValueError as error:
        raise PainterWeightsError(folder, f"components do not fit together: {error}") from None
    return GaussPainter(components["vae"], components["unet"], components["conditioning"])


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise PainterWeightsError(path, "missing (a GaussPainter weights folder holds model_index.json, and "
                                        "config.json + diffusion_pytorch_model.safetensors per component)")
    try:
        value = parse_json(path.read_bytes())
    except JsonError as error:
        raise PainterWeightsError(path, f"is not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise PainterWeightsError(path, "must hold a JSON object")
    return value


def _check_config(path: Path, config: dict) -> None:
    """Refuse absurd sizes (whole numbers above the limits, long lists, non-finite numbers) before building."""
    for key, value in config.items():
        values = value if isinstance(value, list) else [value]
        if len(values) > MAX_CONFIG_LIST:
            raise PainterWeightsError(path, f"'{key}' lists {len(values)} values; at most {MAX_CONFIG_LIST} are allowed")
        most = CONFIG_INTEGER_LIMITS.get(key, MAX_CONFIG_INTEGER)
        for item in values:
            if isinstance(item, list) or isinstance(item, dict):
                raise PainterWeightsError(path, f"'{key}' must hold numbers, strings or a flat list of them")
            if is_number(item) and not (-most <= item <= most):
                raise PainterWeightsError(path, f"'{key}' is {item}; values above {most} are refused")


def _load_component(folder: Path, cls: type) -> nn.Module:
    config = _read_json(folder / CONFIG_NAME)
    if config.get("_class_name", cls.__name__) != cls.__name__:
        raise PainterWeightsError(folder / CONFIG_NAME, f"describes a {config['_class_name']}, expected {cls.__name__}")
    accepted = set(inspect.signature(cls.__init__).parameters)
    config = {k: v for k, v in config.items() if k in accepted}
    _check_config(folder / CONFIG_NAME, config)
    # Built without memory (meta tensors), so a config that does not match the file fails before any
    # parameter is allocated; the file's tensors then become the parameters.
    with torch.device("meta"):
        module = _build(folder, cls, config)
    expected = module.state_dict()
    state = _read_safetensors(folder / WEIGHTS_NAME)
    _check_state(folder / WEIGHTS_NAME, expected, state)
    state = {key: tensor.to(expected[key].dtype) for key, tensor in state.items()}
    module.load_state_dict(state, strict=True, assign=True)
    if any(t.is_meta for t in (*module.parameters(), *module.buffers())):  # a buffer outside the state dict
        module = _build(folder, cls, config)
        module.load_state_dict(state, strict=True)
    return module


def _build(folder: Path, cls: type, config: dict) -> nn.Module:
    try:
        return cls.from_config(config)
    except Exception as error:
        raise PainterWeightsError(folder / CONFIG_NAME, f"cannot build a {cls.__name__} from it ({error})") from None


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        pickles = sorted(p.name for p in path.parent.glob("*") if p.suffix in PICKLE_SUFFIXES)
        extra = (f"; found {', '.join(pickles)}, but exgs never loads pickle files: convert them to safetensors"
                 if pickles else "")
        raise PainterWeightsError(path, f"missing{extra}")
    try:
        tensors = load_safetensors(path.read_bytes())
    except (SafetensorError, ValueError, OSError) as error:
        raise PainterWeightsError(path, f"is not a valid safetensors file ({error})") from None
    for key, tensor in tensors.items():
        if tensor.is_floating_point():
            # numpy, not torch: on a busy machine torch's thread pool makes 240 small checks take seconds
            values = tensor.float().numpy()
            with np.errstate(invalid="ignore", over="ignore"):
                total = values.sum(dtype=np.float64)
            if not np.isfinite(total):
                bad = int(np.count_nonzero(~np.isfinite(values)))
                if bad:
                    raise PainterWeightsError(path, f"tensor {key!r} holds {bad} NaN or infinite values of "
                                                    f"{values.size}")
    return tensors


def _check_state(path: Path, expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing:
        raise PainterWeightsError(path, f"lacks {len(missing)} tensor(s) the config needs, e.g. {missing[0]!r}")
    if unexpected:
        raise PainterWeightsError(path, f"holds {len(unexpected)} tensor(s) the config does not know, "
                                        f"e.g. {unexpected[0]!r}")
    for key, tensor in expected.items():
        if tuple(found[key].shape) != tuple(tensor.shape):
            raise PainterWeightsError(path, f"tensor {key!r} has shape {tuple(found[key].shape)}, the config "
                                            f"needs {tuple(tensor.shape)}")
