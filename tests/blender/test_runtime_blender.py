"""The runtime inside real Blender: without torch (Blender's own Python) and through the worker process;
GaussPainter restoration from a weights folder; the viewport's frame computation (no GPU needed)."""

from __future__ import annotations

import sys
from pathlib import Path
from textwrap import dedent

import numpy as np
import pytest

from exgs_core.io import read_scene, write_scene
from tests.blender.blender_runner import InstalledExtension, run_blender
from tests.blender.exr import read_exr
from tests.blender.test_render_engine import (CAMERA, MINUS_Y_UP, SETUP, WORLD, _camera_matrix, _expected, _pass,
                                              _psnr, _srgb)
from tests.conftest import MESH2SPLAT_DIR, random_gaussians, requires_data

pytestmark = requires_data


@pytest.fixture(scope="module")
def small_splat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("runtime") / "cat1500.splat"
    write_scene(random_gaussians(MESH2SPLAT_DIR / "cat.splat", 1500, seed=2), path)
    return path


def test_without_torch_then_worker(blender_extension: InstalledExtension, small_splat: Path, tmp_path: Path) -> None:
    """Blender's own Python: clear messages; then "use an existing Python": F12 and compress via the worker."""
    scene = read_scene(small_splat).transformed(MINUS_Y_UP)
    matrix = _camera_matrix(scene, 2.0)
    out = run_blender(SETUP + dedent("""
        from bl_ext.user_default.exgs.exgs_blender import runtime
        scene = bpy.context.scene
        assert bpy.ops.import_scene.gaussian_splats(filepath=args["source"]) == {"FINISHED"}
        obj = bpy.context.active_object
        setup_render(scene, args["matrix"])
        result["in_process"] = runtime.in_process_available()
        result["problem"] = runtime.runtime_problem()
        try:
            bpy.ops.exgs.compress()
        except RuntimeError as error:
            result["compress_error"] = str(error)
        result["objects"] = len(bpy.data.objects)

        prefs = bpy.context.preferences.addons[runtime.ADDON_ID].preferences
        prefs.python_path = args["python"]
        result["problem_with_python"] = runtime.runtime_problem()
        result["kind"] = runtime.get_runtime().name
        f12(args["dir"] + "/worker.exr")
        scene.exgs_compress.target, scene.exgs_compress.keep, scene.exgs_compress.views = "KEEP", 0.5, "CAMERAS"
        scene.exgs_compress.fit_restoration = False
        result["compress"] = sorted(bpy.ops.exgs.compress())
        result["count"] = splats.info_of(bpy.context.active_object)["count"]
        # Again, in place and scored along the active camera's path (frames 1-3, 2 sampled views).
        compressed, objects_before = bpy.context.active_object, len(bpy.data.objects)
        scene.frame_start, scene.frame_end = 1, 3
        s = scene.exgs_compress
        s.views, s.path_views, s.result = "ACTIVE_PATH", 2, "REPLACE"
        result["replace"] = sorted(bpy.ops.exgs.compress())
        result["replaced"] = (bpy.context.active_object == compressed, len(bpy.data.objects) == objects_before,
                              splats.info_of(compressed)["count"])
        result["replace_stats"] = json.loads(compressed["exgs_compression"])
        runtime.shutdown()
    """), blender_extension, block_heavy=True, worker=False,
        args={"source": str(small_splat), "dir": str(tmp_path), "camera": CAMERA, "world": list(WORLD),
              "matrix": matrix.tolist(), "python": sys.executable})
    assert not out["in_process"]
    assert "torch and numba" in out["problem"] and "pip install" in out["problem"]
    assert "ExGS compress" in out["compress_error"] and "torch and numba" in out["compress_error"]
    assert out["problem_with_python"] is None and out["kind"] == "worker"
    channels = read_exr(tmp_path / "worker.exr")
    expected = _expected(scene, matrix)
    assert _psnr(_srgb(_pass(channels, "ExGS Raw", "RGB")), expected.rgb.numpy()) >= 40
    assert out["compress"] == ["FINISHED"] and out["count"] == 750
    assert out["replace"] == ["FINISHED"] and out["replaced"] == [True, True, 375]
    assert out["replace_stats"]["scoring_views"] == 2 and out["replace_stats"]["gaussians_before"] == 750


