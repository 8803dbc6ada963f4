"""Import and export through the extension's operators inside real Blender, checked against exgs_core."""

from __future__ import annotations

import shutil
import warnings
import zipfile
from pathlib import Path
from textwrap import dedent
from typing import Iterator

import numpy as np
import pytest

from exgs_core.io import read_scene, write_scene
from exgs_core.scene import GaussianScene
from tests.blender.blender_runner import InstalledExtension, run_blender
from tests.conftest import MESH2SPLAT_DIR, SCENES_DIR, requires_data

SH_PLY = SCENES_DIR / "pcengine_playbot_3_0.inria.ply"  # 31k Gaussians, SH degree 2 with non-zero bands
SOG_FOLDER = SCENES_DIR / "pcengine_playbot_3_0"
SMALL_SPLAT = MESH2SPLAT_DIR / "spot.splat"
# -Y up in the file becomes +Z in Blender: a -90 degree rotation about X.
MINUS_Y_UP = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)

# Saves the raw Gaussians of every splat object (original mesh data, object space) to args["out"].
SAVE_OBJECTS = """
import numpy as np
from bl_ext.user_default.exgs.exgs_blender import splats
def save_objects(path):
    arrays = {}
    for obj in sorted(bpy.data.objects, key=lambda o: o.name):
        if splats.is_splat(obj):
            scene = splats.scene_of(obj, world_space=False)
            for field in ("means", "quats", "log_scales", "opacity_logits", "sh"):
                arrays[f"{obj.name}/{field}"] = getattr(scene, field)
            arrays[f"{obj.name}/matrix_world"] = np.array(obj.matrix_world)
    np.savez(path, **arrays)
    result["objects"] = sorted(o.name for o in bpy.data.objects if splats.is_splat(o))
"""


def _saved(path: Path, name: str) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {key.split("/", 1)[1]: data[key] for key in data.files if key.startswith(name + "/")}


def _assert_exact(saved: dict[str, np.ndarray], scene: GaussianScene) -> None:
    """The splat object holds the file's Gaussians: means and SH exactly; rotation, scale and opacity exactly on
    the mesh-based object, within float rounding on a native one (unit quaternions, exp'd scales and sigmoid'd
    opacities, as Blender's own importer stores them)."""
    for field in ("means", "sh"):
        np.testing.assert_array_equal(saved[field], getattr(scene, field), err_msg=field)
    np.testing.assert_allclose(_aligned_quats(saved["quats"], scene.quats), scene.unit_quats(), atol=1e-6)
    np.testing.assert_allclose(saved["log_scales"], scene.log_scales, atol=1e-5)
    sigmoid = lambda x: 1.0 / (1.0 + np.exp(-x.astype(np.float64)))  # noqa: E731
    np.testing.assert_allclose(sigmoid(saved["opacity_logits"]), sigmoid(scene.opacity_logits), atol=1e-6)


def _aligned_quats(quats: np.ndarray, reference: np.ndarray) -> np.ndarray:
    unit = quats / np.linalg.norm(quats, axis=1, keepdims=True)
    ref = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    return unit * np.sign(np.sum(unit * ref, axis=1, keepdims=True))


