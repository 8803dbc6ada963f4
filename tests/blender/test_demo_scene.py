"""File > Import > ExGS Demo Scene inside real Blender (issue 22): the scene shipped inside exgs_core, with a
camera looking at it; Compress and F12 then work on it with no file of the user's."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import numpy as np

from exgs_core.data import DEMO_GAUSSIANS, demo_scene_path
from exgs_core.io import read_scene
from tests.blender.blender_runner import InstalledExtension, run_blender
from tests.blender.exr import SET_MULTILAYER_EXR, read_exr
from tests.blender.test_render_engine import _pass, _psnr

# The frame's corners of the object's bounding box as the new camera sees it, and what the scene became.
INSPECT = SET_MULTILAYER_EXR + """
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector
try:  # the splat facade (newer layout), else native_splats
    from bl_ext.user_default.exgs.exgs_blender.splats import info_of, is_splat as is_any_splat, scene_of
except ImportError:
    from bl_ext.user_default.exgs.exgs_blender.native_splats import info_of, is_any_splat, scene_of
from bl_ext.user_default.exgs.exgs_blender.operators.demo import VIEW3D_PT_exgs_demo

def inspect(obj):
    scene = bpy.context.scene
    corners = [obj.matrix_world @ Vector(c) for c in obj.bound_box]
    in_view = [tuple(world_to_camera_view(scene, scene.camera, c)) for c in corners]
    gaussians = scene_of(obj, world_space=True)
    return {"object": obj.name, "splat": is_any_splat(obj), "count": info_of(obj)["count"],
            "sh_degree": info_of(obj)["sh_degree"], "camera": scene.camera.name, "engine": scene.render.engine,
            "view_transform": scene.view_settings.view_transform, "in_view": in_view,
            "means_min": gaussians.means.min(axis=0).tolist(), "means_max": gaussians.means.max(axis=0).tolist()}
"""


def test_demo_scene_imports_in_blenders_own_python(blender_extension: InstalledExtension) -> None:
    """Blender's own Python (no torch, numba or Pillow): the menu entry, the import from the package, the camera."""
    out = run_blender(INSPECT + dedent("""
        draw = bpy.types.TOPBAR_MT_file_import._dyn_ui_initialize()
        result["menu"] = sum(getattr(f, "__name__", "") == "menu_import_demo" for f in draw)
        cameras_before = len([o for o in bpy.data.objects if o.type == "CAMERA"])
        result["panel_before"] = VIEW3D_PT_exgs_demo.poll(bpy.context)
        result["done"] = sorted(bpy.ops.import_scene.exgs_demo())
        result.update(inspect(bpy.context.active_object))
        result["panel_after"] = VIEW3D_PT_exgs_demo.poll(bpy.context)
        result["new_cameras"] = len([o for o in bpy.data.objects if o.type == "CAMERA"]) - cameras_before
        result["heavy"] = sorted(m for m in ("torch", "numba", "PIL") if m in sys.modules)
        from exgs_core.data import demo_scene_path
        with demo_scene_path() as shipped:  # inside the installed extension: the zip carries the scene
            result["shipped"] = [str(shipped).startswith(EXTENSION_DIR), shipped.stat().st_size]
        """), blender_extension, block_heavy=True)
    assert out["menu"] == 1
    assert out["panel_before"] and not out["panel_after"]  # the sidebar's button, while no splat object is there
    assert out["done"] == ["FINISHED"]
    assert out["splat"] and out["count"] == DEMO_GAUSSIANS and out["sh_degree"] == 2
    assert out["object"].startswith("playbot") and out["camera"].startswith("playbot camera")
    assert out["new_cameras"] == 1 and out["engine"] == "EXGS" and out["view_transform"] == "Standard"
    assert out["heavy"] == []
    with demo_scene_path() as path:
        assert out["shipped"] == [True, path.stat().st_size]
    # The camera frames the whole scene: every corner of its bounding box is inside the frame, in front.
    in_view = np.array(out["in_view"])
    assert np.all(in_view[:, :2] > 0.0) and np.all(in_view[:, :2] < 1.0) and np.all(in_view[:, 2] > 0), in_view
    assert in_view[:, 0].max() - in_view[:, 0].min() > 0.5 or in_view[:, 1].max() - in_view[:, 1].min() > 0.5
    # The shipped file's Gaussians, with the file's -Y up turned to Blender's +Z.
    with demo_scene_path() as path:
        means = read_scene(path).means
    blender = np.stack([means[:, 0], means[:, 2], -means[:, 1]], axis=1)
    np.testing.assert_allclose(out["means_min"], blender.min(axis=0), atol=1e-5)
    np.testing.assert_allclose(out["means_max"], blender.max(axis=0), atol=1e-5)


def test_demo_scene_compresses_and_renders_with_f12(blender_extension: InstalledExtension, tmp_path: Path) -> None:
    """No file of the user's: import the demo, F12, Compress (a quick target: keep 20%, no fitted restoration;
    fitting is tested in core), F12 again; both frames show the scene and look alike."""
    out = run_blender(INSPECT + dedent("""
        assert bpy.ops.import_scene.exgs_demo() == {"FINISHED"}
        original = bpy.context.active_object
        r = bpy.context.scene.render
        r.resolution_x, r.resolution_y, r.resolution_percentage = 160, 90, 100
        r.film_transparent = False
        set_multilayer_exr(r.image_settings)

        def f12(name):
            r.filepath = os.path.join(args["dir"], name)
            assert bpy.ops.render.render(write_still=True) == {"FINISHED"}

        f12("original.exr")
        s = bpy.context.scene.exgs_compress
        s.target, s.keep, s.fit_restoration, s.views, s.result = "KEEP", 0.2, False, "ORBIT", "NEW"
        assert bpy.ops.exgs.compress() == {"FINISHED"}
        compressed = bpy.context.active_object
        result["compressed"] = inspect(compressed)
        result["original_hidden"] = original.hide_get()
        result["status"] = s.status
        f12("compressed.exr")
        """), blender_extension, args={"dir": str(tmp_path)})
    assert out["compressed"]["splat"] and out["compressed"]["count"] == round(0.2 * DEMO_GAUSSIANS)
    assert out["original_hidden"], out["status"]
    original, compressed = read_exr(tmp_path / "original.exr"), read_exr(tmp_path / "compressed.exr")
    for channels in (original, compressed):
        alpha = channels["ViewLayer.ExGS Alpha.X"]
        assert alpha.shape == (90, 160)
        assert 0.05 < float(np.mean(alpha > 0.5)) < 0.9  # the scene is in the frame and does not fill it
    psnr = _psnr(np.clip(_pass(original, "Combined", "RGB"), 0, 1), np.clip(_pass(compressed, "Combined", "RGB"), 0, 1))
    assert psnr > 20.0, psnr
