"""The splat object contract (exgs_blender.splat_object) inside real Blender: world space, replace, info."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from exgs_core.io import read_scene
from exgs_core.io.exgs import Restoration, encode_exgs, inria_ratio, read_restoration, with_restoration
from tests.blender.blender_runner import InstalledExtension, run_blender
from tests.conftest import SCENES_DIR, requires_data

SH_PLY = SCENES_DIR / "pcengine_playbot_3_0.inria.ply"  # 31k Gaussians, SH degree 2, non-zero bands


def _restoration() -> Restoration:
    rng = np.random.default_rng(0)
    arrays = {"conv1.weight": rng.normal(size=(8, 4, 3, 3)), "conv1.bias": rng.normal(size=8),
              "conv2.weight": rng.normal(size=(8, 8, 3, 3)), "conv2.bias": rng.normal(size=8),
              "conv3.weight": rng.normal(size=(3, 8, 3, 3)), "conv3.bias": rng.normal(size=3)}
    return Restoration.from_arrays("residual_cnn", {"channels": 8}, arrays, 0.7, {"gain_db": 0.5})


@requires_data
def test_world_space_replace_and_info(blender_extension: InstalledExtension, tmp_path: Path) -> None:
    stored = _restoration()
    fitted_path = tmp_path / "fitted.exgs"
    compressed_from = {"compression": {"input_count": 30_000}}  # as if compressed from 30k Gaussians
    fitted_path.write_bytes(with_restoration(encode_exgs(read_scene(SH_PLY).subset(slice(0, 300)),
                                                         extra_header=compressed_from), stored))
    out = run_blender(
        """
        import numpy as np
        from bl_ext.user_default.exgs.exgs_blender import splats as so
        from exgs_core.io import read_scene

        scene = read_scene(args["ply"])
        obj = so.create_splat(scene, "Splat")
        obj.location, obj.rotation_euler, obj.scale = (1.0, -2.0, 0.5), (0.4, -0.3, 1.2), (1.5, 1.5, 1.5)
        bpy.context.view_layer.update()
        world = so.scene_of(obj)
        np.savez(args["out"], matrix=np.array(obj.matrix_world), means=world.means, quats=world.quats,
                 log_scales=world.log_scales, sh=world.sh)
        result["info"] = so.info_of(obj)
        result["not_splat"] = [so.is_splat(None), so.is_splat(bpy.data.objects["Camera"])]
        big = scene.subset(slice(0, 10))
        big.metadata["source_bytes"] = 2_480_001_533  # a 10M-Gaussian .ply: past ID properties' 32-bit integers
        huge = so.create_splat(big, "Huge")
        result["huge"] = [so.info_of(huge)["source_bytes"], so.scene_of(huge).metadata["source_bytes"]]
        obj.scale = (1.0, 2.0, 1.0)
        bpy.context.view_layer.update()
        try:
            so.scene_of(obj)
            result["non_uniform"] = ""
        except ValueError as error:
            result["non_uniform"] = str(error)
        materials = [m.name for m in obj.data.materials]
        so.replace_splats(obj, scene.subset(slice(0, 500)).with_sh_degree(1))
        small = so.scene_of(obj, world_space=False)
        result["replaced"] = [obj.name, len(small), small.sh_degree, [m.name for m in obj.data.materials] == materials,
                              tuple(round(v, 6) for v in obj.scale), so.info_of(obj)["count"],
                              sorted(a.name for a in obj.data.attributes if a.name.startswith(("f_rest", "radiance:sh")))]
        result["kind"] = obj.type
        result["same_data"] = bool(np.array_equal(small.sh, scene.subset(slice(0, 500)).with_sh_degree(1).sh))
        from exgs_core.io import write_scene
        fitted = so.create_splat(read_scene(args["fitted"]), "Fitted")
        result["fitted_info"] = so.info_of(fitted)
        back = so.scene_of(fitted).metadata["restoration"]
        result["fitted_payload"] = back.payload.hex()
        write_scene(so.scene_of(fitted), args["exported"])
        so.replace_splats(fitted, scene.subset(slice(0, 100)))  # other Gaussians: the restoration goes
        result["replaced_restoration"] = so.info_of(fitted)["restoration_strength"]
        """,
        blender_extension,
        args={"ply": str(SH_PLY), "out": str(tmp_path / "world.npz"), "fitted": str(fitted_path),
              "exported": str(tmp_path / "exported.exgs")},
    )
    reference = read_scene(SH_PLY)
    with np.load(tmp_path / "world.npz") as saved:
        expected = reference.transformed(saved["matrix"])
        np.testing.assert_allclose(saved["means"], expected.means, atol=1e-5)
        np.testing.assert_allclose(saved["log_scales"], expected.log_scales, atol=1e-6)
        unit = lambda q: q / np.linalg.norm(q, axis=1, keepdims=True)  # noqa: E731  (native splats store unit ones)
        np.testing.assert_allclose(unit(saved["quats"]), unit(expected.quats), atol=1e-6)
        np.testing.assert_allclose(saved["sh"], expected.sh, atol=1e-5)
        assert not np.allclose(saved["sh"][:, 1:], reference.sh[:, 1:], atol=1e-3), "SH must rotate with the object"
    assert out["info"] == {"count": len(reference), "sh_degree": 2, "source_name": SH_PLY.name,
                           "source_bytes": SH_PLY.stat().st_size, "inria_ratio": None,
                           "restoration_strength": None, "restoration_gain_db": None}
    # a fitted restoration stays with the object (and the .blend) and an export writes it back bit-exactly
    assert out["fitted_info"]["restoration_strength"] == 0.7 and out["fitted_info"]["restoration_gain_db"] == 0.5
    assert bytes.fromhex(out["fitted_payload"]) == stored.payload
    assert read_restoration(tmp_path / "exported.exgs").payload == stored.payload
    # ... and keeps the ratio: what the Gaussians were compressed from travels with them
    ratio = 248 * 30_000 / fitted_path.stat().st_size
    assert out["fitted_info"]["inria_ratio"] == pytest.approx(ratio)
    assert inria_ratio(read_scene(tmp_path / "exported.exgs")) == pytest.approx(ratio, rel=0.05)
    assert out["replaced_restoration"] is None
    assert out["not_splat"] == [False, False]
    assert out["huge"] == [2_480_001_533, 2_480_001_533]  # importing a .ply over 2 GiB failed with OverflowError
    assert "'Splat'" in out["non_uniform"] and "scale" in out["non_uniform"]
    name, count, degree, same_material, scale, info_count, rest = out["replaced"]
    assert [name, count, degree, same_material, scale, info_count] == ["Splat", 500, 1, True, [1.0, 2.0, 1.0], 500]
    names = [f"radiance:sh_{i}" for i in range(3)] if out["kind"] == "POINTCLOUD" else [f"f_rest_{i}" for i in range(9)]
    assert rest == sorted(names), "attributes of the old SH degree must go"
    assert out["same_data"]
