"""Benchmark: importing a 1M-Gaussian .ply into Blender through our operator, next to Blender's own PLY importer.

Both import the same file in the same Blender process (pip bpy, run as this script): a 1M-Gaussian SH-degree-3
INRIA .ply (248 MB) tiled from a real scene into a temporary folder, or the file given by --path. Ours is timed
for the operator call (read, splat object and, as Blender evaluates the scene right after an operator, the
first evaluation of its display), with the three parts timed separately too. Memory: the peak resident memory
of the process during our import (from a cleared scene: the peak is reset just before it) and of the whole run
are printed last. Goal: ours <= 3 s at 1M, and at 10M SH-3 a peak within 4 GiB. Whichever Blender runs it: 4.5
makes the mesh-based object, 5.3 a native Gaussian-splat point cloud. pip bpy runs in background mode, where
Blender keeps no undo steps (in the UI the import's undo step shares the attribute arrays: docs/results.md).

    python bench/blender.py [--count 1000000] [--repeats 2] [--path big.ply] [--ours-only]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path += [str(wheel) for wheel in (ROOT / "wheels").glob("*.whl")]  # the extension's bundled wheels (plyfile),
# which an installed extension has: a stock Blender's Python lacks them

import bpy  # noqa: E402  (pip bpy: import before the extension's modules)

import exgs_blender  # noqa: E402
from exgs_blender.operators.io import decode_image_with_blender  # noqa: E402
from exgs_blender.splats import count_of, create_splat  # noqa: E402
from exgs_core.io import read_scene, read_split_scene, write_scene  # noqa: E402
from exgs_core.synthetic import tile_scene  # noqa: E402
SCENES_DIR = ROOT.parent / "shared" / "data" / "scenes"  # (tests.conftest needs pytest, which Blender lacks)


def clear_scene() -> None:
    """Remove every object and its data, and let Blender free them: until the next depsgraph update its
    evaluated copies keep the removed attributes (at 10M, 2.2 GB counted into whatever ran next)."""
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    for data in (*bpy.data.meshes, *getattr(bpy.data, "pointclouds", ())):
        (bpy.data.meshes if isinstance(data, bpy.types.Mesh) else bpy.data.pointclouds).remove(data)
    bpy.context.evaluated_depsgraph_get().update()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def parts(path: Path) -> tuple[float, float, float]:
    """Seconds of read_split_scene, create_splat and the first depsgraph evaluation, one after the other."""
    clear_scene()
    start = time.perf_counter()
    scene = read_split_scene(path, decode_image_with_blender)  # as the operator reads (SOG's WebP, without Pillow)
    read = time.perf_counter()
    create_splat(scene, "parts")
    created = time.perf_counter()
    bpy.context.evaluated_depsgraph_get().update()
    return read - start, created - read, time.perf_counter() - created


def peak_memory_gib() -> float:
    """The process's peak resident memory (VmHWM) since it started or since reset_peak_memory, in GiB."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024**2


def reset_peak_memory() -> None:
    """Start VmHWM again from the current resident memory (Linux: /proc/self/clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def bench(path: Path, repeats: int, ours_only: bool = False) -> None:
    ours, blender, split, import_peaks = [], [], [], []
    blender_count = 0
    whole_run_peak = 0.0
    for _ in range(repeats):
        clear_scene()
        whole_run_peak = max(whole_run_peak, peak_memory_gib())
        reset_peak_memory()
        ours.append(timed(lambda: bpy.ops.import_scene.gaussian_splats(filepath=str(path))))
        import_peaks.append(peak_memory_gib())
        count = count_of(bpy.context.active_object)
        clear_scene()
        if not ours_only:
            blender.append(timed(lambda: bpy.ops.wm.ply_import(filepath=str(path))))
            data = bpy.context.active_object.data  # a mesh, or on 5.x a point cloud
            blender_count = len(data.vertices if isinstance(data, bpy.types.Mesh) else data.points)
            clear_scene()
        split.append(parts(path))
    read, create, display = (min(column) for column in zip(*split))
    size = path.stat().st_size
    print(f"Blender {bpy.app.version_string}: {count:,} Gaussians, {size / 1e6:.0f} MB {path.name}, best of {repeats}")
    print("| importer | seconds |")
    print("|---|---:|")
    print(f"| ours: import_scene.gaussian_splats | {min(ours):.2f} |")
    print(f"| ours, part: exgs_core read_split_scene | {read:.2f} |")
    print(f"| ours, part: create_splat | {create:.2f} |")
    print(f"| ours, part: first display evaluation | {display:.2f} |")
    if blender:
        print(f"| Blender: wm.ply_import ({blender_count:,} points) | {min(blender):.2f} |")
        print(f"ours / Blender's: {min(ours) / min(blender):.2f}x")
    goal = f"goal ours <= 3 s at 1M: {'met' if min(ours) <= 3 else 'MISSED'}; " if count <= 1_000_000 else ""
    whole_run_peak = max(whole_run_peak, peak_memory_gib())
    print(f"{goal}peak memory during ours {max(import_peaks):.2f} GiB; of the whole run {whole_run_peak:.2f} GiB"
          f"{'' if ours_only else ' (both importers)'}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--path", type=Path, help="import this file instead of a tiled .ply (e.g. 10M Gaussians; "
                                                  "any format exgs reads, with --ours-only unless a .ply)")
    parser.add_argument("--ours-only", action="store_true", help="leave out Blender's importer (its memory too)")
    options = parser.parse_args()
    exgs_blender.register()
    if options.path:
        bench(options.path, options.repeats, options.ours_only)
    else:
        with tempfile.TemporaryDirectory(prefix="exgs_bench_blender_") as tmp:
            path = Path(tmp) / "tiled.ply"
            write_scene(tile_scene(read_scene(SCENES_DIR / "gs3d_lod1_tile_0_0.5x.ply"), options.count), path)
            bench(path, options.repeats, options.ours_only)
    exgs_blender.unregister()
    os._exit(0)  # skip bpy's slow teardown of a large session


if __name__ == "__main__":
    main()
