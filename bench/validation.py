"""Benchmark: what the hostile-input checks (issue 13) cost on valid inputs, measured in the same run.

Reading: every real scene (shared/data) with read_scene (format detection, the reader, the NaN/Inf check of
every attribute) against the bare reader alone; also a 1M-Gaussian SH-3 .ply tiled from a real scene into a
temporary folder. Writing: write_scene to .ply through atomic_write (chmod, stale-temporary scan) against
plyfile writing the same rows to a plain open() file. Painter: load_painter_folder on the shipped weights
against the part of it the checks take (config bounds, meta-device build, finite tensors).
Prints the best of --repeats runs and the ratios; the machine is shared, so expect noise.

    python bench/validation.py [--repeats 5] [--count 1000000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from exgs_core.io import _READERS, detect_format, read_scene, write_scene  # noqa: E402
from exgs_core.io.sog import read_sog  # noqa: E402
from exgs_core.synthetic import tile_scene  # noqa: E402
from exgs_core.validate import non_finite_rows  # noqa: E402
from tests.conftest import real_scene_paths  # noqa: E402


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


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
            bare = best(lambda: bare_reader(path), args.repeats)
            checked = best(lambda: read_scene(path), args.repeats)
            scene = read_scene(path)
            check = best(lambda: non_finite_rows(scene), args.repeats)
            total_bare, total_checked = total_bare + bare, total_checked + checked
            name = path.parent.name if path.name == "meta.json" else path.name
            print(f"{name[:36]:36} {bare:8.4f} {checked:12.4f} {check:8.4f} {checked / bare:6.3f}")
        print(f"{'all':36} {total_bare:8.4f} {total_checked:12.4f} {'':8} {total_checked / total_bare:6.3f}")
        write_ratio(Path(folder), big, args.repeats)
    painter_ratio(args.repeats)


def write_ratio(folder: Path, big: Path, repeats: int) -> None:
    from plyfile import PlyData

    scene = read_scene(big)
    rows = PlyData.read(str(big))["vertex"]

    def plain() -> None:
        with open(folder / "plain.ply", "wb") as handle:
            PlyData([rows], byte_order="<").write(handle)

    bare = best(plain, repeats)
    atomic = best(lambda: write_scene(scene, folder / "atomic.ply"), repeats)
    print(f"write {len(scene):,} Gaussians .ply: plain open() {bare:.3f} s, write_scene {atomic:.3f} s, "
          f"ratio {atomic / bare:.3f} (write_scene also fsyncs)")


def painter_ratio(repeats: int) -> None:
    import torch

    from exgs_core.painter import weights

    folder = weights.default_weights_path()
    if not (folder / weights.INDEX_NAME).is_file():
        return
    load = best(lambda: weights.load_painter_folder(folder), repeats)

    def checks() -> None:
        for name, (_, cls) in weights.LAYOUTS["GaussPainter"].items():
            config = weights._read_json(folder / name / weights.CONFIG_NAME)
            weights._check_config(folder / name, config)
            accepted = {k: v for k, v in config.items() if k != "_class_name"}
            import inspect

            accepted = {k: v for k, v in accepted.items() if k in inspect.signature(cls.__init__).parameters}
            with torch.device("meta"):
                weights._build(folder / name, cls, accepted)
            tensors = weights._read_safetensors(folder / name / weights.WEIGHTS_NAME)
            all(bool(torch.isfinite(t).all()) for t in tensors.values())

    check = best(checks, repeats)
    print(f"painter: load_painter_folder {load:.3f} s, of which at most {check:.3f} s are the new checks "
          f"(config, meta build, reading + finite tensors): {check / load:.2f} of it")


if __name__ == "__main__":
    main()