@requires_data
def test_import_export_save_reload(blender_extension: InstalledExtension, tmp_path: Path) -> None:
    source = tmp_path / SH_PLY.name
    shutil.copyfile(SH_PLY, source)
    out = run_blender(
        SAVE_OBJECTS
        + dedent(
            """
        done = bpy.ops.import_scene.gaussian_splats(filepath=args["source"])
        result["import"] = sorted(done)
        obj = bpy.context.active_object
        result["active"] = obj.name
        result["modifiers"] = [m.type for m in obj.modifiers]
        evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
        result["kind"] = [obj.type, getattr(obj.data, "type", "")]
        if obj.type == "MESH":
            result["display_faces"] = len(evaluated.data.polygons)
            result["display_color"] = evaluated.data.color_attributes.active_color_name
        save_objects(args["imported"])
        for name in ("out.ply", "out.splat", "out.exgs"):
            done = bpy.ops.export_scene.gaussian_splats(filepath=os.path.join(args["dir"], name))
            result[name] = sorted(done)
        bpy.ops.wm.save_as_mainfile(filepath=args["blend"])
        """
        ),
        blender_extension,
        args={"source": str(source), "imported": str(tmp_path / "imported.npz"), "dir": str(tmp_path),
              "blend": str(tmp_path / "saved.blend")},
    )
    assert out["import"] == ["FINISHED"] and out["objects"] == [source.stem] == [out["active"]]
    reference = read_scene(SH_PLY)
    if blender_extension.blender.version >= (5, 3):  # a native splat object: Blender draws it as splats
        assert out["kind"] == ["POINTCLOUD", "GAUSSIAN_SPLAT"] and out["modifiers"] == []
    else:  # the display: one tetrahedron per Gaussian, coloured by the active colour attribute
        assert out["kind"] == ["MESH", ""] and out["modifiers"] == ["NODES"]
        assert out["display_faces"] == 4 * len(reference) and out["display_color"] == "exgs_color"
    imported = _saved(tmp_path / "imported.npz", source.stem)
    _assert_exact(imported, reference)
    np.testing.assert_allclose(imported["matrix_world"], MINUS_Y_UP, atol=1e-7)

    # Export with the default -Y up undoes the import rotation: the file's own coordinates come back.
    ply = read_scene(tmp_path / "out.ply")
    assert ply.sh_degree == 2 and len(ply) == len(reference)
    np.testing.assert_allclose(ply.means, reference.means, atol=1e-5)
    np.testing.assert_allclose(ply.sh, reference.sh, atol=1e-5)
    np.testing.assert_allclose(ply.log_scales, reference.log_scales, atol=1e-6)
    np.testing.assert_allclose(ply.opacities(), reference.opacities(), atol=1e-6)
    np.testing.assert_allclose(_aligned_quats(ply.quats, reference.quats), reference.unit_quats(), atol=1e-5)
    for name in ("out.splat", "out.exgs"):
        written = read_scene(tmp_path / name)
        direct_path = tmp_path / f"direct{Path(name).suffix}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # .splat drops SH above degree 0, as the operator's export does
            write_scene(reference, direct_path)
        direct = read_scene(direct_path)
        assert len(written) == len(direct) == len(reference), name
        extent = float(np.ptp(reference.means, axis=0).max())
        # Both writers reorder the Gaussians (ties broken by float noise), so compare sorted coordinates.
        np.testing.assert_allclose(
            np.sort(written.means, axis=0), np.sort(direct.means, axis=0), atol=1e-3 * extent, err_msg=name
        )

    # A fresh Blender opens the .blend without the source file: the same Gaussians.
    source.unlink()
    out = run_blender(
        SAVE_OBJECTS
        + dedent(
            """
        bpy.ops.wm.open_mainfile(filepath=args["blend"])
        save_objects(args["reloaded"])
        """
        ),
        blender_extension,
        args={"blend": str(tmp_path / "saved.blend"), "reloaded": str(tmp_path / "reloaded.npz")},
    )
    reloaded = _saved(tmp_path / "reloaded.npz", source.stem)
    for field, array in imported.items():
        np.testing.assert_array_equal(reloaded[field], array, err_msg=field)


