"""Benchmark: what the hostile-input checks (issue 13) cost on valid inputs, measured in the same run.

Reading: every real scene (shared/data) with read_scene (format detection, the reader, the NaN/Inf check of
every attribute) against the bare reader alone; also a 1M-Gaussian SH-3 .ply tiled from a real scene into a
temporary folder. Writing: what atomic_write adds (stale-temporary scan, mode) next to a 1M-Gaussian write.
Painter: load_painter_folder on the shipped weights and the share of its finite-tensor check (the loader
before issue 13 took 0.26-0.74 s in an A/B run on a busy machine; this one 0.31-0.42 s, as it no longer
builds and initialises the model before loading the tensors).
Prints the best of --repeats runs and the ratios; the machine is shared, so expect noise.

    python bench/validation.py [--repeats 5] [--count 1000000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.timing import best_of  # noqa: E402

from exgs_core.io import _READERS, detect_format, read_scene, write_scene  # noqa: E402
from exgs_core.io.sog import read_sog  # noqa: E402
from exgs_core.synthetic import tile_scene  # noqa: E402
from exgs_core.validate import non_finite_rows  # noqa: E402
from tests.conftest import real_scene_paths  # noqa: E402


def bare_reader(path: Path):
    format = detect_format(path)
    return read_sog(path) if format == "sog" else _READERS[format](path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--count", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        big = Path(folder) / "tiled.ply"
        write_scene(tile_scene(read_scene(ROOT.parent / "shared/data/scenes/gs3d_lod1_tile_0_0.5x.ply"), args.count), big)
        total_bare = total_checked = 0.0
        print(f"{'scene':36} {'bare s':>8} {'read_scene s':>12} {'check s':>8} {'ratio':>6}")
        for path in [*real_scene_paths(), big]:
            bare = best_of(lambda: bare_reader(path), args.repeats)
            checked = best_of(lambda: read_scene(path), args.repeats)
            scene = read_scene(path)
            check = best_of(lambda: non_finite_rows(scene), args.repeats)
            total_bare, total_checked = total_bare + bare, total_checked + checked
            name = path.parent.name if path.name == "meta.json" else path.name
            print(f"{name[:36]:36} {bare:8.4f} {checked:12.4f} {check:8.4f} {checked / bare:6.3f}")
        print(f"{'all':36} {total_bare:8.4f} {total_checked:12.4f} {'':8} {total_checked / total_bare:6.3f}")
        write_ratio(Path(folder), big, args.repeats)
    painter_ratio(args.repeats)


def write_ratio(folder: Path, big: Path, repeats: int) -> None:
    """What atomic_write adds (mode from the umask, one scan of the folder for stale temporaries) per write,
    against writing the 1M-Gaussian .ply."""
    from exgs_core import fileio

    scene = read_scene(big)
    full = best_of(lambda: write_scene(scene, folder / "atomic.ply"), repeats)
    crowded = folder / "crowded"
    crowded.mkdir()
    for index in range(10_000):
        (crowded / f"{index:05d}.png").touch()

    def additions() -> None:
        fileio._cleaned_folders.clear()
        fileio.remove_stale_temporaries(crowded)
        fileio._target_mode(crowded / "new.png")

    extra = best_of(additions, repeats)
    print(f"write_scene {len(scene):,} Gaussians .ply: {full:.3f} s; atomic_write's additions (stale-temporary "
          f"scan of a 10,000-file folder, once per process, and the mode): {extra * 1000:.2f} ms")


def painter_ratio(repeats: int) -> None:
    import numpy as np
    from safetensors.torch import load as load_safetensors

    from exgs_core.painter import weights

    folder = weights.default_weights_path()
    if not (folder / weights.INDEX_NAME).is_file():
        return
    load = best_of(lambda: weights.load_painter_folder(folder), repeats)
    tensors = [t for name in ("vae", "unet", "conditioning")
               for t in load_safetensors((folder / name / weights.WEIGHTS_NAME).read_bytes()).values()]
    check = best_of(lambda: [np.isfinite(t.float().numpy().sum(dtype=np.float64)) for t in tensors], repeats)
    print(f"painter: load_painter_folder {load:.3f} s (config bounds, meta-device build, tensors assigned), "
          f"of which the finite check of {len(tensors)} tensors takes {check:.3f} s")


if __name__ == "__main__":
    main()
