"""Render farms (Flamenco, Deadline, Afanasy): each worker runs `blender -b shot.blend -s A -e B -a` with its own
Blender, no preferences set and no one at the screen. Here each pip `bpy` process of the current Blender stands in
for one worker; the runtime comes from the environment variable EXGS_PYTHON, as the README's "Render farms" says.

- Frames are deterministic: frames 1-6 rendered by one worker equal, byte for byte, frames 1-3 and 4-6 rendered
  by two, raw and restored by the object's fitted restoration.
- A frame that cannot be computed fails with an error naming the cause (a missing runtime, an object's
  non-uniform scale, restoration weights that are not there), and no file is written in its place.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from exgs_core.images import read_png
from tests.blender.blender_runner import InstalledExtension, run_blender
from tests.conftest import requires_data
from tests.fitted_data import fitted_koala

pytestmark = requires_data

FRAMES = 6

SHOT = """
import math
from mathutils import Vector
from bl_ext.user_default.exgs.exgs_blender import splats
scene = bpy.context.scene
for obj in list(bpy.data.objects):
    bpy.data.objects.remove(obj)
assert bpy.ops.import_scene.gaussian_splats(filepath=args["exgs"], up_axis="+Z") == {"FINISHED"}
koala = bpy.context.active_object
result["fitted"] = splats.restoration_of(koala) is not None
corners = [koala.matrix_world @ Vector(c) for c in koala.bound_box]
centre = sum(corners, Vector()) / 8
radius = max((c - centre).length for c in corners)
camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
scene.collection.objects.link(camera)
scene.camera = camera
for frame in range(1, args["frames"] + 1):  # an orbit: every frame differs
    angle = 0.4 * frame
    camera.location = centre + 2.5 * radius * Vector((math.cos(angle), math.sin(angle), 0.4))
    camera.rotation_euler = (centre - camera.location).to_track_quat("-Z", "Y").to_euler()
    camera.keyframe_insert("location", frame=frame)
    camera.keyframe_insert("rotation_euler", frame=frame)
r = scene.render
r.engine, r.resolution_x, r.resolution_y, r.resolution_percentage = "EXGS", 64, 48, 100
r.image_settings.file_format = "PNG"
r.image_settings.color_mode, r.image_settings.color_depth = "RGBA", "16"
# The metadata Blender writes into each file that changes between runs (wall-clock date, render time, host):
# without it, equal pixels make equal files.
r.use_stamp_date = r.use_stamp_render_time = r.use_stamp_memory = r.use_stamp_hostname = False
scene.frame_start, scene.frame_end = 1, args["frames"]
bpy.ops.wm.save_as_mainfile(filepath=args["blend"])
"""

# One farm worker: `blender -b shot.blend -s START -e END -a`, raw and restored.
WORKER = """
from bl_ext.user_default.exgs.exgs_blender import runtime
bpy.ops.wm.open_mainfile(filepath=args["blend"])
scene = bpy.context.scene
scene.frame_start, scene.frame_end = args["start"], args["end"]
for name, fitted in (("restored", True), ("raw", False)):
    scene.exgs_render.use_fitted = fitted
    scene.render.filepath = args["dir"] + "/" + name + "/####"
    assert bpy.ops.render.render(animation=True) == {"FINISHED"}
result["source"] = runtime.runtime_source()
runtime.shutdown()
"""

FAILURES = """
import os
from bl_ext.user_default.exgs.exgs_blender import runtime

def frame_error(name):
    bpy.context.scene.render.filepath = args["dir"] + "/" + name + "/####"
    try:
        bpy.ops.render.render(animation=True)
    except RuntimeError as error:
        return str(error)
    return ""

bpy.ops.wm.open_mainfile(filepath=args["blend"])
scene = bpy.context.scene
scene.frame_start, scene.frame_end = 2, 3
os.environ["EXGS_PYTHON"] = args["missing_python"]
result["missing_runtime"] = frame_error("missing_runtime")
os.environ["EXGS_PYTHON"] = args["python"]
koala = [o for o in scene.objects if o.type != "CAMERA"][0]
koala.scale = (1.0, 1.5, 1.0)
result["scale"] = frame_error("scale")
koala.scale = (1.0, 1.0, 1.0)
scene.exgs_render.use_fitted = False
scene.exgs_render.use_restore, scene.exgs_render.weights = True, args["no_weights"]  # GaussPainter, no weights
result["weights"] = frame_error("weights")
runtime.shutdown()
"""


@pytest.fixture(scope="module")
def shot(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(folder, koala .exgs): a compressed object with a fitted restoration (strength 1)."""
    folder = tmp_path_factory.mktemp("farm")
    (folder / "koala.exgs").write_bytes(fitted_koala())
    return folder, folder / "koala.exgs"