@requires_data
def test_broken_files_leave_the_scene_unchanged(blender_extension: InstalledExtension, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.ply"
    truncated.write_bytes(SH_PLY.read_bytes()[:5000])
    good = tmp_path / "good.splat"
    shutil.copyfile(SMALL_SPLAT, good)
    out = run_blender(
        """
        def counts():
            return [len(c) for c in (bpy.data.objects, bpy.data.meshes, bpy.data.materials, bpy.data.node_groups)]
        before = counts()
        errors = []
        calls = [dict(filepath=args["truncated"]),
                 dict(directory=args["dir"], files=[{"name": "good.splat"}, {"name": "truncated.ply"}])]
        for call in calls:
            try:
                bpy.ops.import_scene.gaussian_splats(**call)
            except RuntimeError as error:
                errors.append(str(error))
        result["errors"] = errors
        result["unchanged"] = counts() == before
        """,
        blender_extension,
        args={"truncated": str(truncated), "dir": str(tmp_path)},
    )
    assert out["unchanged"]
    assert len(out["errors"]) == 2
    assert all(str(truncated) in error for error in out["errors"])


@requires_data
def test_sog_compressed_ply_and_exgs_import(blender_extension: InstalledExtension, tmp_path: Path) -> None:
    reference = read_scene(SMALL_SPLAT).subset(slice(0, 20000))
    write_scene(reference, tmp_path / "spot.compressed.ply")
    write_scene(reference, tmp_path / "spot.exgs")
    paths = [SOG_FOLDER / "meta.json", tmp_path / "spot.compressed.ply", tmp_path / "spot.exgs"]
    out = run_blender(
        SAVE_OBJECTS
        + dedent(
            """
        for path in args["paths"]:
            bpy.ops.import_scene.gaussian_splats(filepath=path, up_axis="+Z", scale=2.0)
        save_objects(args["out"])
        """
        ),
        blender_extension,
        args={"paths": [str(p) for p in paths], "out": str(tmp_path / "out.npz")},
    )
    assert out["objects"] == sorted([SOG_FOLDER.name, "spot", "spot.001"])
    for path, name in zip(paths, (SOG_FOLDER.name, "spot", "spot.001")):
        saved = _saved(tmp_path / "out.npz", name)
        _assert_exact(saved, read_scene(path))
        np.testing.assert_allclose(saved["matrix_world"], np.diag([2.0, 2.0, 2.0, 1.0]), atol=1e-7)


@requires_data
def test_sog_import_decodes_webp_with_blender_without_pillow(
    blender_extension: InstalledExtension, tmp_path: Path
) -> None:
    bundle = tmp_path / "playbot.sog"
    with zipfile.ZipFile(bundle, "w") as archive:
        for file in SOG_FOLDER.iterdir():
            archive.write(file, file.name)
    broken = tmp_path / "broken"
    shutil.copytree(SOG_FOLDER, broken)
    (broken / "sh0.webp").write_bytes((SOG_FOLDER / "sh0.webp").read_bytes()[:5000])
    out = run_blender(
        SAVE_OBJECTS
        + dedent(
            """
        images = sorted(bpy.data.images.keys())
        for path in (args["folder"], args["bundle"]):
            result[path] = sorted(bpy.ops.import_scene.gaussian_splats(filepath=path))
        try:
            bpy.ops.import_scene.gaussian_splats(filepath=args["broken"])
            result["broken"] = ""
        except RuntimeError as error:
            result["broken"] = str(error)
        result["images"] = [images, sorted(bpy.data.images.keys())]
        result["PIL"] = "PIL" in sys.modules
        save_objects(args["out"])
        """
        ),
        blender_extension,
        args={"folder": str(SOG_FOLDER), "bundle": str(bundle), "broken": str(broken / "meta.json"),
              "out": str(tmp_path / "out.npz")},
        block_heavy=True,
    )
    assert out[str(SOG_FOLDER)] == out[str(bundle)] == ["FINISHED"]
    assert not out["PIL"]
    assert out["images"][0] == out["images"][1], "the temporary images must be removed"
    assert "sh0.webp" in out["broken"] and "truncated" in out["broken"]
    assert out["objects"] == sorted([SOG_FOLDER.name, bundle.stem])
    reference = read_scene(SOG_FOLDER)  # decoded by Pillow
    for name in out["objects"]:
        saved = _saved(tmp_path / "out.npz", name)
        _assert_exact(saved, reference)
        np.testing.assert_allclose(saved["matrix_world"], MINUS_Y_UP, atol=1e-7)


INTEROP_DATA = Path(__file__).resolve().parents[1] / "data"  # small files written by splat-transform 3.7.0
INTEROP_IMPORTS = ["playbot_400.v2.spz", "playbot_400.v3.spz", "playbot_400.v4.spz", "playbot_400.glb",
                   "playbot_400.sog", "playbot_400.compressed.ply"]
INTEROP_EXPORTS = ["out.ply", "out.compressed.ply", "out.splat", "out.sog", "out.spz", "out.glb", "out.gltf",
                   "out.exgs"]


def test_ecosystem_formats_import_and_export_without_pillow(
    blender_extension: InstalledExtension, tmp_path: Path
) -> None:
    """Every format splat-transform writes imports exactly as exgs_core reads it; the glb object exports to every
    writable format (SOG's WebP through Blender's own image writer: Pillow is blocked, as in Blender)."""
    gltf = tmp_path / "playbot_400.gltf"
    write_scene(read_scene(INTEROP_DATA / "playbot_400.glb"), gltf)
    sources = [str(INTEROP_DATA / name) for name in INTEROP_IMPORTS] + [str(gltf)]
    out = run_blender(
        SAVE_OBJECTS
        + dedent(
            """
        result["import"] = []
        for path in args["sources"]:
            result["import"].append(sorted(bpy.ops.import_scene.gaussian_splats(filepath=path)))
            bpy.context.active_object.name = os.path.basename(path)
        save_objects(args["imported"])
        for obj in bpy.context.view_layer.objects:
            obj.select_set(obj.name == "playbot_400.glb")
        bpy.context.view_layer.objects.active = bpy.data.objects["playbot_400.glb"]
        result["export"] = {}
        for name in args["exports"]:
            done = bpy.ops.export_scene.gaussian_splats(filepath=os.path.join(args["dir"], name))
            result["export"][name] = sorted(done)
        """
        ),
        blender_extension,
        args={"sources": sources, "imported": str(tmp_path / "imported.npz"), "dir": str(tmp_path),
              "exports": INTEROP_EXPORTS},
        block_heavy=True,
    )
    assert out["import"] == [["FINISHED"]] * len(sources)
    for path in sources:
        _assert_exact(_saved(tmp_path / "imported.npz", Path(path).name), read_scene(path))
    assert out["export"] == {name: ["FINISHED"] for name in INTEROP_EXPORTS}
    reference = read_scene(INTEROP_DATA / "playbot_400.glb")
    extent = float(np.ptp(reference.means, axis=0).max())
    for name in INTEROP_EXPORTS:
        written = read_scene(tmp_path / name)
        assert len(written) == len(reference), name
        assert written.sh_degree == (0 if name == "out.splat" else 2), name
        # Quantising formats reorder and round: compare sorted coordinates within their position precision.
        np.testing.assert_allclose(
            np.sort(written.means, axis=0), np.sort(reference.means, axis=0), atol=2e-3 * extent, err_msg=name
        )


SH3_PLY = SCENES_DIR / "gs3d_lod1_tile_0_0.5x.ply"  # 14k Gaussians, SH degree 3, a binary INRIA .ply
# The formats whose SH coefficients read_split_scene decodes one f_rest column at a time: SH-3 scenes arrive in them.
SPLIT_FORMATS = [".ply", ".spz", ".compressed.ply", ".sog", ".glb"]


def _attribute_names(native: bool, sh_degree: int) -> list[str]:
    """Every attribute an import writes, in the order of data.attributes (Blender's own, named "." + name, left
    out)."""
    rest = (sh_degree + 1) ** 2 - 1
    if native:
        return ["position", "radiance:base", "scale", "rotation"] + [f"radiance:sh_{k}" for k in range(rest)]
    return ([f"f_dc_{c}" for c in range(3)] + [f"f_rest_{i}" for i in range(3 * rest)] + ["opacity"]
            + [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)] + ["exgs_color", "position"])


