"""Benchmark: bytes per Gaussian of the .exgs packing, per attribute, and the render PSNR it costs.

For every real scene: pack with the default PackSettings, write the container (lzma), report bytes per
Gaussian per section and for the whole file, the ratio against the source file and against the 248-byte INRIA
Gaussian, and the PSNR of renders of the unpacked scene against the original (same SH degree) from orbit views.

    python bench/pack.py [--size 256] [--views 4] [--scenes N] [--ablation] [--floaters] [--codecs]

--ablation  one change at a time from the defaults (bits, Morton order, colour basis), on the captured scenes
--floaters  a scene plus far floaters: PSNR with and without the logarithmic core box
--codecs    stored bytes with zstd-19 against lzma, per section, over all scenes
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from exgs_core.camera import orbit_cameras  # noqa: E402
from exgs_core.io import read_scene  # noqa: E402
from exgs_core.io.exgs import compress, encode_container  # noqa: E402
from exgs_core.render import render  # noqa: E402
from exgs_core.scene import GaussianScene  # noqa: E402
from exgs_core.ugc import pack as pack_module  # noqa: E402
from exgs_core.ugc.pack import PackSettings, pack_scene, unpack_scene  # noqa: E402
from tests.conftest import captured_scene_paths, real_scene_paths  # noqa: E402

INRIA_BYTES = 248


class Renders:
    """Reference renders of one scene, made once, and PSNR of another scene against them."""

    def __init__(self, scene: GaussianScene, views: int, size: int):
        self.cameras = orbit_cameras(scene.means, views, size, size, up="+z", opacities=scene.opacities())
        self.reference = [self._rgb(scene, camera) for camera in self.cameras]

    @staticmethod
    def _rgb(scene: GaussianScene, camera) -> np.ndarray:
        return render(scene, camera, backend="torch").rgb.clamp(0, 1).numpy()

    def psnr(self, scene: GaussianScene) -> float:
        """Mean over the views of the PSNR (dB) against the reference renders."""
        values = []
        for camera, reference in zip(self.cameras, self.reference):
            mse = float(np.mean((self._rgb(scene, camera) - reference) ** 2))
            values.append(10.0 * np.log10(1.0 / max(mse, 1e-12)))
        return float(np.mean(values))


def stored_sizes(
    scene: GaussianScene, settings: PackSettings, codec: str = "lzma"
) -> tuple[dict[str, int], int, GaussianScene]:
    """(stored bytes per section, whole file bytes, unpacked scene)."""
    header, sections = pack_scene(scene, settings=settings)
    stored = {name: len(compress(payload, codec)) for name, payload in sections.items()}
    file_bytes = len(encode_container(header, sections, codec=codec))
    return stored, file_bytes, unpack_scene(header, sections)


def scene_table(paths: list[Path], views: int, size: int) -> None:
    settings = PackSettings()
    print(f"Default PackSettings: {settings.to_dict()}")
    print(f"PSNR: unpacked vs original, same SH degree, {views} orbit views at {size}x{size}, CPU renderer\n")
    names = ["means", "quats", "scales", "opacity", "sh_dc", "sh_rest"]
    print("| scene | Gaussians | SH | " + " | ".join(names) + " | file B/G | vs source | vs INRIA | PSNR dB |")
    print("|---|---:|---:|" + "---:|" * (len(names) + 4))
    totals, psnrs = [], []
    for path in paths:
        scene = read_scene(path)
        count = len(scene)
        stored, file_bytes, unpacked = stored_sizes(scene, settings)
        psnr = Renders(scene, views, size).psnr(unpacked)
        per = [f"{stored[n] / count:.2f}" if n in stored else "-" for n in names]
        source = scene.metadata.get("source_bytes") or 0
        print(
            f"| {scene.metadata.get('source_name', path.name)} | {count} | {scene.sh_degree} | " + " | ".join(per)
            + f" | {file_bytes / count:.2f} | {source / file_bytes:.1f}x | {INRIA_BYTES * count / file_bytes:.1f}x"
            f" | {psnr:.1f} |",
            flush=True,
        )
        totals.append(file_bytes / count)
        psnrs.append(psnr)
    print(f"\nmean file bytes/Gaussian {np.mean(totals):.2f}, mean PSNR {np.mean(psnrs):.1f} dB, "
          f"min PSNR {np.min(psnrs):.1f} dB over {len(paths)} scenes")


ABLATION = {
    "defaults": {},
    "position_bits=16": {"position_bits": 16},
    "position_bits=12": {"position_bits": 12},
    "rotation_bits=8": {"rotation_bits": 8},
    "rotation_bits=6": {"rotation_bits": 6},
    "scale_bits=8": {"scale_bits": 8},
    "scale_bits=6": {"scale_bits": 6},
    "opacity_bits=7": {"opacity_bits": 7},
    "color_bits=7": {"color_bits": 7},
    "sh_bits=(6,5,5)": {"sh_bits": (6, 5, 5)},
    "sh_bits=(4,3,3)": {"sh_bits": (4, 3, 3)},
    "morton=False": {"morton": False},
}


def ablation(paths: list[Path], views: int, size: int) -> None:
    scenes = [read_scene(path) for path in paths]
    renders = [Renders(scene, views, size) for scene in scenes]
    print(f"\nAblation on {', '.join(s.metadata.get('source_name', '?') for s in scenes)}: file bytes/Gaussian and "
          f"PSNR per scene, then the means")
    for name, change in ABLATION.items():
        settings = dataclasses.replace(PackSettings(), **change)
        cells, sizes, psnrs = [], [], []
        for scene, reference in zip(scenes, renders):
            _, file_bytes, unpacked = stored_sizes(scene, settings)
            sizes.append(file_bytes / len(scene))
            psnrs.append(reference.psnr(unpacked))
            cells.append(f"{sizes[-1]:5.2f} {psnrs[-1]:4.1f}")
        means = f"{np.mean(sizes):5.2f} B/G {np.mean(psnrs):4.1f} dB"
        print(f"{name:18s} " + " | ".join(cells) + f" || {means}", flush=True)
    with_rgb = _rgb_colour_sizes(scenes)
    print(f"colour planes in RGB instead of the orthonormal basis: {with_rgb}")


def _rgb_colour_sizes(scenes: list[GaussianScene]) -> str:
    """Stored DC (and SH rest) bytes/Gaussian with the orthonormal colour basis replaced by the identity."""
    cells = []
    for scene in scenes:
        header, sections = pack_scene(scene)
        ortho = len(compress(sections["sh_dc"], "lzma")) + len(compress(sections.get("sh_rest", b""), "lzma"))
        saved = pack_module.COLOR_BASIS
        pack_module.COLOR_BASIS = np.eye(3)
        try:
            header, sections = pack_scene(scene)
        finally:
            pack_module.COLOR_BASIS = saved
        rgb = len(compress(sections["sh_dc"], "lzma")) + len(compress(sections.get("sh_rest", b""), "lzma"))
        cells.append(f"{rgb / len(scene):.2f} vs {ortho / len(scene):.2f}")
    return " | ".join(cells)


def floaters(path: Path, views: int, size: int) -> None:
    """A real scene plus 2% far floaters: the core box keeps the precision of the scene itself."""
    scene = read_scene(path)
    rng = np.random.default_rng(0)
    count = max(1, len(scene) // 50)
    extent = float(np.max(scene.means.max(axis=0) - scene.means.min(axis=0)))
    direction = rng.normal(size=(count, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    far = scene.means.mean(axis=0) + direction * extent * rng.uniform(20, 200, (count, 1))
    extra = GaussianScene(
        far, rng.normal(size=(count, 4)), np.full((count, 3), np.log(extent)), np.full(count, -2.0),
        np.zeros((count, scene.sh.shape[1], 3)),
    )
    both = GaussianScene.concatenate([scene, extra])
    reference = Renders(scene, views, size)  # views of the scene itself; the floaters lie outside them
    print(f"\nFloaters: {path.name} + {count} Gaussians at 20-200x its extent (views of the scene)")
    variants = {"core box (default)": {}, "plain bounding box": {"core_percentile": 0.0, "core_margin": 1e9}}
    for name, change in variants.items():
        settings = dataclasses.replace(PackSettings(), **change)
        _, file_bytes, unpacked = stored_sizes(both, settings)
        kept = unpacked.subset(pack_module.packing_order(both, settings) < len(scene))
        print(f"{name:20s} {file_bytes / len(both):5.2f} B/G, PSNR of the scene part {reference.psnr(kept):.1f} dB")


def codecs(paths: list[Path]) -> None:
    totals: dict[str, dict[str, int]] = {}
    start = {"zstd": 0.0, "lzma": 0.0}
    for path in paths:
        _, sections = pack_scene(read_scene(path))
        for name, payload in sections.items():
            for codec in ("zstd", "lzma"):
                began = time.perf_counter()
                totals.setdefault(name, {}).setdefault(codec, 0)
                totals[name][codec] += len(compress(payload, codec))
                start[codec] += time.perf_counter() - began
    print("\nStored bytes over all scenes, zstd level 19 against lzma (LZMA2 preset 9e):")
    for name, sizes in totals.items():
        ratio = sizes["lzma"] / sizes["zstd"]
        print(f"{name:8s} zstd {sizes['zstd']:9d}  lzma {sizes['lzma']:9d}  lzma/zstd {ratio:.3f}")
    z, x = sum(s["zstd"] for s in totals.values()), sum(s["lzma"] for s in totals.values())
    print(f"total    zstd {z:9d}  lzma {x:9d}  lzma/zstd {x / z:.3f}; "
          f"time zstd {start['zstd']:.1f} s, lzma {start['lzma']:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--scenes", type=int, default=None, help="only the first N scenes")
    parser.add_argument("--ablation", action="store_true")
    parser.add_argument("--floaters", action="store_true")
    parser.add_argument("--codecs", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    paths = real_scene_paths()[: args.scenes]
    if not paths:
        sys.exit("no real scenes found (../shared/data is absent)")
    scene_table(paths, args.views, args.size)
    if args.ablation:
        ablation(captured_scene_paths()[:5], args.views, args.size)
    if args.floaters:
        floaters(paths[2] if len(paths) > 2 else paths[0], args.views, args.size)
    if args.codecs:
        codecs(paths)


if __name__ == "__main__":
    main()
