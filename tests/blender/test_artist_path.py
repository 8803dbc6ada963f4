"""The artist's path inside real Blender (issue 15): default scoring views from the camera path, warnings on
re-compression and unreachable targets, messages that say what to do (mesh PLY, non-uniform scale, applied
display modifier, `//` weights), and a viewport that stays responsive on a 1M-Gaussian scene."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import numpy as np
import pytest

from exgs_core.io import read_scene, write_scene
from exgs_core.scene import GaussianScene
from tests.blender.blender_runner import InstalledExtension, run_blender
from tests.blender.exr import read_exr
from tests.blender.test_render_engine import CAMERA, MINUS_Y_UP, SETUP, WORLD, _camera_matrix, _pass
from tests.conftest import MESH2SPLAT_DIR, random_gaussians, requires_data

pytestmark = requires_data

MESH_PLY = """ply
format ascii 1.0
element vertex 3
property float x
property float y
property float z
property uchar red
property uchar green
property uchar blue
element face 1
property list uchar int vertex_indices
end_header
0 0 0 255 0 0
1 0 0 0 255 0
0 1 0 0 0 255
3 0 1 2
"""


@pytest.fixture(scope="module")
def small_splat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("artist") / "cat1500.splat"
    write_scene(random_gaussians(MESH2SPLAT_DIR / "cat.splat", 1500, seed=2), path)
    return path


def test_defaults_warnings_and_messages(blender_extension: InstalledExtension, small_splat: Path,
                                        tmp_path: Path) -> None:
    import torch

    from exgs_core.painter.baseline import PixelUNet
    from exgs_core.painter.weights import save_painter

    model = PixelUNet(channels=(4, 8))
    torch.nn.init.constant_(model.out.bias, 0.15)  # a visible "restoration": rgb + 0.15
    save_painter(model, tmp_path / "blend" / "weights")
    (tmp_path / "mesh.ply").write_text(MESH_PLY)
    scene = read_scene(small_splat).transformed(MINUS_Y_UP)
    matrix = _camera_matrix(scene, 2.0)
    out = run_blender(SETUP + dedent("""
        from bl_ext.user_default.exgs.exgs_blender import properties
        from bl_ext.user_default.exgs.exgs_blender.ui.panels import view_transform_hint

        def error_of(call):
            try:
                call()
            except (RuntimeError, ValueError) as error:
                return str(error)
            return ""

        scene = bpy.context.scene
        scene.view_settings.view_transform = "AgX"
        result["agx"] = view_transform_hint(scene)
        scene.view_settings.view_transform = "Standard"
        result["standard"] = view_transform_hint(scene)
        result["mesh_ply"] = error_of(lambda: bpy.ops.import_scene.gaussian_splats(filepath=args["mesh"]))
        scene = bpy.context.scene
        assert bpy.ops.import_scene.gaussian_splats(filepath=args["source"]) == {"FINISHED"}
        original = bpy.context.active_object
        setup_render(scene, args["matrix"])
        s = scene.exgs_compress
        s.target, s.keep = "KEEP", 0.5
        s.fit_restoration = False  # views, warnings and messages here; fitting is tested in core and at F12

        def compress(views):
            for obj in bpy.context.view_layer.objects:
                obj.select_set(False)
            original.hide_set(False)
            bpy.context.view_layer.objects.active = original
            s.views = views
            assert bpy.ops.exgs.compress() == {"FINISHED"}
            result_object = bpy.context.active_object
            return result_object, splats.scene_of(result_object).means.tolist(), s.status

        # A still camera: the default scores from the orbit; an animated one: from its path.
        still = compress("AUTO")
        orbit = compress("ORBIT")
        cam = scene.camera
        scene.frame_start, scene.frame_end = 1, 3
        cam.keyframe_insert("location", frame=1)
        cam.location.x += 0.3 * max(original.dimensions)
        cam.keyframe_insert("location", frame=3)
        scene.frame_set(1)
        s.path_views = 3
        path_default = compress("AUTO")
        path = compress("ACTIVE_PATH")
        result["still"] = [still[1] == orbit[1], still[2]]
        result["path"] = [path_default[1] == path[1], path_default[1] != orbit[1], path_default[2],
                          properties.read_stats(path_default[0])["scoring_views"]]

        # Compressing a compressed object again warns, and the name does not grow "ExGS ExGS".
        compressed = path[0]
        bpy.context.view_layer.objects.active = compressed
        assert bpy.ops.exgs.compress() == {"FINISHED"}
        result["again"] = [s.status, bpy.context.active_object.name]

        # "New, Delete Original": only the compressed object (and no orphan mesh) is left to save.
        again = bpy.context.active_object
        gone, gone_mesh = again.name, again.data.name
        bpy.context.view_layer.objects.active = again
        s.result = "NEW_DELETE"
        assert bpy.ops.exgs.compress() == {"FINISHED"}
        s.result = "NEW"
        result["deleted"] = [gone in bpy.data.objects, gone_mesh in bpy.data.meshes or gone_mesh in bpy.data.pointclouds,
                             bpy.context.active_object.name != gone]

        # An unreachable target is reported (every Gaussian of this SH-0 scene kept is smaller than 10x).
        s.target, s.ratio = "RATIO", 10.0
        bpy.context.view_layer.objects.active = original
        assert bpy.ops.exgs.compress() == {"FINISHED"}
        result["unreachable"] = s.status

        # Weights relative to the .blend: refused while unsaved, used once saved.
        scene.exgs_render.weights = "//weights"
        result["unsaved_weights"] = error_of(lambda: engine.weights_folder(scene.exgs_render))
        bpy.ops.wm.save_as_mainfile(filepath=args["blend"])
        result["weights"] = engine.weights_folder(scene.exgs_render)
        for obj in list(bpy.context.view_layer.objects):
            if splats.is_splat(obj) and obj != original:
                bpy.data.objects.remove(obj)
        original.hide_set(False)
        original.hide_render = False
        scene.exgs_render.use_restore = True  # the generic painter (off by default)
        scene.exgs_render.strength_mode, scene.exgs_render.strength = "MANUAL", 1.0
        f12(args["dir"] + "/relative_weights.exr")

        # Non-uniform scale names the object and the fix.
        depsgraph = bpy.context.evaluated_depsgraph_get()
        original.scale = (1.0, 2.0, 1.0)
        depsgraph = bpy.context.evaluated_depsgraph_get()
        result["scale"] = error_of(lambda: engine.world_parts(engine.splat_objects(depsgraph)))
        original.scale = (1.0, 1.0, 1.0)

        # Applying the display modifier of a mesh-based splat object (4.5) destroys the Gaussians: the panel and
        # F12 say what happened. Native splat objects (5.3) have no such modifier.
        result["kind"] = original.type
        if original.type == "MESH":
            bpy.context.view_layer.objects.active = original
            original.select_set(True)
            bpy.ops.object.modifier_apply(modifier="ExGS Points")
            result["applied_panel"] = splats.problem_of(original)
            depsgraph = bpy.context.evaluated_depsgraph_get()
            result["applied_f12"] = error_of(lambda: engine.world_parts(engine.splat_objects(depsgraph)))
    """), blender_extension,
        args={"source": str(small_splat), "mesh": str(tmp_path / "mesh.ply"), "dir": str(tmp_path),
              "blend": str(tmp_path / "blend" / "scene.blend"), "camera": CAMERA, "world": list(WORLD),
              "matrix": matrix.tolist()})
    assert "AgX view transform changes" in out["agx"] and "Standard" in out["agx"] and out["standard"] is None
    assert "mesh or point-cloud PLY" in out["mesh_ply"] and "File > Import > Stanford PLY" in out["mesh_ply"]
    assert out["still"][0] and "24 orbit views (no animated camera)" in out["still"][1]
    same, differs, status, views = out["path"]
    assert same and differs and "the camera path (3 views" in status and views == 3
    assert "already compressed" in out["again"][0] and "ExGS ExGS" not in out["again"][1]
    assert out["deleted"] == [False, False, True]
    assert "target 10x not reachable" in out["unreachable"], out["unreachable"]
    assert "relative to the .blend" in out["unsaved_weights"]
    assert out["weights"] == str(tmp_path / "blend" / "weights")
    channels = read_exr(tmp_path / "relative_weights.exr")
    raw, combined = _pass(channels, "ExGS Raw", "RGB"), _pass(channels, "Combined", "RGB")
    assert np.mean(combined - raw) > 0.05  # the //weights painter (+0.15 in sRGB) was used
    assert "'cat1500'" in out["scale"] and "non-uniform scale" in out["scale"] and "Scale X, Y and Z" in out["scale"]
    assert out["kind"] == ("POINTCLOUD" if blender_extension.blender.version >= (5, 3) else "MESH")
    if out["kind"] == "MESH":
        for message in (out["applied_panel"], out["applied_f12"]):
            assert "'ExGS Points' modifier was applied" in message and "Ctrl+Z" in message


def test_viewport_update_of_a_million_gaussians_is_instant(blender_extension: InstalledExtension,
                                                           tmp_path: Path) -> None:
    """view_update only finds what changed; the 1M-Gaussian world scene is built on the renderer's thread.

    Measured by what each call allocates (tracemalloc sees numpy's arrays, so any read of the Gaussians), not by
    its time, which another test process on the same cores can stretch: an update that re-read the 1M
    positions alone would allocate 12 MB. The times are printed."""
    parts = [read_scene(path) for path in sorted(MESH2SPLAT_DIR.glob("*.splat"))[:10]]
    path = tmp_path / "million.splat"
    write_scene(GaussianScene.concatenate(parts), path)
    out = run_blender(SETUP + dedent("""
        import threading
        import tracemalloc
        assert bpy.ops.import_scene.gaussian_splats(filepath=args["source"]) == {"FINISHED"}
        obj = bpy.context.active_object
        result["count"] = splats.point_count(obj.data)
        tracemalloc.start()

        def measured(name, call):
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            start = time.perf_counter()
            value = call()
            result.setdefault(name + "_seconds", []).append(time.perf_counter() - start)
            result.setdefault(name + "_bytes", []).append(tracemalloc.get_traced_memory()[1] - before)
            return value

        depsgraph = bpy.context.evaluated_depsgraph_get()
        first = measured("first", lambda: engine.viewport_parts(depsgraph, first=True))
        depsgraph = bpy.context.evaluated_depsgraph_get()
        for _ in range(3):
            again = measured("again", lambda: engine.viewport_parts(depsgraph, first=False))
        result["same_key"] = again.key == first.key
        built = {}

        def build_on_a_thread():
            thread = threading.Thread(target=lambda: built.update(scene=again.build()))
            thread.start()
            thread.join()
        measured("build", build_on_a_thread)
        obj.location.x += 1.0
        depsgraph = bpy.context.evaluated_depsgraph_get()
        moved = measured("moved", lambda: engine.viewport_parts(depsgraph, first=False))
        result["moved_key"] = moved.key != first.key
        shift = moved.build().means[:1000] - built["scene"].means[:1000]
        result["moved_by"] = shift.mean(axis=0).tolist()
    """), blender_extension, args={"source": str(path), "camera": CAMERA, "world": list(WORLD)})
    assert out["count"] == 1_000_000
    assert out["build_bytes"][0] > 12_000_000, out  # the build reads the Gaussians (tracemalloc sees it)...
    assert max(out["again_bytes"]) < 1_000_000, out  # ... an unchanged update reads none of them
    assert max(out["moved_bytes"]) < 1_000_000, out  # ... nor one that moved an object
    assert out["same_key"] and out["moved_key"]
    np.testing.assert_allclose(out["moved_by"], [1.0, 0.0, 0.0], atol=1e-4)
    print({k: v for k, v in out.items() if "seconds" in k or "bytes" in k})
