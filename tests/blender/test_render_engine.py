"""The EXGS render engine and the compress operator inside real Blender (the installed extension zip).

One Blender process imports a real scene with the operator, renders it with F12, compresses it with the
operator (after a cancelled compress job that must leave it untouched), renders again and saves the .blend.
The renders must match exgs_core's own render of the same camera; a fresh process reloads the .blend and must
render identically and then renders two frames of an animated camera and object (test_runtime_blender.py
covers restoration, the worker inside Blender and the viewport's frame computation).
"""

from __future__ import annotations

import functools
from pathlib import Path
from textwrap import dedent

import numpy as np
import pytest

from exgs_core.camera import Camera, blender_camera_to_camera, look_at
from exgs_core.io import read_scene, write_scene
from exgs_core.io.exgs import Restoration, encode_exgs, with_restoration
from exgs_core.painter.fit import restoration_module
from exgs_core.painter.restore import restore
from exgs_core.painter.strength import strength_for_ratio
from exgs_core.painter.weights import load_painter
from exgs_core.render import render
from exgs_core.scene import GaussianScene
from tests.blender.blender_runner import InstalledExtension, run_blender
from tests.blender.exr import SET_MULTILAYER_EXR, read_exr
from tests.conftest import MESH2SPLAT_DIR, random_gaussians, requires_data
from tests.fitted_data import WIDE_CAMERA, dilated, fitted_koala, side_by_side

pytestmark = requires_data

MINUS_Y_UP = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
WORLD = (0.05, 0.1, 0.2)  # scene-linear world colour
# Blender camera settings of the tests: 192x128 at 50% -> 96x64, shifted, vertical sensor fit.
CAMERA = {"lens_mm": 40.0, "sensor_width_mm": 36.0, "sensor_height_mm": 30.0, "sensor_fit": "VERTICAL",
          "shift_x": 0.05, "shift_y": -0.03, "resolution_x": 192, "resolution_y": 128,
          "resolution_percentage": 50, "pixel_aspect_x": 1.0, "pixel_aspect_y": 1.0}

SETUP = SET_MULTILAYER_EXR + """
import time
import numpy as np
from mathutils import Matrix
from bl_ext.user_default.exgs.exgs_blender import splats, engine
from bl_ext.user_default.exgs.exgs_blender.operators import compress as compress_ops

def setup_render(scene, camera_matrix):
    c = args["camera"]
    if scene.camera is None:
        cam = bpy.data.objects.new("ExGS Test Camera", bpy.data.cameras.new("ExGS Test Camera"))
        scene.collection.objects.link(cam)
        scene.camera = cam
    data = scene.camera.data
    data.lens, data.sensor_width, data.sensor_height = c["lens_mm"], c["sensor_width_mm"], c["sensor_height_mm"]
    data.sensor_fit, data.shift_x, data.shift_y = c["sensor_fit"], c["shift_x"], c["shift_y"]
    scene.camera.matrix_world = Matrix(camera_matrix)
    r = scene.render
    r.resolution_x, r.resolution_y, r.resolution_percentage = c["resolution_x"], c["resolution_y"], c["resolution_percentage"]
    r.engine = "EXGS"
    r.film_transparent = False
    if scene.world is None:
        scene.world = bpy.data.worlds.new("World")
    scene.world.color = args["world"]
    background = [n for n in scene.world.node_tree.nodes if n.type == "BACKGROUND"] if scene.world.node_tree else []
    if background:  # Blender 5 worlds always use nodes: the Background node's colour is the world colour
        background[0].inputs["Color"].default_value = (*args["world"], 1.0)
        background[0].inputs["Strength"].default_value = 1.0
    scene.view_layers[0].use_pass_z = True
    set_multilayer_exr(r.image_settings)

def save_world(obj, path):
    s = splats.scene_of(obj, world_space=True)
    np.savez(path, means=s.means, quats=s.quats, log_scales=s.log_scales, opacity_logits=s.opacity_logits, sh=s.sh)

def f12(path):
    bpy.context.scene.render.filepath = path
    assert bpy.ops.render.render(write_still=True) == {"FINISHED"}
"""


def _srgb(linear: np.ndarray) -> np.ndarray:
    x = np.clip(linear, 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1 / 2.4) - 0.055)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def _pass(channels: dict[str, np.ndarray], name: str, letters: str) -> np.ndarray:
    return np.stack([channels[f"ViewLayer.{name}.{c}"] for c in letters], axis=-1)


