"""What each renderer in Blender 5.3 makes of a trained scene: EXGS against Blender's own EEVEE and Cycles splats.

    .venv/bin/python bench/blender_renderers.py [--size 192] [--cycles-samples 128]

In the stock Blender 5.3 of the tests (pip `bpy` 5.3.0 in .venv-blender53, no torch; the ExGS runtime is a
worker on this venv's Python), for one captured scene (the fox) and one mesh-converted scene (spot): Blender's
own PLY importer makes a native splat object, which is rendered from one view by Cycles (CPU), EEVEE and the
EXGS engine (F12, raw). Each render is compared, as 8-bit sRGB, with exgs_core's reference 3DGS rasteriser of
the same camera (the semantics of the INRIA and gsplat rasterisers, which the scene was trained with). Blender's
engines render under the Standard view transform against the same world colour, so only their splat model
differs. Prints PSNR per scene and renderer, and the time of each render.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from exgs_core.camera import blender_camera_to_camera, look_at  # noqa: E402
from exgs_core.images import read_png  # noqa: E402
from exgs_core.io import read_scene, write_scene  # noqa: E402
from exgs_core.metrics import psnr  # noqa: E402
from exgs_core.render import render  # noqa: E402
from tests.blender.blender_runner import (  # noqa: E402
    STOCK_BLENDER_VENV, build_zip, describe_blender, install_extension, run_blender,
)
from tests.conftest import MESH2SPLAT_DIR, SCENES_DIR  # noqa: E402

SCENES = {"fox (captured)": SCENES_DIR / "mjw_fox.ply", "spot (mesh-converted)": MESH2SPLAT_DIR / "spot.splat"}
WORLD = 0.05  # scene-linear grey world: 0.248 in sRGB

SCRIPT = """
import time
scene = bpy.context.scene
for obj in list(bpy.data.objects):
    bpy.data.objects.remove(obj)
assert bpy.ops.wm.ply_import(filepath=args["ply"]) == {"FINISHED"}  # Blender's own native splats
camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
scene.collection.objects.link(camera)
scene.camera = camera
camera.data.lens, camera.data.sensor_width, camera.data.sensor_fit = 35.0, 36.0, "HORIZONTAL"
from mathutils import Matrix
camera.matrix_world = Matrix(args["matrix"])
r = scene.render
r.resolution_x = r.resolution_y = args["size"]
r.resolution_percentage = 100
r.film_transparent = False
r.image_settings.media_type = "IMAGE"
r.image_settings.file_format = "PNG"
scene.view_settings.view_transform = "Standard"
world = scene.world or bpy.data.worlds.new("World")
scene.world = world
world.use_nodes = True
background = [n for n in world.node_tree.nodes if n.type == "BACKGROUND"][0]
background.inputs["Color"].default_value = (args["world"],) * 3 + (1.0,)
background.inputs["Strength"].default_value = 1.0
scene.cycles.device, scene.cycles.samples = "CPU", args["cycles_samples"]
scene.eevee.taa_render_samples = args["eevee_samples"]
scene.exgs_render.use_fitted = False
for engine in ("EXGS", "BLENDER_EEVEE", "CYCLES"):
    r.engine = engine
    r.filepath = args["dir"] + "/" + engine + ".png"
    start = time.perf_counter()
    assert bpy.ops.render.render(write_still=True) == {"FINISHED"}
    result[engine] = time.perf_counter() - start
"""


def camera_matrix(means: np.ndarray) -> np.ndarray:
    """A Blender camera matrix_world (-Z forward, +Y up) looking at the scene's centre from the side."""
    centre = np.median(means, axis=0)
    radius = float(np.percentile(np.linalg.norm(means - centre, axis=1), 95))
    eye = centre + 2.8 * radius * np.array([0.8, -0.6, 0.4])
    return np.linalg.inv(look_at(eye, centre, np.array([0.0, 0.0, 1.0]))) @ np.diag([1.0, -1.0, -1.0, 1.0])


def srgb(linear: float) -> float:
    return 12.92 * linear if linear <= 0.0031308 else 1.055 * linear ** (1 / 2.4) - 0.055


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--cycles-samples", type=int, default=128)
    parser.add_argument("--eevee-samples", type=int, default=64)
    options = parser.parse_args()
    current = describe_blender(STOCK_BLENDER_VENV / "bin" / "python")
    with tempfile.TemporaryDirectory(prefix="exgs_renderers_") as tmp:
        work = Path(tmp)
        extension = install_extension(build_zip(work / "dist"), work / "user", current)
        print(f"Blender {'.'.join(map(str, current.version))} (stock: {current.stock}), {options.size} px, "
              f"Cycles {options.cycles_samples} samples, EEVEE {options.eevee_samples}; PSNR against the 3DGS "
              "reference rasteriser (exgs_core.render)")
        print(f"{'scene':24s} {'renderer':14s} {'PSNR dB':>8s} {'seconds':>8s}")
        for label, path in SCENES.items():
            scene = read_scene(path)
            ply = work / f"{path.stem}.ply"
            write_scene(scene, ply)  # Blender imports .ply and .spz; the .splat becomes an INRIA .ply first
            matrix = camera_matrix(scene.means)
            out = run_blender(SCRIPT, extension, timeout=3600, args={
                "ply": str(ply), "dir": str(work), "matrix": matrix.tolist(), "size": options.size,
                "world": WORLD, "cycles_samples": options.cycles_samples, "eevee_samples": options.eevee_samples})
            camera = blender_camera_to_camera(
                lens_mm=35.0, sensor_width_mm=36.0, sensor_height_mm=24.0, sensor_fit="HORIZONTAL", shift_x=0.0,
                shift_y=0.0, resolution_x=options.size, resolution_y=options.size, resolution_percentage=100,
                pixel_aspect_x=1.0, pixel_aspect_y=1.0, matrix_world=matrix)
            reference = render(scene, camera, background=(srgb(WORLD),) * 3).rgb.numpy()
            for engine, name in (("EXGS", "EXGS"), ("BLENDER_EEVEE", "EEVEE"), ("CYCLES", "Cycles")):
                image = read_png(work / f"{engine}.png")[..., :3]  # sRGB in [0, 1]
                print(f"{label:24s} {name:14s} {float(psnr(image, reference)):8.1f} {out[engine]:8.1f}")
        print(f"(measured {time.strftime('%Y-%m-%d')})")


if __name__ == "__main__":
    main()
