"""Native splat point clouds, converted to ExGS splat objects and back, compressed and exported, in every Blender.

In 5.3 the point cloud is the one Blender's own PLY importer makes. In 4.5 (no native splats) it is the point cloud
Object > Convert > Native Splats makes there, with the attributes 5.3 reads (radiance:base = f_dc +
sigmoid(opacity), scale after exp, rotation quaternion, radiance:sh_N). The stock 5.3 user's whole path is in
tests/blender/test_blender_current.py.
"""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import numpy as np

from exgs_core.io import read_scene
from tests.blender.blender_runner import InstalledExtension, run_blender

SOURCE = Path(__file__).resolve().parents[1] / "data" / "playbot_400.ply"  # 400 real Gaussians, SH degree 2

COLOR = "radiance:base"  # Blender 5.3's io/gsplat

SCRIPT = """
import numpy as np
from bl_ext.user_default.exgs.exgs_blender import engine, native_splats, splats
from bl_ext.user_default.exgs.exgs_blender.compat import NATIVE_SPLATS
from bl_ext.user_default.exgs.exgs_blender.operators import compress as compress_ops
from exgs_core.io import read_scene, write_scene

FIELDS = ("means", "quats", "log_scales", "opacity_logits", "sh")


def save(scene, path):
    np.savez(path, **{field: getattr(scene, field) for field in FIELDS})


def native_object(scene, name):
    # Blender's own splats: its PLY importer in 5.3; before, the point cloud Convert > Native Splats makes.
    if NATIVE_SPLATS:
        assert bpy.ops.wm.ply_import(filepath=args["source"]) == {"FINISHED"}
        obj = bpy.context.active_object
        obj.name = name
        return obj
    obj = native_splats.create_native_object(scene, name, context=bpy.context)
    for key in list(obj.data.keys()):  # Blender's attributes only: not the ExGS facts Convert adds
        del obj.data[key]
    return obj


def check(out, result):
    scene = read_scene(args["source"])
    native = native_object(scene, "native")
    native.location = (1.0, 2.0, 3.0)
    layout = native_splats.native_layout(native)
    result["type"] = native.type
    result["attributes"] = sorted(a.name for a in native.data.attributes if not a.name.startswith("."))
    result["layout"] = [layout.color, layout.sh_names]
    local = native_splats.scene_from_native(native, world_space=False)
    save(local, out + "_local.npz")

    # What the ExGS engine renders (F12 and viewport): the native object, in world space
    depsgraph = bpy.context.evaluated_depsgraph_get()
    objects = engine.splat_objects(depsgraph)
    result["engine_objects"] = [o.name for o in objects]
    save(engine.world_scene(objects)[1], out + "_engine.npz")

    bpy.context.view_layer.objects.active = native
    result["to_exgs"] = sorted(bpy.ops.exgs.native_to_exgs())
    ours = bpy.context.view_layer.objects.active
    result["ours_is_splat"] = splats.is_splat(ours)
    result["native_hidden"] = native.hide_get()
    result["ours_location"] = list(ours.location)
    save(splats.scene_of(ours, world_space=False), out + "_converted.npz")

    result["ours_kind"] = [ours.type, getattr(ours.data, "type", "")]
    if ours.type == "MESH":  # 4.5: back to a native point cloud
        result["to_native"] = sorted(bpy.ops.exgs.exgs_to_native())
        back = splats.scene_of(bpy.context.view_layer.objects.active, world_space=False)
        result["back_max_error"] = float(np.abs(back.sh - local.sh).max() + np.abs(back.means - local.means).max())

    native.hide_set(False)
    for obj in bpy.context.view_layer.objects:
        obj.select_set(obj == native)
    bpy.context.view_layer.objects.active = native
    result["export"] = sorted(bpy.ops.export_scene.gaussian_splats(filepath=out + ".spz", up_axis="+Z"))


def compress_native(result):
    # The panel's Compress on a native point cloud. Without starting the runtime (torch, seconds to minutes on a
    # busy machine): the button's poll, the scene the job compresses, and the result of a job (an .exgs of half
    # the Gaussians), which must become a new ExGS object even in Replace mode.
    native = native_object(read_scene(args["source"]), "to compress")
    bpy.context.view_layer.objects.active = native
    result["poll"] = bpy.ops.exgs.compress.poll()
    scene = native_splats.scene_from_native(native)
    path = os.path.join(args["dir"], "half.exgs")
    write_scene(scene.subset(slice(0, 200)), path)
    job = compress_ops.CompressJob(scene, {}, None, scene.sh_degree, None)
    with open(path, "rb") as handle:
        job.data = handle.read()
    job.stats = {"gaussians_before": 400, "gaussians_after": 200}
    compressed = compress_ops.apply_result(bpy.context, native, job, "REPLACE")
    result["compressed"] = [compressed.type, splats.info_of(compressed)["count"], native.hide_get(),
                            splats.is_exgs_splat(compressed), splats.is_exgs_splat(native)]
    for obj in (compressed, native):
        bpy.data.objects.remove(obj)
    bpy.context.view_layer.update()


result["native_splats"] = NATIVE_SPLATS
compress_native(result)
check(os.path.join(args["dir"], "native"), result)
"""