def _camera_matrix(scene: GaussianScene, azimuth: float) -> np.ndarray:
    """A Blender camera matrix_world (-Z forward, +Y up) looking at the scene's centre from `azimuth`."""
    centre = np.median(scene.means, axis=0)
    radius = float(np.percentile(np.linalg.norm(scene.means - centre, axis=1), 95))
    eye = centre + 3.2 * radius * np.array([np.cos(azimuth), np.sin(azimuth), 0.35])
    world_to_camera = look_at(eye, centre, np.array([0.0, 0.0, 1.0]))  # OpenCV axes
    return np.linalg.inv(world_to_camera) @ np.diag([1.0, -1.0, -1.0, 1.0])


def _expected(scene: GaussianScene, matrix: np.ndarray, background=WORLD):
    camera: Camera = blender_camera_to_camera(**CAMERA, matrix_world=matrix)
    return render(scene, camera, background=tuple(_srgb(np.array(background))))


def _load(path: Path) -> GaussianScene:
    with np.load(path) as data:
        return GaussianScene(data["means"], data["quats"], data["log_scales"], data["opacity_logits"], data["sh"])


@functools.cache
def default_painter():
    return load_painter()


def _assert_matches(exr: Path, scene: GaussianScene, matrix: np.ndarray, strength: float = 0.0) -> None:
    """The passes match exgs_core's render; Combined is the raw pass restored at `strength` (0: the raw pass)."""
    channels = read_exr(exr)
    expected = _expected(scene, matrix)
    raw, combined = _pass(channels, "ExGS Raw", "RGBA"), _pass(channels, "Combined", "RGBA")
    assert raw.shape == (64, 96, 4)
    assert _psnr(_srgb(raw[..., :3]), expected.rgb.numpy()) >= 40
    if strength == 0.0:
        np.testing.assert_array_equal(combined, raw)
    else:  # restoration with the shipped weights, on by default
        restored = restore(expected.rgb.numpy(), expected.alpha.numpy(), default_painter(), strength)
        assert _psnr(_srgb(combined[..., :3]), restored) >= 40
    alpha = channels["ViewLayer.ExGS Alpha.X"]
    assert _psnr(alpha, expected.alpha.numpy()) >= 40 and alpha.max() > 0.9 and alpha.min() < 0.01
    hit = expected.alpha.numpy() > 0.5
    np.testing.assert_allclose(channels["ViewLayer.Depth.Z"][hit], expected.depth.numpy()[hit], rtol=1e-3)
    assert np.all(channels["ViewLayer.Depth.Z"][expected.alpha.numpy() == 0] == 1e10)