def test_restoration_and_viewport_frames(blender_extension: InstalledExtension, small_splat: Path,
                                         tmp_path: Path) -> None:
    import torch

    from exgs_core.painter.baseline import PixelUNet
    from exgs_core.painter.restore import restore
    from exgs_core.painter.weights import load_painter, save_painter

    model = PixelUNet(channels=(4, 8))
    torch.nn.init.constant_(model.out.bias, 0.15)  # a visible, predictable "restoration": rgb + 0.15
    save_painter(model, tmp_path / "weights")
    scene = read_scene(small_splat).transformed(MINUS_Y_UP)
    matrix = _camera_matrix(scene, 2.0)
    out = run_blender(SETUP + dedent("""
        import time
        from bl_ext.user_default.exgs.exgs_blender import runtime
        scene = bpy.context.scene
        assert bpy.ops.import_scene.gaussian_splats(filepath=args["source"]) == {"FINISHED"}
        setup_render(scene, args["matrix"])
        scene.exgs_render.use_restore = True  # the generic painter's path (off by default)
        scene.exgs_render.weights = args["weights"]
        f12(args["dir"] + "/auto.exr")  # strength by compression: a never-compressed object is not restored
        imported = bpy.context.active_object
        strengths = []
        for ratio in (None, 30.0, (60.0 * 100.0) ** 0.5, 200.0):
            if ratio is not None:
                imported.data["exgs_inria_ratio"] = ratio
            strengths.append(engine.generic_strength(scene.exgs_render, engine.object_restoration(imported).ratio))
        del imported.data["exgs_inria_ratio"]
        result["auto_strengths"] = strengths
        scene.exgs_render.strength_mode, scene.exgs_render.strength = "MANUAL", 1.0
        f12(args["dir"] + "/restored.exr")

        # Viewport: the camera from region-style matrices equals the render camera; frames come from a thread.
        depsgraph = bpy.context.evaluated_depsgraph_get()
        cam = scene.camera
        r = scene.render
        w, h = r.resolution_x * r.resolution_percentage // 100, r.resolution_y * r.resolution_percentage // 100
        projection = np.array(cam.calc_matrix_camera(depsgraph, x=w, y=h))
        view_camera = engine.camera_from_matrices(w, h, projection, np.array(cam.matrix_world.inverted()))
        result["same_camera"] = view_camera.isclose(engine.render_camera(scene, cam), atol=1e-3)
        rt = runtime.get_runtime()
        objects = engine.splat_objects(depsgraph, viewport=True)
        key, world = engine.world_scene(objects)
        published = []
        renderer = engine.ViewportRenderer(runtime.get_runtime, lambda: published.append(renderer.latest()[2]))
        renderer.request(engine.ViewRequest(key, view_camera, (0.1, 0.2, 0.3), (), None, 0.5, 0.05, scene=world))
        assert renderer.wait_final(120), renderer.error
        renderer.stop()
        result["published"] = published
        request, frame, final = renderer.latest()
        direct = rt.render(key, view_camera, (0.1, 0.2, 0.3))
        result["viewport_shape"] = list(frame.raw.shape)
        result["viewport_equal"] = bool(np.array_equal(frame.raw, direct.raw))

        # Per-object cache: unchanged data is not read again; new data is.
        obj = objects[0].original
        cached = engine._object_cache[obj.name_full].local
        result["cache_kept"] = engine.world_scene(objects)[0] == key and engine._object_cache[obj.name_full].local is cached
        splats.replace_splats(obj, splats.scene_of(obj, world_space=False).subset(slice(0, 100)))
        new_key, new_world = engine.world_scene(engine.splat_objects(bpy.context.evaluated_depsgraph_get()))
        result["cache_refreshed"] = new_key != key and len(new_world) == 100
        # Several splat objects render as one scene, each with its own transform.
        twin = bpy.data.objects.new("twin", obj.data)
        scene.collection.objects.link(twin)
        twin.matrix_world = Matrix.Translation((0.5, 0.0, 0.0)) @ obj.matrix_world
        both = engine.world_scene(engine.splat_objects(bpy.context.evaluated_depsgraph_get()))[1]
        single = splats.scene_of(obj)
        halves = [both.means[:100] - single.means, both.means[100:] - single.means]  # in depsgraph order
        moved = [np.allclose(h, [0.5, 0.0, 0.0], atol=1e-5) for h in halves]
        still = [np.allclose(h, 0.0, atol=1e-6) for h in halves]
        result["two_objects"] = [len(both), sorted(moved) == [False, True] and moved == [not m for m in still]]
    """), blender_extension,
        args={"source": str(small_splat), "dir": str(tmp_path), "camera": CAMERA, "world": list(WORLD),
              "matrix": matrix.tolist(), "weights": str(tmp_path / "weights")})
    auto = read_exr(tmp_path / "auto.exr")
    np.testing.assert_array_equal(_pass(auto, "Combined", "RGBA"), _pass(auto, "ExGS Raw", "RGBA"))
    assert out["auto_strengths"] == pytest.approx([0.0, 0.0, 0.5, 1.0])
    channels = read_exr(tmp_path / "restored.exr")
    expected = _expected(scene, matrix)
    raw = _srgb(_pass(channels, "ExGS Raw", "RGB"))
    combined = _srgb(_pass(channels, "Combined", "RGB"))
    assert _psnr(raw, expected.rgb.numpy()) >= 40
    painter = load_painter(tmp_path / "weights")
    restored = restore(expected.rgb.numpy(), expected.alpha.numpy(), painter)
    assert _psnr(combined, restored) >= 40 and _psnr(combined, raw) < 25
    assert out["same_camera"]
    assert out["published"][0] is False and out["published"][-1] is True  # quick raw frame first, then full
    assert out["viewport_shape"] == [64, 96, 3] and out["viewport_equal"]
    assert out["cache_kept"] and out["cache_refreshed"]
    assert out["two_objects"] == [200, True]