def test_native_point_cloud_converts_to_exgs_and_back_and_exports(
    blender_extension: InstalledExtension, tmp_path: Path
) -> None:
    out = run_blender(
        dedent(SCRIPT), blender_extension, args={"source": str(SOURCE), "dir": str(tmp_path)},
        block_heavy=True,  # as in Blender's own Python: no torch, no Pillow
    )
    assert out["native_splats"] == (blender_extension.blender.version >= (5, 3, 0))
    # Compress (the panel's button) on Blender's own splats: enabled, and its result is a new ExGS object of the
    # kind this Blender makes (native splats on 5.3)
    kind = "POINTCLOUD" if out["native_splats"] else "MESH"
    assert out["poll"] and out["compressed"] == [kind, 200, True, True, False]

    prefix = "radiance:sh_"
    assert out["type"] == "POINTCLOUD"
    assert out["layout"] == [COLOR, [f"{prefix}{i}" for i in range(8)]]
    assert set(out["attributes"]) == {"position", "scale", "rotation", COLOR} | {f"{prefix}{i}" for i in range(8)}
    source = read_scene(SOURCE)
    local = np.load(tmp_path / "native_local.npz")
    np.testing.assert_array_equal(local["means"], source.means)
    np.testing.assert_array_equal(local["sh"], source.sh)
    np.testing.assert_allclose(local["log_scales"], source.log_scales, atol=1e-5)
    np.testing.assert_allclose(local["quats"], source.unit_quats(), atol=1e-6)
    sigmoid = lambda x: 1.0 / (1.0 + np.exp(-x.astype(np.float64)))  # noqa: E731
    np.testing.assert_allclose(sigmoid(local["opacity_logits"]), sigmoid(source.opacity_logits), atol=1e-6)

    # The ExGS engine renders native objects: it gets their Gaussians in world space (rendering itself is
    # tests/blender/test_render_engine.py's subject)
    assert out["engine_objects"] == ["native"]
    in_engine = np.load(tmp_path / "native_engine.npz")
    np.testing.assert_allclose(in_engine["means"], local["means"] + np.float32([1.0, 2.0, 3.0]), atol=1e-6)
    np.testing.assert_array_equal(in_engine["sh"], local["sh"])

    assert out["to_exgs"] == ["FINISHED"] and out["ours_is_splat"] and out["native_hidden"]
    assert out["ours_location"] == [1.0, 2.0, 3.0]
    converted = np.load(tmp_path / "native_converted.npz")
    for field in ("means", "sh"):
        np.testing.assert_array_equal(converted[field], local[field], err_msg=field)
    # Exact on the mesh-based object; a native one (5.3) stores them anew: unit quaternions, exp'd scales
    for field in ("quats", "log_scales", "opacity_logits"):
        np.testing.assert_allclose(converted[field], local[field], atol=0 if kind == "MESH" else 1e-6, err_msg=field)

    assert out["ours_kind"] == (["POINTCLOUD", "GAUSSIAN_SPLAT"] if out["native_splats"] else ["MESH", ""])
    if not out["native_splats"]:
        assert out["to_native"] == ["FINISHED"] and out["back_max_error"] == 0.0
    assert out["export"] == ["FINISHED"]
    exported = read_scene(tmp_path / "native.spz")
    assert len(exported) == len(source) and exported.sh_degree == 2
    # +Z up: the file holds the world coordinates, the object's location included
    assert np.abs(exported.means - (source.means + (1.0, 2.0, 3.0))).max() < 1e-3