@pytest.fixture(scope="module")
def shot_blend(blender_extension: InstalledExtension, shot) -> tuple[Path, dict]:
    """(shot.blend of FRAMES frames, what SHOT reported), made once per Blender: both tests only read it (the
    workers open it and render, FAILURES changes it in memory), so the failure test need not make its own."""
    _current_blender(blender_extension)
    folder, exgs = shot
    blend = folder / f"shot-{blender_extension.blender.label}.blend"
    made = run_blender(SHOT, blender_extension, worker=False,
                       args={"exgs": str(exgs), "blend": str(blend), "frames": FRAMES})
    return blend, made


def _farm_worker(extension: InstalledExtension, blend: Path, out: Path, start: int, end: int) -> dict:
    return run_blender(WORKER, extension, worker=False, extra_env={"EXGS_PYTHON": sys.executable},
                       args={"blend": str(blend), "dir": str(out), "start": start, "end": end})


def _current_blender(extension: InstalledExtension) -> None:
    if extension.blender.version < (5, 3, 0):
        pytest.skip("farms run the current Blender; the runtime's resolution is the same in 4.5")


def test_frames_from_one_worker_equal_frames_from_two(blender_extension: InstalledExtension, shot_blend,
                                                      tmp_path: Path) -> None:
    blend, made = shot_blend
    assert made["fitted"]
    one = _farm_worker(blender_extension, blend, tmp_path / "one", 1, FRAMES)
    _farm_worker(blender_extension, blend, tmp_path / "two", 1, FRAMES // 2)
    _farm_worker(blender_extension, blend, tmp_path / "two", FRAMES // 2 + 1, FRAMES)
    assert "EXGS_PYTHON" in one["source"] and sys.executable in one["source"]
    for kind in ("raw", "restored"):
        names = [f"{frame:04d}.png" for frame in range(1, FRAMES + 1)]
        assert sorted(p.name for p in (tmp_path / "one" / kind).iterdir()) == names
        for name in names:
            single, split = (tmp_path / part / kind / name for part in ("one", "two"))
            assert np.array_equal(read_png(single), read_png(split)), f"{kind} frame {name}: other pixels"
            assert single.read_bytes() == split.read_bytes(), f"{kind} frame {name} differs between workers"
    raw, restored = (read_png(tmp_path / "one" / kind / "0003.png").astype(np.float64) for kind in ("raw", "restored"))
    change = float(np.abs(restored - raw).mean())  # read_png: values in [0, 1]
    assert raw.std() > 0.02 and change > 1e-3, f"the frames show the koala, restored ({change})"


def test_a_frame_that_cannot_be_computed_fails_and_writes_nothing(blender_extension: InstalledExtension, shot_blend,
                                                                  tmp_path: Path) -> None:
    blend, _ = shot_blend  # frames 2-3 of it are rendered (FAILURES sets the range)
    missing = tmp_path / "no-runtime" / "bin" / "python"
    out = run_blender(FAILURES, blender_extension, worker=False, extra_env={"EXGS_PYTHON": sys.executable},
                      args={"blend": str(blend), "dir": str(tmp_path), "missing_python": str(missing),
                            "python": sys.executable, "no_weights": str(tmp_path / "no-weights")})
    assert str(missing) in out["missing_runtime"] and "ExGS" in out["missing_runtime"]
    assert "'koala'" in out["scale"] and "Scale X, Y and Z" in out["scale"]
    assert "not written" in out["weights"] and "GaussPainter" in out["weights"]
    for name in ("missing_runtime", "scale", "weights"):
        written = sorted((tmp_path / name).rglob("*")) if (tmp_path / name).exists() else []
        assert written == [], f"{name}: {written}"
