"""Training pairs for GaussPainter: (raw render of the UGC-compressed scene + alpha, render of the full scene).

make_pairs() renders random views around each scene (orbit with jittered azimuth, elevation, distance, focal
length and look-at target; random background colour), compresses the scene through the real UGC pipeline at
random targets between 10x and 300x (against the 248 B/Gaussian INRIA .ply), and writes per sample:

    <out>/<scene>/<view>_target.png          the full scene's render (RGB, shared by that view's samples)
    <out>/<scene>/<view>_<k>_input.png       the compressed scene's render, alpha in the PNG's alpha channel
    <out>/<scene>/samples.json               that scene's part of the manifest (written last: resumable)
    <out>/manifest.json                      every sample, the split, the settings and the seed

Deterministic: the same seed and settings give the same bytes. Scenes are split by scene (SPLIT below), so a
scene is either trained on or evaluated on, never both.
"""

from __future__ import annotations

import json
import math
import os
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from exgs_core.camera import orbit_cameras
from exgs_core.fileio import atomic_write
from exgs_core.io import read_scene
from exgs_core.render import render
from exgs_core.scene import GaussianScene

MANIFEST_NAME = "manifest.json"
SCENE_MANIFEST_NAME = "samples.json"

# Scene name (file name, or the folder for SOG) -> (split, up axis). The two playbot files are one scene.
SPLIT: dict[str, tuple[str, str]] = {
    # captured / trained scenes (what users bring): 3 train, 2 held out
    "splats_plant.splat": ("train", "-y"),
    "hairlod_donut_fused.ply": ("train", "+z"),
    "gs3d_lod1_tile_0_0.5x.ply": ("train", "+z"),
    "mjw_fox.ply": ("eval", "+z"),
    "pcengine_playbot_3_0": ("eval", "-y"),
    "pcengine_playbot_3_0.inria.ply": ("eval", "-y"),  # the same scene as the SOG folder: never train on it
    # mesh2splat objects: 12 train, 5 held out
    **{f"{name}.splat": ("train", "-y") for name in (
        "boat", "bob", "boot", "cheese", "demosthenes", "goathead", "hammer", "mountain", "parsnip", "plane",
        "scorpion", "wingnut")},
    **{f"{name}.splat": ("eval", "-y") for name in ("cat", "koala", "pizza", "spot", "tree")},
}
# Files that hold a scene already listed: kept in the same split, but pairs are made from one copy only.
SAME_SCENE = {"pcengine_playbot_3_0.inria.ply": "pcengine_playbot_3_0"}


@dataclass
class PairSettings:
    """How pairs are made; stored in the manifest so a data set can be regenerated exactly."""

    size: int = 192  # square renders, pixels
    views: int = 32  # views per scene (times captured_view_factor for captured scenes)
    captured_view_factor: int = 2
    targets_per_scene: int = 4  # compressions per scene, ratios stratified log-uniformly in [min, max]
    samples_per_view: int = 2  # compressed renders paired with each full render
    ratio_min: float = 10.0
    ratio_max: float = 300.0
    fixed_ratios: tuple[float, ...] = ()  # if given, used instead of random ratios (evaluation sets)
    scoring_views: int | None = None  # UGC scoring views (None: the compressor's default)
    scoring_size: int | None = None
    fov_deg: float = 50.0
    fov_jitter_deg: float = 20.0
    elevation_deg: float = 20.0
    elevation_jitter_deg: float = 35.0
    distance_jitter: float = 0.6
    target_jitter: float = 0.2


@dataclass
class SceneEntry:
    name: str
    path: str
    split: str
    up: str
    captured: bool = False
    samples: list = field(default_factory=list)


def scene_name(path: str | os.PathLike) -> str:
    path = Path(path)
    return path.parent.name if path.name == "meta.json" else path.name


def split_of(path: str | os.PathLike) -> tuple[str, str]:
    """(split, up axis) of a scene file; scenes not in SPLIT are held out with up +z."""
    return SPLIT.get(scene_name(path), ("eval", "+z"))


def scene_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode("utf-8"))) % (2**32)