@pytest.fixture(scope="module")
def session(blender_extension: InstalledExtension, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Import -> F12 -> cancelled job -> compress (operator) -> F12 -> save, in one Blender process."""
    tmp = tmp_path_factory.mktemp("render_engine")
    write_scene(random_gaussians(MESH2SPLAT_DIR / "spot.splat", 2000, seed=1), tmp / "spot2k.splat")
    world_source = read_scene(tmp / "spot2k.splat").transformed(MINUS_Y_UP)
    matrix = _camera_matrix(world_source, 0.6)
    out = run_blender(SETUP + dedent("""
        scene = bpy.context.scene
        assert bpy.ops.import_scene.gaussian_splats(filepath=args["source"]) == {"FINISHED"}
        original = bpy.context.active_object
        setup_render(scene, args["matrix"])
        scene.exgs_render.use_restore = True  # the generic painter's path (off by default)
        f12(args["dir"] + "/original.exr")
        before = splats.scene_of(original, world_space=False)

        # A compress job cancelled while it runs on its thread leaves everything as it was.
        scene.exgs_compress.views = "AUTO"
        scene.exgs_compress.fit_restoration = False  # the generic painter's path; fitting is tested in core
        job = compress_ops.prepare_job(bpy.context, original)
        job.start()
        while job.stage == "starting" and not job.finished:
            time.sleep(0.01)
        job.cancel()
        assert job.wait(120)
        result["cancelled"] = job.cancelled
        result["cancel_stage"] = job.stage
        after = splats.scene_of(original, world_space=False)
        result["untouched"] = all(np.array_equal(getattr(before, f), getattr(after, f))
                                  for f in ("means", "quats", "log_scales", "opacity_logits", "sh"))
        result["objects_after_cancel"] = [o.name for o in bpy.data.objects if splats.is_splat(o)]
        result["original_name"] = original.name

        # Compress through the operator, shot-aware from the scene's camera (synchronous in background mode).
        settings = scene.exgs_compress
        settings.target, settings.keep, settings.views, settings.result = "KEEP", 0.4, "CAMERAS", "NEW"
        result["compress"] = sorted(bpy.ops.exgs.compress())
        compressed = bpy.context.active_object
        result["compressed_name"] = compressed.name
        result["original_hidden"] = original.hide_render
        result["stats"] = json.loads(compressed["exgs_compression"])
        save_world(compressed, args["dir"] + "/compressed.npz")
        f12(args["dir"] + "/compressed.exr")
        bpy.ops.wm.save_as_mainfile(filepath=args["dir"] + "/scene.blend")
    """), blender_extension, args={"source": str(tmp / "spot2k.splat"), "dir": str(tmp), "camera": CAMERA,
                                   "world": list(WORLD), "matrix": matrix.tolist()})
    return {"dir": tmp, "out": out, "matrix": matrix, "source": world_source}


def test_f12_of_imported_scene_matches_exgs_core(session: dict) -> None:
    _assert_matches(session["dir"] / "original.exr", session["source"], session["matrix"])


def test_cancelled_compress_job_leaves_original(session: dict) -> None:
    out = session["out"]
    assert out["cancelled"] and out["untouched"]
    assert out["objects_after_cancel"] == [out["original_name"]]


def test_compress_operator_then_f12(session: dict) -> None:
    out, stats = session["out"], session["out"]["stats"]
    assert out["compress"] == ["FINISHED"] and out["original_hidden"]
    assert stats["gaussians_before"] == 2000 and stats["gaussians_after"] == 800
    assert stats["bytes_before"] == 2000 * 32 and 0 < stats["bytes_after"] < stats["bytes_before"]
    assert stats["ratio_vs_inria_ply"] == pytest.approx(248 * 2000 / stats["bytes_after"])
    assert stats["scoring_views"] == 1
    compressed = _load(session["dir"] / "compressed.npz")
    assert len(compressed) == 800
    _assert_matches(session["dir"] / "compressed.exr", compressed, session["matrix"],
                    strength_for_ratio(stats["ratio_vs_inria_ply"]))
    # The compressed render is close to, but not the same as, the original's.
    a = read_exr(session["dir"] / "original.exr")["ViewLayer.ExGS Raw.G"]
    b = read_exr(session["dir"] / "compressed.exr")["ViewLayer.ExGS Raw.G"]
    assert 20 < _psnr(a, b) < 60


def test_reload_renders_identically_and_animation(session: dict, blender_extension: InstalledExtension) -> None:
    tmp = session["dir"]
    matrices = [_camera_matrix(session["source"], a) for a in (0.6, 1.4)]
    run_blender(SETUP + dedent("""
        bpy.ops.wm.open_mainfile(filepath=args["dir"] + "/scene.blend")
        scene = bpy.context.scene
        f12(args["dir"] + "/reloaded.exr")
        cam = scene.camera
        for frame, matrix in zip((1, 2), args["matrices"]):
            cam.matrix_world = Matrix(matrix)
            cam.keyframe_insert("location", frame=frame)
            cam.keyframe_insert("rotation_euler", frame=frame)
        # The object moves too: frame 2 is rendered with its evaluated transform.
        obj = [o for o in scene.objects if splats.is_splat(o) and not o.hide_render][0]
        obj.keyframe_insert("location", frame=1)
        obj.location.x += args["shift"]
        obj.keyframe_insert("location", frame=2)
        scene.frame_start, scene.frame_end = 1, 2
        scene.render.filepath = args["dir"] + "/anim_"
        assert bpy.ops.render.render(animation=True) == {"FINISHED"}
    """), blender_extension, args={"dir": str(tmp), "camera": CAMERA, "world": list(WORLD),
                                   "matrices": [m.tolist() for m in matrices], "shift": 0.1})
    first, again = read_exr(tmp / "compressed.exr"), read_exr(tmp / "reloaded.exr")
    assert first.keys() == again.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], again[name], err_msg=name)
    compressed = _load(tmp / "compressed.npz")
    frames = [tmp / "anim_0001.exr", tmp / "anim_0002.exr"]
    moved = np.eye(4)
    moved[0, 3] = 0.1
    strength = strength_for_ratio(session["out"]["stats"]["ratio_vs_inria_ply"])
    for path, matrix, scene in zip(frames, matrices, (compressed, compressed.transformed(moved))):
        _assert_matches(path, scene, matrix, strength)
    assert _psnr(read_exr(frames[0])["ViewLayer.ExGS Raw.G"], read_exr(frames[1])["ViewLayer.ExGS Raw.G"]) < 30


def test_f12_restores_with_the_objects_own_fitted_restoration(blender_extension: InstalledExtension,
                                                              tmp_path: Path) -> None:
    """An object imported from an .exgs file with a fitted restoration: F12's Combined pass is its raw pass
    restored by that restoration at its strength; with Fitted Restoration off it is the raw pass."""
    source = random_gaussians(MESH2SPLAT_DIR / "spot.splat", 2000, seed=1)
    rng = np.random.default_rng(0)
    shapes = {"conv1.weight": (8, 4, 3, 3), "conv1.bias": (8,), "conv2.weight": (8, 8, 3, 3), "conv2.bias": (8,),
              "conv3.weight": (3, 8, 3, 3), "conv3.bias": (3,)}
    stored = Restoration.from_arrays("residual_cnn", {"channels": 8},
                                     {k: 0.1 * rng.normal(size=s) for k, s in shapes.items()}, 0.7, {"gain_db": 0.4})
    (tmp_path / "fitted.exgs").write_bytes(with_restoration(encode_exgs(source), stored))
    matrix = _camera_matrix(source.transformed(MINUS_Y_UP), 0.6)
    run_blender(SETUP + dedent("""
        scene = bpy.context.scene
        assert bpy.ops.import_scene.gaussian_splats(filepath=args["source"]) == {"FINISHED"}
        setup_render(scene, args["matrix"])
        save_world(bpy.context.active_object, args["dir"] + "/world.npz")
        f12(args["dir"] + "/fitted.exr")
        scene.exgs_render.use_fitted = False
        f12(args["dir"] + "/off.exr")
    """), blender_extension, args={"source": str(tmp_path / "fitted.exgs"), "dir": str(tmp_path), "camera": CAMERA,
                                   "world": list(WORLD), "matrix": matrix.tolist()})
    expected = _expected(_load(tmp_path / "world.npz"), matrix)
    module = restoration_module(stored, device="cpu")
    wanted = restore(expected.rgb.numpy(), expected.alpha.numpy(), module, 0.7)
    fitted, off = read_exr(tmp_path / "fitted.exr"), read_exr(tmp_path / "off.exr")
    raw, combined = _pass(fitted, "ExGS Raw", "RGBA"), _pass(fitted, "Combined", "RGBA")
    assert _psnr(_srgb(raw[..., :3]), expected.rgb.numpy()) >= 40
    assert _psnr(_srgb(combined[..., :3]), wanted) >= 40 and _psnr(wanted, expected.rgb.numpy()) < 40
    np.testing.assert_array_equal(_pass(off, "Combined", "RGBA"), _pass(off, "ExGS Raw", "RGBA"))


def test_f12_restores_each_object_by_its_own_correction(blender_extension: InstalledExtension,
                                                        tmp_path: Path) -> None:
    """Two objects side by side: a compressed koala carrying a real fitted restoration and an uncompressed spot.
    F12 restores the koala's pixels as when it is alone and leaves the spot's pixels raw; with GaussPainter
    (By Compression) instead, only the compressed koala is painted; the viewport's frame is F12's."""
    import torch

    from exgs_core.painter.baseline import PixelUNet
    from exgs_core.painter.weights import save_painter

    model = PixelUNet(channels=(4, 8))
    torch.nn.init.constant_(model.out.bias, 0.15)  # a visible, predictable painter: rgb + 0.15
    save_painter(model, tmp_path / "weights")
    (tmp_path / "koala.exgs").write_bytes(fitted_koala())
    spot = random_gaussians(MESH2SPLAT_DIR / "spot.splat", 2000, seed=1)
    write_scene(spot, tmp_path / "spot.splat")
    koala_world = read_scene(tmp_path / "koala.exgs").transformed(MINUS_Y_UP)
    offset_k, offset_s, matrix = side_by_side(koala_world, spot.transformed(MINUS_Y_UP))
    out = run_blender(SETUP + dedent("""
        from bl_ext.user_default.exgs.exgs_blender import runtime
        scene = bpy.context.scene
        objects = []
        for name, offset in (("koala.exgs", args["offset_k"]), ("spot.splat", args["offset_s"])):
            assert bpy.ops.import_scene.gaussian_splats(filepath=args["dir"] + "/" + name) == {"FINISHED"}
            objects.append(bpy.context.active_object)
            objects[-1].location = offset
        koala, spot = objects
        setup_render(scene, args["matrix"])
        result["ratio"] = splats.info_of(koala)["inria_ratio"]
        f12(args["dir"] + "/mixed.exr")
        for shown, path in ((koala, "/koala.exr"), (spot, "/spot.exr")):
            for obj in objects:
                obj.hide_render = obj is not shown
            f12(args["dir"] + path)
        for obj in objects:
            obj.hide_render = False

        # The viewport renders through the same corrections (WorldParts.corrections), on its thread.
        depsgraph = bpy.context.evaluated_depsgraph_get()
        found = engine.world_parts(engine.splat_objects(depsgraph, viewport=True))
        corrections = found.corrections(scene.exgs_render)
        result["corrections"] = [[c.start, c.stop, c.strength, c.fitted is not None] for c in corrections]
        renderer = engine.ViewportRenderer(runtime.get_runtime)
        renderer.request(engine.ViewRequest(found.key, engine.render_camera(scene, scene.camera),
                                            engine.display_background(scene), corrections, None, 1.0, 0.0,
                                            scene=found.build))
        assert renderer.wait_final(300), renderer.error
        renderer.stop()
        np.save(args["dir"] + "/viewport.npy", renderer.latest()[1].combined)

        scene.exgs_render.use_fitted = False  # the koala now follows GaussPainter, on by compression
        scene.exgs_render.use_restore = True
        scene.exgs_render.weights = args["dir"] + "/weights"
        f12(args["dir"] + "/painter.exr")
    """), blender_extension, args={"dir": str(tmp_path), "camera": WIDE_CAMERA, "world": list(WORLD),
                                   "matrix": matrix.tolist(), "offset_k": offset_k.tolist(),
                                   "offset_s": offset_s.tolist()})
    koala_count = len(koala_world)
    assert out["corrections"] == [[0, koala_count, 1.0, True]]  # the spot has no correction
    mixed, koala, spot = (read_exr(tmp_path / f"{n}.exr") for n in ("mixed", "koala", "spot"))
    koala_alpha, spot_alpha = koala["ViewLayer.ExGS Alpha.X"], spot["ViewLayer.ExGS Alpha.X"]
    spot_only = (spot_alpha > 0) & (koala_alpha == 0)
    koala_only = (koala_alpha > 0) & ~dilated(spot_alpha > 0, 5)  # beyond the correction's reach of the spot
    assert spot_only.sum() > 500 and koala_only.sum() > 500
    raw, combined = _pass(mixed, "ExGS Raw", "RGBA"), _pass(mixed, "Combined", "RGBA")
    np.testing.assert_array_equal(combined[spot_only], raw[spot_only])
    alone = _srgb(_pass(koala, "Combined", "RGB"))
    restored = _srgb(combined[..., :3])
    assert np.abs(restored - alone)[koala_only].max() <= 1 / 255
    assert np.abs(restored - _srgb(raw[..., :3]))[koala_only].mean() > 0.01
    assert _psnr(np.load(tmp_path / "viewport.npy"), restored) >= 50

    # GaussPainter by compression: strength 1 from 100x for the koala, none for the never-compressed spot.
    painted = read_exr(tmp_path / "painter.exr")
    raw, combined = _pass(painted, "ExGS Raw", "RGBA"), _pass(painted, "Combined", "RGBA")
    np.testing.assert_array_equal(combined[spot_only], raw[spot_only])
    strength = strength_for_ratio(out["ratio"])
    assert strength > 0.5
    wanted = restore(_srgb(raw[..., :3]), painted["ViewLayer.ExGS Alpha.X"], load_painter(tmp_path / "weights"),
                     strength)
    assert _psnr(_srgb(combined[..., :3])[koala_only], wanted[koala_only]) >= 40
    assert np.abs(_srgb(combined[..., :3]) - _srgb(raw[..., :3]))[koala_only].mean() > 0.05
