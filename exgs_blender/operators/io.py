"""File > Import / Export of Gaussian splats, and drag-and-drop into the viewport.

A thin layer: every format is read and written by exgs_core.io; this module only moves the scene into or out
of a splat object (exgs_blender.splats) and converts between the file's and Blender's up axis. SOG's WebP
images are decoded and encoded by Blender itself (decode_image_with_blender, encode_image_with_blender): Blender's
own Python has no Pillow. Every format is held in the .ply convention in memory (glTF's y-up space is turned
into it on reading), so one up axis setting (-Y for 3DGS scenes) serves them all.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import bpy
import numpy as np
from bpy.props import CollectionProperty, EnumProperty, FloatProperty, StringProperty
from bpy_extras.io_utils import ExportHelper, ImportHelper
from mathutils import Matrix

from ..blend_payload import attach_payload, unchanged_payload
from ..splats import create_splat, is_splat, scene_of
from exgs_core.errors import ExgsError, NotGaussianPlyError
from exgs_core.fileio import atomic_write
from exgs_core.io import read_split_scene, write_scene
from exgs_core.scene import GaussianScene, SplitScene

# Rotation taking the file's up axis to Blender's +Z (about X, so the file's x stays Blender's x).
UP_AXES: dict[str, tuple[tuple[float, ...], ...]] = {
    "-Y": ((1, 0, 0), (0, 0, 1), (0, -1, 0)),
    "+Y": ((1, 0, 0), (0, 0, -1), (0, 1, 0)),
    "+Z": ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
    "-Z": ((1, 0, 0), (0, -1, 0), (0, 0, -1)),
}
UP_AXIS_ITEMS = [
    ("-Y", "-Y (3DGS default)", "The file's -Y is up: scenes trained by the INRIA code and most trainers"),
    ("+Y", "+Y", "The file's +Y is up (glTF / three.js convention)"),
    ("+Z", "+Z (Blender)", "The file's +Z is up, as in Blender: no rotation"),
    ("-Z", "-Z", "The file's -Z is up"),
]
EXPORT_EXTENSIONS = {
    "PLY": ".ply", "COMPRESSED_PLY": ".compressed.ply", "SPLAT": ".splat", "SOG": ".sog", "SPZ": ".spz",
    "GLB": ".glb", "GLTF": ".gltf", "EXGS": ".exgs",
}
EXPORT_ITEMS = [
    ("PLY", "INRIA .ply", "Float32 binary .ply with all SH bands (any 3DGS viewer reads it)"),
    ("COMPRESSED_PLY", ".compressed.ply", "PlayCanvas / SuperSplat compressed .ply (about 16 bytes per Gaussian)"),
    ("SPLAT", ".splat", "antimatter15 .splat, 32 bytes per Gaussian (SH above degree 0 is dropped)"),
    ("SOG", ".sog", "PlayCanvas SOG: WebP textures in one zip, for SuperSplat and the PlayCanvas engine"),
    ("SPZ", ".spz", "Niantic .spz version 3 (gzip): Blender 5.3, SuperSplat, Scaniverse and others read it"),
    ("GLB", ".glb", "glTF 2.0 binary with KHR_gaussian_splatting, as splat-transform writes it"),
    ("GLTF", ".gltf", "glTF 2.0 JSON (data embedded) with KHR_gaussian_splatting"),
    ("EXGS", ".exgs", "ExGS container: all Gaussians quantised and packed, none pruned"),
]
EXPORT_GLOB = ";".join(f"*{extension}" for extension in dict.fromkeys(EXPORT_EXTENSIONS.values()))
OperatorResult = set[Literal["RUNNING_MODAL", "CANCELLED", "FINISHED", "PASS_THROUGH", "INTERFACE"]]
IMPORT_GLOB = "*.ply;*.splat;*.exgs;*.sog;*.spz;*.glb;*.gltf;meta.json"
MENU_TEXT = "Gaussian Splats (.ply/.spz/.sog/.glb/.splat/.exgs)"
IMPORT_SUFFIXES = (".compressed.ply", ".ply", ".splat", ".exgs", ".sog", ".spz", ".glb", ".gltf")


def file_to_blender(up_axis: str, scale: float) -> np.ndarray:
    """4x4 matrix from the file's coordinates to Blender's (up axis to +Z, then uniform scale)."""
    matrix = np.eye(4)
    matrix[:3, :3] = np.array(UP_AXES[up_axis], dtype=np.float64) * scale
    return matrix


def decode_image_with_blender(data: bytes, name: str) -> np.ndarray:
    """An image file's bytes as (height, width, 4) uint8 RGBA, top row first, exactly as stored (exgs_core's
    ImageDecoder). The temporary image datablock is removed, so bpy.data is left as it was."""
    with tempfile.TemporaryDirectory(prefix="exgs_image_") as folder:
        path = os.path.join(folder, "image" + Path(name).suffix)
        with open(path, "wb") as handle:
            handle.write(data)
        try:
            image = bpy.data.images.load(path, check_existing=False)
        except RuntimeError as error:
            raise ValueError(str(error)) from None
        try:
            image.colorspace_settings.name = "Non-Color"  # the bytes are data: no colour transform
            image.alpha_mode = "CHANNEL_PACKED"  # never premultiply RGB by alpha
            width, height = int(image.size[0]), int(image.size[1])  # type: ignore[index]  # (stubs lack __getitem__)
            if not image.has_data or width * height == 0:
                raise ValueError("Blender cannot read it as an image")
            pixels = np.empty(width * height * 4, np.float32)
            image.pixels.foreach_get(pixels)
        finally:
            bpy.data.images.remove(image)
    # Blender gives 8-bit images as byte / 255 floats, bottom row first.
    return np.round(pixels * 255.0).astype(np.uint8).reshape(height, width, 4)[::-1]


def encode_image_with_blender(rgba: np.ndarray) -> bytes:
    """(height, width, 4) uint8 RGBA, top row first, as lossless WebP bytes (exgs_core's ImageEncoder), through
    Blender's image writer (quality 100 is lossless). libwebp may change the RGB of pixels whose alpha is 0; in
    SOG those are only the colours of fully transparent Gaussians. bpy.data is left as it was."""
    height, width = int(rgba.shape[0]), int(rgba.shape[1])
    image = bpy.data.images.new("exgs_encode", width, height, alpha=True)
    try:
        image.colorspace_settings.name = "Non-Color"
        image.alpha_mode = "CHANNEL_PACKED"
        pixels = (rgba[::-1].astype(np.float32) / 255.0).reshape(-1)
        image.pixels.foreach_set(pixels)  # type: ignore[arg-type]  # (stubs want a Sequence; numpy is faster)
        with tempfile.TemporaryDirectory(prefix="exgs_image_") as folder:
            path = os.path.join(folder, "image.webp")
            image.filepath_raw = path
            image.file_format = "WEBP"
            image.save(filepath=path, quality=100)
            with open(path, "rb") as handle:
                return handle.read()
    finally:
        bpy.data.images.remove(image)


class EXGS_OT_import_gaussian_splats(bpy.types.Operator, ImportHelper):
    """Import 3D Gaussian Splatting scenes (.ply, .compressed.ply, .splat, SOG, .spz, glTF, .exgs) as splat objects"""

    bl_idname = "import_scene.gaussian_splats"
    bl_label = "Import Gaussian Splats"
    bl_options = {"REGISTER", "UNDO", "PRESET"}

    if TYPE_CHECKING:  # declared by ImportHelper as a Blender property
        filepath: str

    filter_glob: StringProperty(default=IMPORT_GLOB, options={"HIDDEN"})  # type: ignore[valid-type]
    directory: StringProperty(subtype="DIR_PATH", options={"HIDDEN", "SKIP_SAVE"})  # type: ignore[valid-type]
    files: CollectionProperty(  # type: ignore[valid-type]
        type=bpy.types.OperatorFileListElement, options={"HIDDEN", "SKIP_SAVE"}
    )
    up_axis: EnumProperty(  # type: ignore[valid-type]
        name="Up Axis", items=UP_AXIS_ITEMS, default="-Y", description="Which axis of the file points up"
    )
    scale: FloatProperty(  # type: ignore[valid-type]
        name="Scale", default=1.0, min=1e-6, soft_max=100.0, description="Uniform scale of the imported objects"
    )

    # The stubs of Operator (set of literals) and ImportHelper/ExportHelper (set[str]) disagree on invoke.
    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> OperatorResult:  # type: ignore[override]
        # Drag-and-drop (FileHandler) sets the path: show the options, not the file browser.
        return cast(OperatorResult, self.invoke_popup(context))

    def execute(self, context: bpy.types.Context) -> OperatorResult:
        paths = self._paths()
        scenes: list[tuple[Path, SplitScene]] = []
        try:
            for path in paths:
                scenes.append((path, self._read(path)))
        except NotGaussianPlyError as error:
            self.report({"ERROR"}, f"{error}: import it with File > Import > Stanford PLY (.ply)")
            return {"CANCELLED"}
        except (ExgsError, ValueError) as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        self._add_objects(context, scenes)
        return {"FINISHED"}

    def _paths(self) -> list[Path]:
        names = [f.name for f in self.files if f.name]
        if self.directory and names:
            return [Path(self.directory) / name for name in names]
        return [Path(self.filepath)]

    def _read(self, path: Path) -> SplitScene:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scene = read_split_scene(path, decode_image=decode_image_with_blender)
        for warning in caught:
            self.report({"WARNING"}, str(warning.message))
        return scene

    def _add_objects(self, context: bpy.types.Context, scenes: list[tuple[Path, SplitScene]]) -> None:
        matrix = Matrix(file_to_blender(self.up_axis, self.scale).tolist())
        for selected in context.selected_objects:
            selected.select_set(False)
        for path, scene in scenes:
            obj = create_splat(scene, _object_name(path), context.collection)
            if scene.metadata.get("format") == "exgs":  # a saved .blend keeps these bytes, not the attributes
                attach_payload(obj.data, path.read_bytes())
            obj.matrix_world = matrix
            obj.select_set(True)
            context.view_layer.objects.active = obj
            self.report({"INFO"}, f"Imported {len(scene):,} Gaussians (SH degree {scene.sh_degree}) from {path.name}")


def _object_name(path: Path) -> str:
    if path.name == "meta.json":
        return path.parent.name
    name = path.name
    for suffix in IMPORT_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return name


class EXGS_OT_export_gaussian_splats(bpy.types.Operator, ExportHelper):
    """Export the selected splat objects (ExGS or Blender's native splat point clouds), with their transforms
    applied, to any format exgs writes"""

    bl_idname = "export_scene.gaussian_splats"
    bl_label = "Export Gaussian Splats"
    bl_options = {"REGISTER", "PRESET"}

    if TYPE_CHECKING:  # declared by ExportHelper as a Blender property
        filepath: str

    filename_ext = ".ply"
    check_extension = None  # the extension follows file_format in check(), or the typed one when recognised
    filter_glob: StringProperty(default=EXPORT_GLOB, options={"HIDDEN"})  # type: ignore[valid-type]
    file_format: EnumProperty(name="Format", items=EXPORT_ITEMS, default="PLY")  # type: ignore[valid-type]
    up_axis: EnumProperty(  # type: ignore[valid-type]
        name="Up Axis", items=UP_AXIS_ITEMS, default="-Y", description="Which axis of the written file points up"
    )
    scale: FloatProperty(  # type: ignore[valid-type]
        name="Scale", default=1.0, min=1e-6, soft_max=100.0, description="Import scale to undo (divides sizes)"
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return bool(_objects_to_export(context))

    def check(self, context: bpy.types.Context) -> bool:
        wanted = EXPORT_EXTENSIONS[self.file_format]
        base = _strip_export_extension(self.filepath)
        changed = base + wanted != self.filepath
        self.filepath = base + wanted
        return changed

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> OperatorResult:  # type: ignore[override]
        return cast(OperatorResult, ExportHelper.invoke(self, context, event))

    def execute(self, context: bpy.types.Context) -> OperatorResult:
        objects = _objects_to_export(context)
        if not objects:
            self.report({"ERROR"}, "Select a splat object to export")
            return {"CANCELLED"}
        path = self._target_path()
        to_file = np.linalg.inv(file_to_blender(self.up_axis, self.scale))
        stored = unchanged_payload(objects[0], to_file) if len(objects) == 1 and path.suffix == ".exgs" else None
        try:
            if stored is not None:  # what Compress (or the imported file) made, byte for byte
                with atomic_write(path) as handle:
                    handle.write(stored)
                self.report({"INFO"}, f"Exported {objects[0].name!r} to {path.name} as compressed, unchanged "
                                      f"({len(stored):,} bytes)")
                return {"FINISHED"}
            scene = self._world_scene(objects, to_file)
            write_scene(scene, path, encode_image=encode_image_with_blender)
        except (ExgsError, ValueError, OSError, RuntimeError) as error:
            self.report({"ERROR"}, f"{path}: {error}" if isinstance(error, ValueError) else str(error))
            return {"CANCELLED"}
        note = ""
        if path.suffix == ".exgs" and (scene.metadata.get("exgs") or {}).get("compression"):
            note = ", re-encoded: its Gaussians or transform changed since compression"
        self.report({"INFO"}, f"Exported {len(scene):,} Gaussians to {path.name} ({path.stat().st_size:,} bytes{note})")
        return {"FINISHED"}

    def _target_path(self) -> Path:
        path = bpy.path.abspath(self.filepath)
        if _strip_export_extension(path) == path:
            path += EXPORT_EXTENSIONS[self.file_format]
        return Path(path)

    def _world_scene(self, objects: list[bpy.types.Object], to_file: np.ndarray) -> GaussianScene:
        scenes = [scene_of(obj).transformed(to_file) for obj in objects]
        if len(scenes) == 1:
            return scenes[0]  # with its fitted restoration, if it has one (written back into an .exgs file)
        merged = GaussianScene.concatenate(scenes)
        merged.metadata.pop("restoration", None)  # fitted to one object's Gaussians, not to the merge
        return merged


def _strip_export_extension(path: str) -> str:
    for extension in sorted(EXPORT_EXTENSIONS.values(), key=len, reverse=True):  # .compressed.ply before .ply
        if path.lower().endswith(extension):
            return path[: -len(extension)]
    return path


def _objects_to_export(context: bpy.types.Context) -> list[bpy.types.Object]:
    """The selected splat objects (ours or native), or the active one when none is selected."""
    selected = [obj for obj in context.selected_objects if is_splat(obj)]
    if selected:
        return selected
    active = context.active_object
    return [active] if active is not None and is_splat(active) else []


class EXGS_FH_gaussian_splats(bpy.types.FileHandler):
    bl_idname = "EXGS_FH_gaussian_splats"
    bl_label = "Gaussian Splats"
    bl_import_operator = "import_scene.gaussian_splats"
    bl_file_extensions = ".ply;.splat;.exgs;.sog;.spz;.glb;.gltf"

    @classmethod
    def poll_drop(cls, context: bpy.types.Context | None) -> bool:
        return context is not None and context.area is not None and context.area.type == "VIEW_3D"


def menu_import(self: Any, context: bpy.types.Context) -> None:
    self.layout.operator(EXGS_OT_import_gaussian_splats.bl_idname, text=MENU_TEXT)


def menu_export(self: Any, context: bpy.types.Context) -> None:
    self.layout.operator(EXGS_OT_export_gaussian_splats.bl_idname, text=MENU_TEXT)


classes = (EXGS_OT_import_gaussian_splats, EXGS_OT_export_gaussian_splats, EXGS_FH_gaussian_splats)


register_classes, unregister_classes = bpy.utils.register_classes_factory(classes)


def register() -> None:
    register_classes()
    # fake-bpy-module types menu draw functions with one argument; Blender calls them with (self, context).
    bpy.types.TOPBAR_MT_file_import.append(menu_import)  # type: ignore[arg-type]
    bpy.types.TOPBAR_MT_file_export.append(menu_export)  # type: ignore[arg-type]


def unregister() -> None:
    bpy.types.TOPBAR_MT_file_export.remove(menu_export)  # type: ignore[arg-type]
    bpy.types.TOPBAR_MT_file_import.remove(menu_import)  # type: ignore[arg-type]
    unregister_classes()


__all__ = [
    "EXGS_OT_import_gaussian_splats",
    "EXGS_OT_export_gaussian_splats",
    "decode_image_with_blender",
    "encode_image_with_blender",
    "file_to_blender",
    "register",
    "unregister",
]