def _in_format(source: Path, suffix: str, folder: Path) -> Path:
    """`source` itself for .ply, else the same Gaussians written by our writer in the format of `suffix`."""
    if suffix == ".ply":
        return source
    path = folder / (source.name[: -len(".ply")] + suffix)
    if not path.exists():
        write_scene(read_scene(source), path)
    return path


@requires_data
def test_import_writes_the_files_values_exactly(blender_extension: InstalledExtension, tmp_path: Path) -> None:
    """The attributes an import writes, by name, order and value (bit for bit), as this Blender's splat object
    holds them, for an SH-3 scene in every format whose SH columns are decoded one at a time (the real .ply, and
    what our writers make of it) and a real SOG scene (SH 2); the expected values are computed from read_scene in
    the same Blender (same numpy), as the INRIA .ply defines them: raw columns on the mesh-based object, exp'd
    scales, unit quaternions and sigmoid'd opacities on a native one."""
    paths = [_in_format(SH3_PLY, suffix, tmp_path) for suffix in SPLIT_FORMATS] + [SOG_FOLDER / "meta.json"]
    out = run_blender(
        """
        import numpy as np
        from bl_ext.user_default.exgs.exgs_blender.compat import ATTRIBUTE_KEYS, ATTRIBUTE_WIDTHS
        from bl_ext.user_default.exgs.exgs_blender.operators.io import decode_image_with_blender
        from exgs_core.io import read_scene
        from exgs_core.sh import f_rest_name, sh0_to_rgb

        for path in args["paths"]:
            assert bpy.ops.import_scene.gaussian_splats(filepath=path) == {"FINISHED"}, path
            data = bpy.context.active_object.data
            count = len(data.points) if isinstance(data, bpy.types.PointCloud) else len(data.vertices)
            got = {}
            for attribute in data.attributes:
                if not attribute.name.startswith("."):
                    values = np.empty(count * ATTRIBUTE_WIDTHS[attribute.data_type], np.float32)
                    attribute.data.foreach_get(ATTRIBUTE_KEYS[attribute.data_type], values)
                    got[attribute.name] = values
            scene = read_scene(path, decode_image_with_blender)
            sh = scene.sh
            k = sh.shape[1]
            if isinstance(data, bpy.types.PointCloud):
                expected = {"position": scene.means,
                            "radiance:base": np.concatenate([sh[:, 0], scene.opacities()[:, None]], axis=1),
                            "scale": np.exp(scene.log_scales.astype(np.float64)), "rotation": scene.unit_quats()}
                expected.update({f"radiance:sh_{c - 1}": sh[:, c] for c in range(1, k)})
            else:
                expected = {f"f_dc_{c}": sh[:, 0, c] for c in range(3)}
                expected.update({f_rest_name(channel, c, k): sh[:, c, channel]
                                 for channel in range(3) for c in range(1, k)})  # channel-major
                expected["opacity"] = scene.opacity_logits
                expected.update({f"scale_{i}": scene.log_scales[:, i] for i in range(3)})
                expected.update({f"rot_{i}": scene.quats[:, i] for i in range(4)})
                srgb = np.clip(sh0_to_rgb(sh[:, 0, :]), 0.0, 1.0).astype(np.float32)
                linear = np.where(srgb <= 0.04045, srgb / np.float32(12.92),
                                  ((srgb + 0.055) / 1.055) ** np.float32(2.4))
                expected["exgs_color"] = np.concatenate([linear, np.ones((count, 1), np.float32)], axis=1)
                expected["position"] = scene.means
            result[path] = {
                "names": list(got), "count": count, "degree": scene.sh_degree,
                "different": sorted(name for name, values in expected.items()
                                    if name not in got or not np.array_equal(
                                        got[name], np.asarray(values, np.float32).reshape(-1)))}
        """,
        blender_extension,
        args={"paths": [str(path) for path in paths]},
    )
    native = blender_extension.blender.version >= (5, 3, 0)
    for path in paths:
        found = out[str(path)]
        assert (found["count"], found["degree"]) == ((14_051, 3) if path.parent != SOG_FOLDER else (31_000, 2)), path
        assert found["names"] == _attribute_names(native, found["degree"]), path
        assert found["different"] == [], path


