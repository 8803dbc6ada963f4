"""The installed extension in real Blender: Blender's own Python suffices, register/unregister repeat cleanly,
and a splat object shows as coloured points in Solid mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from tests.blender.blender_runner import EXTENSION_MODULE, InstalledExtension, run_blender
from tests.conftest import MESH2SPLAT_DIR, SCENES_DIR, requires_data


@requires_data
def test_works_with_blender_python_only_and_registers_repeatably(blender_extension: InstalledExtension) -> None:
    out = run_blender(
        """
        import addon_utils
        import exgs_core, plyfile
        from bl_ext.user_default.exgs.exgs_blender import splats

        def import_count(path):
            bpy.ops.import_scene.gaussian_splats(filepath=path)
            return splats.point_count(bpy.context.active_object.data)

        def registered():
            return [hasattr(bpy.types, name) for name in
                    ("IMPORT_SCENE_OT_gaussian_splats", "EXPORT_SCENE_OT_gaussian_splats", "EXGS_FH_gaussian_splats")]

        def menu_entries():
            draw = bpy.types.TOPBAR_MT_file_import._dyn_ui_initialize()
            return sum(getattr(f, "__name__", "") == "menu_import" for f in draw)

        result["exgs_core"] = exgs_core.__file__.startswith(EXTENSION_DIR)
        result["plyfile"] = plyfile.__file__
        result["first"] = [registered(), menu_entries(), import_count(args["ply"])]
        try:
            bpy.ops.import_scene.gaussian_splats(filepath=args["sog"])
            result["sog"] = ""
        except RuntimeError as error:
            result["sog"] = str(error)
        addon_utils.disable(args["module"], default_set=True)
        result["disabled"] = [registered(), menu_entries()]
        addon_utils.enable(args["module"], default_set=True, handle_error=None)
        result["again"] = [registered(), menu_entries(), import_count(args["splat"])]
        result["heavy"] = sorted(m for m in ("torch", "numba", "diffusers", "gsplat", "PIL") if m in sys.modules)
        """,
        blender_extension,
        args={
            "ply": str(SCENES_DIR / "mjw_fox.ply"),
            "splat": str(MESH2SPLAT_DIR / "spot.splat"),
            "sog": str(SCENES_DIR / "pcengine_playbot_3_0" / "meta.json"),
            "module": EXTENSION_MODULE,
        },
        block_heavy=True,
    )
    assert out["exgs_core"], "exgs_core must come from the installed extension"
    assert "/extensions/.local/" in out["plyfile"], "plyfile must come from the bundled wheel"
    assert out["first"] == [[True, True, True], 1, 50000]
    assert out["sog"] == "", out["sog"]  # SOG's WebP images are decoded by Blender, without Pillow
    assert out["disabled"] == [[False, False, False], 0]
    assert out["again"] == [[True, True, True], 1, 100000]
    assert out["heavy"] == []


@requires_data
def test_solid_mode_shows_coloured_points(blender_extension: InstalledExtension, tmp_path: Path) -> None:
    run_blender(
        """
        import mathutils
        for obj in list(bpy.data.objects):
            if obj.type != "CAMERA":
                bpy.data.objects.remove(obj)
        bpy.ops.import_scene.gaussian_splats(filepath=args["splat"])
        splat = bpy.context.active_object
        corners = [splat.matrix_world @ mathutils.Vector(c) for c in splat.bound_box]
        center = sum(corners, mathutils.Vector()) / 8
        radius = max((c - center).length for c in corners)
        scene = bpy.context.scene
        camera = scene.camera
        camera.location = center + mathutils.Vector((0.0, -2.5 * radius, 0.3 * radius))
        camera.rotation_euler = (center - camera.location).to_track_quat("-Z", "Y").to_euler()
        scene.render.engine = "BLENDER_WORKBENCH"
        scene.display.shading.light = "FLAT"
        scene.display.shading.color_type = "VERTEX"  # Solid mode's Color > Attribute
        scene.render.resolution_x = scene.render.resolution_y = 96
        scene.render.resolution_percentage = 100
        scene.render.film_transparent = True
        for name, hidden in (("shown", False), ("hidden", True)):
            splat.hide_render = hidden
            scene.render.filepath = os.path.join(args["dir"], name + ".png")
            bpy.ops.render.render(write_still=True)
        """,
        blender_extension,
        args={"splat": str(MESH2SPLAT_DIR / "spot.splat"), "dir": str(tmp_path)},
    )
    shown, hidden = (np.asarray(Image.open(tmp_path / f"{n}.png").convert("RGBA")) / 255.0 for n in ("shown", "hidden"))
    assert hidden[..., 3].max() == 0
    covered = shown[..., 3] > 0.5
    assert covered.mean() > 0.05, "the splat object draws no points in Solid mode"
    colours = shown[covered][:, :3]
    assert np.ptp(colours, axis=0).max() > 0.2, "the points are drawn in one flat colour"
    assert np.abs(colours - colours.mean(axis=1, keepdims=True)).mean() > 0.02, "the points are grey"