def ratio_schedule(rng: np.random.Generator, settings: PairSettings) -> list[float]:
    """Compression ratios for one scene: fixed ones, or one log-uniform draw per equal log-width bin."""
    if settings.fixed_ratios:
        return [float(r) for r in settings.fixed_ratios]
    lo, hi = math.log(settings.ratio_min), math.log(settings.ratio_max)
    bins = np.linspace(lo, hi, settings.targets_per_scene + 1)
    return [round(float(math.exp(rng.uniform(bins[i], bins[i + 1]))), 2) for i in range(settings.targets_per_scene)]


def background_for(rng: np.random.Generator, black: float = 0.5, white: float = 0.15, grey: float = 0.15
                   ) -> tuple[float, float, float]:
    """Black, white or grey with these shares, otherwise a random colour (users render on anything)."""
    pick = rng.uniform()
    if pick < black:
        return (0.0, 0.0, 0.0)
    if pick < black + white:
        return (1.0, 1.0, 1.0)
    if pick < black + white + grey:
        value = round(float(rng.uniform(0.1, 0.9)), 3)
        return (value, value, value)
    return tuple(round(float(v), 3) for v in rng.uniform(0.0, 1.0, 3))


def _save_rgb(path: Path, rgb: torch.Tensor, alpha: torch.Tensor | None = None) -> None:
    channels = [rgb] if alpha is None else [rgb, alpha[..., None]]
    pixels = (torch.cat(channels, dim=-1).clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
    with atomic_write(path) as handle:
        Image.fromarray(pixels).save(handle, format="PNG")


def compress_scene(scene: GaussianScene, ratios: Sequence[float], settings: PairSettings
                   ) -> list[tuple[GaussianScene, dict]]:
    """The decoded scenes after real UGC compression to each ratio (x vs INRIA .ply), and their stats.

    Scoring views and significance are computed once and shared by all ratios (as `exgs compress` would
    compute them for each file).
    """
    from exgs_core.ugc.compress import SCORING_SIZE, CompressSettings, Target, compress, scoring_cameras
    from exgs_core.ugc.significance import significance

    compress_settings = CompressSettings()
    cameras = scoring_cameras(scene, settings.scoring_views, size=settings.scoring_size or SCORING_SIZE)
    scores = significance(scene, cameras, compress_settings.variant)
    out = []
    for ratio in ratios:
        result = compress(scene, Target("ratio", float(ratio)), cameras, compress_settings, scores=scores)
        stats = {"target_ratio": ratio, "ratio": round(float(result.stats["ratio_vs_inria_ply"]), 3),
                 "kept": len(result.scene), "of": len(scene), "bytes": len(result.data)}
        out.append((result.scene, stats))
    return out


def make_scene_pairs(path: str | os.PathLike, out_dir: str | os.PathLike, settings: PairSettings, seed: int,
                     on_sample: Callable[[], None] | None = None) -> SceneEntry:
    """Render and write one scene's pairs; returns its manifest entry (also written to <scene>/samples.json)."""
    name = scene_name(path)
    split, up = split_of(path)
    scene_dir = Path(out_dir) / name
    scene_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(scene_seed(seed, name))
    scene = read_scene(path)
    captured = Path(path).parent.name != "mesh2splat"
    entry = SceneEntry(name, os.fspath(path), split, up, captured)

    ratios = ratio_schedule(rng, settings)
    compressed = compress_scene(scene, ratios, settings)
    views = settings.views * (settings.captured_view_factor if captured else 1)
    cameras = orbit_cameras(
        scene.means, views, settings.size, settings.size, up=up, fov_deg=settings.fov_deg,
        elevation_deg=settings.elevation_deg, opacities=scene.opacities(), rng=rng,
        fov_jitter_deg=settings.fov_jitter_deg, elevation_jitter_deg=settings.elevation_jitter_deg,
        distance_jitter=settings.distance_jitter, target_jitter=settings.target_jitter,
        start_azimuth_deg=float(rng.uniform(0, 360)))
    per_view = min(settings.samples_per_view, len(ratios))
    for v, camera in enumerate(cameras):
        background = background_for(rng)
        target = render(scene, camera, background=background, backend="torch")
        target_file = f"{v:03d}_target.png"
        _save_rgb(scene_dir / target_file, target.rgb)
        for k in sorted(rng.choice(len(ratios), size=per_view, replace=False).tolist()):
            small, stats = compressed[k]
            raw = render(small, camera, background=background, backend="torch")
            input_file = f"{v:03d}_{k}_input.png"
            _save_rgb(scene_dir / input_file, raw.rgb, raw.alpha)
            entry.samples.append({
                "id": f"{name}/{v:03d}_{k}", "input": f"{name}/{input_file}", "target": f"{name}/{target_file}",
                "view": v, "background": list(background), **stats,
                "fx": round(camera.fx, 4), "world_to_camera": np.round(camera.world_to_camera, 6).tolist(),
            })
            if on_sample is not None:
                on_sample()
    with atomic_write(scene_dir / SCENE_MANIFEST_NAME, "w") as handle:
        json.dump(asdict(entry), handle, indent=1)
    return entry


def make_pairs(scene_paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
               settings: PairSettings | None = None, seed: int = 0, splits: Sequence[str] = ("train", "eval"),
               log: Callable[[str], None] | None = print) -> dict:
    """Generate pairs for every scene whose split is in `splits`; resumable (finished scenes are kept).

    Returns the manifest (also written to <out_dir>/manifest.json).
    """
    settings = settings or PairSettings()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    names = {scene_name(p) for p in scene_paths}
    for path in scene_paths:
        split, _ = split_of(path)
        if split not in splits or SAME_SCENE.get(scene_name(path)) in names:
            continue
        done = out_dir / scene_name(path) / SCENE_MANIFEST_NAME
        if done.is_file() and _same_source(done, path):
            entries.append(json.loads(done.read_text()))
            continue
        start = time.perf_counter()
        entry = asdict(make_scene_pairs(path, out_dir, settings, seed))
        entries.append(entry)
        if log:
            log(f"{entry['name']}: {len(entry['samples'])} samples ({split}) in {time.perf_counter() - start:.0f} s")
    manifest = {"seed": seed, "settings": asdict(settings), "scenes": entries,
                "split": {s: sorted(e["name"] for e in entries if e["split"] == s) for s in ("train", "eval")}}
    with atomic_write(out_dir / MANIFEST_NAME, "w") as handle:
        json.dump(manifest, handle, indent=1)
    return manifest


def _same_source(done: Path, path: str | os.PathLike) -> bool:
    try:
        return json.loads(done.read_text()).get("path") == os.fspath(path)
    except (OSError, json.JSONDecodeError):
        return False


# --- reading pairs back ----------------------------------------------------------------------------------


def read_manifest(data_dir: str | os.PathLike) -> dict:
    """The manifest of a pairs folder; when generation is still running, the scenes finished so far."""
    data_dir = Path(data_dir)
    manifest_path = data_dir / MANIFEST_NAME
    if manifest_path.is_file():
        return json.loads(manifest_path.read_text())
    scenes = [json.loads(p.read_text()) for p in sorted(data_dir.glob(f"*/{SCENE_MANIFEST_NAME}"))]
    return {"scenes": scenes}


def load_samples(data_dir: str | os.PathLike, split: str, scenes: Sequence[str] | None = None
                 ) -> list[tuple[dict, np.ndarray, np.ndarray]]:
    """[(sample record, input RGBA uint8 (H, W, 4), target RGB uint8 (H, W, 3))] for one split."""
    data_dir = Path(data_dir)
    out = []
    for entry in read_manifest(data_dir)["scenes"]:
        if entry["split"] != split or (scenes is not None and entry["name"] not in scenes):
            continue
        for sample in entry["samples"]:
            with Image.open(data_dir / sample["input"]) as image:
                raw = np.asarray(image.convert("RGBA"))
            with Image.open(data_dir / sample["target"]) as image:
                target = np.asarray(image.convert("RGB"))
            out.append(({**sample, "scene": entry["name"], "captured": entry["captured"]}, raw, target))
    return out


def shared_scene_paths(data_root: str | os.PathLike) -> list[Path]:
    """Every scene in a shared/data folder: scenes/*.ply|*.splat, the SOG folder(s), mesh2splat/*.splat."""
    root = Path(data_root)
    scenes = root / "scenes"
    paths = sorted(p for p in scenes.iterdir() if p.suffix in (".ply", ".splat")) if scenes.is_dir() else []
    paths += sorted(scenes.glob("*/meta.json"))
    paths += sorted((root / "mesh2splat").glob("*.splat"))
    return paths