@pytest.fixture(scope="session")
def tiled_scenes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[Path]]]:
    """The SH-3 scene tiled to 300k and 900k Gaussians in every format of SPLIT_FORMATS (made when first asked
    for, once for both Blenders), by suffix; deleted afterwards (1 GB: pytest keeps the folders of its last runs).
    Session-scoped: pytest runs every test of one Blender before the other's (the Blender is a session-scoped
    parameter), so a module's fixture was made twice, and writing the .sog files alone takes 40 s."""
    from exgs_core.synthetic import write_tiled_ply

    folder = tmp_path_factory.mktemp("tiled")
    source = read_scene(SH3_PLY)
    plys = []
    for count in (300_000, 900_000):
        plys.append(folder / f"tiled_{count}.ply")
        write_tiled_ply(source, count, plys[-1])
    class Files(dict):
        def __missing__(self, suffix: str) -> list[Path]:
            self[suffix] = [_in_format(ply, suffix, folder) for ply in plys]
            return self[suffix]

    yield Files()
    shutil.rmtree(folder, ignore_errors=True)


@requires_data
@pytest.mark.parametrize("suffix", SPLIT_FORMATS)
def test_import_holds_the_gaussians_about_once(blender_extension: InstalledExtension,
                                               tiled_scenes: dict[str, list[Path]], suffix: str) -> None:
    """Peak memory per Gaussian of importing SH-3 scenes, against the INRIA .ply's bytes per Gaussian (a count of
    bytes, not of seconds): the growth of the Blender process's peak resident memory while importing 900k
    Gaussians, less that of importing 300k, over the difference of their INRIA .ply sizes (the .ply files
    themselves; a compact format's file is a fraction of that). What does not grow with the scene (the display's
    250k points, modules) cancels out. Blender's attributes are about the INRIA .ply's size; the reader decodes
    each SH column on its own and the importer lets each go as it is written, so the peak stays well under twice
    that (issue 23: 10M Gaussians peaked at 1.9-2.2x the 2.48 GB .ply, the whole scene held beside Blender's copy;
    the compact formats went through the whole (N, K, 3) SH block, and float64 temporaries of it)."""
    ratio = _import_growth_ratio(blender_extension, tiled_scenes, suffix)
    if ratio >= 1.4:
        # Measured again in a fresh Blender: a copy the importer holds comes back, while an occasional extra of the
        # allocator does not (one CI run: 70 MB more at 900k, 1.50x, for the .ply whose imports measure 1.02x).
        ratio = min(ratio, _import_growth_ratio(blender_extension, tiled_scenes, suffix))
    # measured (4.5, 5.3): .ply 1.02x, 1.26x (1.72x, 1.92x before its SH columns went); the others 0.94-1.27x,
    # and through read_scene's whole SH block before: .spz 4.85x, 4.75x; .compressed.ply 2.12x, 2.40x; .sog
    # 1.52x, 1.94x; .glb 5.64x, 5.64x
    assert ratio < 1.4


