"""Make the README's Blender images through the real extension, headless (pip bpy), and print their numbers.

    .venv/bin/python tools/readme_images.py [--output-dir docs/figures]

Builds and validates the extension zip, installs it into a temporary Blender user folder (as the tests in
tests/blender do) and, in one Blender process: imports the captured playbot scene with
`bpy.ops.import_scene.gaussian_splats`, renders it in Solid mode (Workbench, colour by attribute) and with F12
through the EXGS engine, compresses it with `bpy.ops.exgs.compress()` at 100x and renders it again (Combined,
restored by the shipped GaussPainter weights, and the ExGS Raw pass). Writes

    blender_solid.png      the imported splat object as Blender's Solid mode shows it
    blender_compress.png   original (ExGS Raw pass) | compressed 100x (ExGS Raw pass)
    blender_restore.png    compressed 100x: ExGS Raw | Combined (GaussPainter)

and prints the compression stats and the PSNR of both compressed passes against the original's render.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from textwrap import dedent

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from exgs_core.images import read_png, write_png  # noqa: E402
from exgs_core.metrics import psnr  # noqa: E402
from tests.blender.blender_runner import build_zip, install_extension, run_blender  # noqa: E402
from tests.blender.exr import read_exr  # noqa: E402
from tests.conftest import SCENES_DIR  # noqa: E402

# CC-BY-4.0, "PLAYBOT" by Stephane Agullo (sa3d.fr); see ../shared/data/scenes/SOURCES.md
SCENE = SCENES_DIR / "pcengine_playbot_3_0.inria.ply"
WIDTH, HEIGHT = 480, 320
WORLD = (0.03, 0.03, 0.035)  # scene-linear world colour: a dark grey background

BLENDER_SCRIPT = """
import numpy as np
from mathutils import Vector
from bl_ext.user_default.exgs.exgs_blender import splat_object

scene = bpy.context.scene
for obj in list(bpy.data.objects):  # the factory scene's cube, light and camera
    bpy.data.objects.remove(obj)
assert bpy.ops.import_scene.gaussian_splats(filepath=args["source"], up_axis="-Y") == {"FINISHED"}
original = bpy.context.active_object

# Camera: in front of the robot (it faces -Y after the -Y-up import), a little above, slightly to the side.
means = splat_object.scene_from_object(original, world_space=True).means
low, high = np.percentile(means, 1, axis=0), np.percentile(means, 99, axis=0)
target = Vector(((low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2] + 0.42 * (high[2] - low[2])))
size = float(np.linalg.norm(high - low))
azimuth, elevation = np.radians(-75.0), np.radians(18.0)
eye = target + 1.35 * size * Vector((np.cos(azimuth) * np.cos(elevation), np.sin(azimuth) * np.cos(elevation),
                                     np.sin(elevation)))
camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
scene.collection.objects.link(camera)
camera.location = eye
camera.rotation_euler = (target - eye).to_track_quat("-Z", "Y").to_euler()
camera.data.lens = 50.0
scene.camera = camera

render = scene.render
render.resolution_x, render.resolution_y, render.resolution_percentage = args["width"], args["height"], 100
render.film_transparent = False
scene.view_settings.view_transform = "Standard"
if scene.world is None:
    scene.world = bpy.data.worlds.new("World")
scene.world.color = args["world"]
for node in scene.world.node_tree.nodes if scene.world.node_tree else []:
    if node.type == "BACKGROUND":
        node.inputs["Color"].default_value = (*args["world"], 1.0)

# Solid mode, as the viewport shows a splat object with Viewport Shading > Color > Attribute.
render.engine = "BLENDER_WORKBENCH"
shading = scene.display.shading
shading.light, shading.color_type = "FLAT", "VERTEX"  # shown as "Attribute" in the UI
render.image_settings.file_format = "PNG"
render.filepath = args["dir"] + "/solid.png"
assert bpy.ops.render.render(write_still=True) == {"FINISHED"}

# F12 through ExGS, every pass into a multilayer EXR.
render.engine = "EXGS"
scene.exgs_render.use_restore = True  # the generic GaussPainter (off by default), shipped weights
assert scene.exgs_render.weights == ""
settings = render.image_settings
settings.media_type = "MULTI_LAYER_IMAGE"
settings.exr_codec = "NONE"
settings.color_depth = "32"

def f12(name):
    render.filepath = args["dir"] + "/" + name
    assert bpy.ops.render.render(write_still=True) == {"FINISHED"}

f12("original.exr")
compress = scene.exgs_compress
compress.target, compress.ratio, compress.views, compress.result = "RATIO", 100.0, "AUTO", "NEW"
assert bpy.ops.exgs.compress() == {"FINISHED"}
result["stats"] = json.loads(bpy.context.active_object["exgs_compression"])
f12("compressed.exr")
"""


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """What Blender's Standard view transform does to a scene-linear pass."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1 / 2.4) - 0.055)


def rgb_pass(exr: Path, name: str) -> np.ndarray:
    channels = read_exr(exr)
    return linear_to_srgb(np.stack([channels[f"ViewLayer.{name}.{c}"] for c in "RGB"], axis=-1))


def quantised(image: np.ndarray) -> np.ndarray:
    """The image as the 8-bit PNG holds it, so the printed PSNR is that of the pictures."""
    return (np.round(np.clip(image, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)


def run_in_blender(work: Path) -> dict:
    print("building and installing the extension zip ...", flush=True)
    extension = install_extension(build_zip(work / "dist"), work / "blender_user")
    print(f"importing, rendering and compressing {SCENE.name} in Blender ...", flush=True)
    return run_blender(BLENDER_SCRIPT, extension, timeout=1800, args={
        "source": str(SCENE), "dir": str(work), "width": WIDTH, "height": HEIGHT, "world": list(WORLD)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=REPO_ROOT / "docs" / "figures")
    output = parser.parse_args().output_dir
    if not SCENE.is_file():
        raise SystemExit(f"readme_images: {SCENE} not found (the shared data folder next to the repository)")
    with tempfile.TemporaryDirectory(prefix="exgs_readme_") as tmp:
        work = Path(tmp)
        stats = run_in_blender(work)["stats"]
        original = quantised(rgb_pass(work / "original.exr", "ExGS Raw"))
        raw = quantised(rgb_pass(work / "compressed.exr", "ExGS Raw"))
        restored = quantised(rgb_pass(work / "compressed.exr", "Combined"))
        solid = read_png(work / "solid.png")
    output.mkdir(parents=True, exist_ok=True)
    write_png(output / "blender_solid.png", solid)
    write_png(output / "blender_compress.png", np.concatenate([original, raw], axis=1))
    write_png(output / "blender_restore.png", np.concatenate([raw, restored], axis=1))
    print(f"scene      {SCENE.name}, {WIDTH}x{HEIGHT}")
    print(f"gaussians  {stats['gaussians_before']:,} -> {stats['gaussians_after']:,}")
    print(f"bytes      {stats['bytes_before']:,} -> {stats['bytes_after']:,}")
    print(f"ratio      {stats['ratio_vs_input']:.1f}x vs the input file, "
          f"{stats['ratio_vs_inria_ply']:.1f}x vs the INRIA .ply")
    print(f"PSNR vs the original's render: ExGS Raw {float(psnr(raw, original)):.2f} dB, "
          f"Combined (GaussPainter) {float(psnr(restored, original)):.2f} dB")
    for name in ("blender_solid.png", "blender_compress.png", "blender_restore.png"):
        print(f"wrote {output / name} ({(output / name).stat().st_size / 1000:.0f} KB)")


if __name__ == "__main__":
    main()
