"""Peak memory of one restored F12 at a large resolution, through the installed extension in pip bpy.

Imports the captured playbot scene, points a camera at it, sets restoration to Manual 1.0 (the shipped
GaussPainter on every pixel) and renders one frame at --size x --size into a multilayer EXR. Prints the
Blender process's peak RSS (ru_maxrss of the child) and the time. Issue 15: 13.4 GB at 4000x4000 before the
painter restored in tiles; the target is under 3 GB.

    python bench/blender_f12_memory.py [--size 4000]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.blender.blender_runner import build_zip, install_extension, run_blender  # noqa: E402
from tests.conftest import SCENES_DIR  # noqa: E402

SCRIPT = """
import resource, time
import numpy as np
from mathutils import Vector
from bl_ext.user_default.exgs.exgs_blender import splat_object
scene = bpy.context.scene
for obj in list(bpy.data.objects):
    bpy.data.objects.remove(obj)
assert bpy.ops.import_scene.gaussian_splats(filepath=args["source"]) == {"FINISHED"}
means = splat_object.scene_from_object(bpy.context.active_object).means
low, high = np.percentile(means, 1, axis=0), np.percentile(means, 99, axis=0)
target = Vector(((low + high) / 2).tolist())
eye = target + float(np.linalg.norm(high - low)) * Vector((0.3, -1.2, 0.4))
camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
scene.collection.objects.link(camera)
camera.location = eye
camera.rotation_euler = (target - eye).to_track_quat("-Z", "Y").to_euler()
scene.camera = camera
r = scene.render
r.engine, r.resolution_x, r.resolution_y, r.resolution_percentage = "EXGS", args["size"], args["size"], 100
scene.exgs_render.strength_mode, scene.exgs_render.strength = "MANUAL", 1.0
r.image_settings.media_type = "MULTI_LAYER_IMAGE"
r.image_settings.exr_codec = "ZIP"
r.filepath = args["out"]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
start = time.perf_counter()
assert bpy.ops.render.render(write_still=True) == {"FINISHED"}
result.update(seconds=time.perf_counter() - start, before_gb=before,
              peak_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4000)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="exgs_f12_memory_") as tmp:
        extension = install_extension(build_zip(Path(tmp) / "build"), Path(tmp) / "user")
        out = run_blender(SCRIPT, extension, timeout=7200, args={
            "source": str(SCENES_DIR / "pcengine_playbot_3_0.inria.ply"), "size": options.size,
            "out": str(Path(tmp) / "f12.exr")})
    print(f"F12 {options.size}x{options.size}, restored (Manual 1.0): peak RSS of Blender {out['peak_gb']:.2f} GB "
          f"(after import {out['before_gb']:.2f} GB), {out['seconds']:.0f} s")


if __name__ == "__main__":
    main()