def _import_growth_ratio(blender_extension: InstalledExtension, tiled_scenes: dict[str, list[Path]],
                         suffix: str) -> float:
    """In one Blender: the peak growth of importing the 900k scene less that of the 300k one, over the difference
    of their INRIA .ply sizes."""
    paths = tiled_scenes[suffix]
    out = run_blender(
        """
        from pathlib import Path

        def status(field):
            text = Path("/proc/self/status").read_text()
            return int(text.split(field + ":")[1].split()[0]) * 1024

        bpy.ops.import_scene.gaussian_splats(filepath=args["warm_up"])  # modules, material, node group: made once
        result["growth"] = []
        for path in args["paths"]:
            for obj in list(bpy.data.objects):
                bpy.data.objects.remove(obj)
            bpy.context.evaluated_depsgraph_get().update()  # Blender frees the removed object's data here
            Path("/proc/self/clear_refs").write_text("5")  # the peak starts again from here (Linux)
            before = status("VmRSS")
            assert bpy.ops.import_scene.gaussian_splats(filepath=path) == {"FINISHED"}
            result["growth"].append(status("VmHWM") - before)
        """,
        blender_extension,
        args={"paths": [str(path) for path in paths], "warm_up": str(_in_format(SH3_PLY, suffix, paths[0].parent))},
    )
    small, large = out["growth"]
    plys = tiled_scenes[".ply"]
    ratio = (large - small) / (plys[1].stat().st_size - plys[0].stat().st_size)
    print(f"Blender {blender_extension.blender.label}, {suffix}: peak growth {small / 1e6:.0f} MB and "
          f"{large / 1e6:.0f} MB, {ratio:.2f}x the INRIA .ply per Gaussian")
    return ratio
