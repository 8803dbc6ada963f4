"""Settings saved in the .blend: compression settings (scene), render settings (scene), compression stats (object)."""

from __future__ import annotations

import json

import bpy
from bpy.props import (BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty)

from exgs_core.io.ply import INRIA_BYTES_PER_GAUSSIAN


class ExgsCompressSettings(bpy.types.PropertyGroup):
    target: EnumProperty(  # type: ignore[valid-type]
        name="Target",
        items=[("RATIO", "Ratio", f"Compression ratio against the standard INRIA .ply ({INRIA_BYTES_PER_GAUSSIAN} bytes per Gaussian)"),
               ("SIZE", "Size", "File size of the compressed scene in MB"),
               ("KEEP", "Keep", "Fraction of the Gaussians to keep")],
        default="RATIO",
    )
    ratio: FloatProperty(name="Ratio", default=100.0, min=1.0, soft_max=1000.0,  # type: ignore[valid-type]
                         description="Compression ratio against the INRIA .ply")
    size_mb: FloatProperty(name="Size (MB)", default=3.0, min=0.001, soft_max=100.0,  # type: ignore[valid-type]
                           description="Target file size in MB (10^6 bytes)")
    keep: FloatProperty(name="Keep", default=0.1, min=1e-6, max=1.0, subtype="FACTOR",  # type: ignore[valid-type]
                        description="Fraction of the Gaussians to keep")
    sh_degree: EnumProperty(  # type: ignore[valid-type]
        name="SH Degree",
        items=[("AUTO", "Automatic", "0 or 1, whichever renders better at the target size (scenes with SH)"),
               ("0", "0", "View-independent colour, the smallest"),
               ("1", "1", "Spherical harmonics up to degree 1"),
               ("2", "2", "Spherical harmonics up to degree 2"),
               ("3", "3", "Spherical harmonics up to degree 3")],
        default="AUTO", description="Spherical-harmonics degree kept")
    views: EnumProperty(  # type: ignore[valid-type]
        name="Scoring Views",
        items=[("AUTO", "Automatic", "The active camera's path over the frame range when the camera is animated "
                "(shot-aware, better where your shot looks), otherwise 24 views all around the object"),
               ("ORBIT", "Orbit", "24 views all around the object"),
               ("CAMERAS", "Scene Cameras", "Every perspective camera of the scene, at the current frame"),
               ("ACTIVE_PATH", "Active Camera Path", "The active camera over the frame range (shot-aware)")],
        default="AUTO",
    )
    fit_restoration: BoolProperty(  # type: ignore[valid-type]
        name="Fit Restoration", default=True,
        description="Fit a small restoration to this object while compressing (about 90 CPU seconds), kept in "
                    "its .exgs data when it beats spending its bytes on Gaussians; the engine restores with it",
    )
    path_views: IntProperty(name="Path Views", default=24, min=1, max=200,  # type: ignore[valid-type]
                            description="Frames sampled along the active camera's path")
    result: EnumProperty(  # type: ignore[valid-type]
        name="Result",
        items=[("NEW", "New Object", "Add the compressed splat as a new object and hide the original"),
               ("NEW_DELETE", "New, Delete Original", "Add the compressed splat as a new object and delete the "
                "original, so the .blend keeps only the compressed Gaussians (undoable)"),
               ("REPLACE", "Replace", "Replace the Gaussians of the original object (undoable)")],
        default="NEW",
    )
    status: StringProperty(name="Status", options={"SKIP_SAVE"})  # type: ignore[valid-type]
    progress: FloatProperty(name="Progress", min=0.0, max=1.0, subtype="FACTOR",  # type: ignore[valid-type]
                            options={"SKIP_SAVE"})
    running: BoolProperty(name="Running", options={"SKIP_SAVE"})  # type: ignore[valid-type]


class ExgsRenderSettings(bpy.types.PropertyGroup):
    use_fitted: BoolProperty(  # type: ignore[valid-type]
        name="Fitted Restoration", default=True,
        description="Restore a compressed object with the correction fitted to it when it was compressed "
                    "(stored in its .exgs file), only where that object shows; used instead of GaussPainter",
    )
    use_restore: BoolProperty(  # type: ignore[valid-type]
        name="GaussPainter Restoration", default=False,
        description="Restore frames with the generic GaussPainter where no fitted restoration applies (the raw "
                    "render stays in the ExGS Raw pass). Off by default: on held-out captured scenes it lowered "
                    "PSNR (docs/painter.md)",
    )
    strength_mode: EnumProperty(  # type: ignore[valid-type]
        name="Strength",
        items=[("AUTO", "By Compression", "Full strength from 100x, none below 60x or on objects never "
                "compressed: the shipped weights only help heavily compressed frames (docs/painter.md)"),
               ("MANUAL", "Manual", "The same strength for every object without a fitted restoration")],
        default="AUTO",
    )
    strength: FloatProperty(  # type: ignore[valid-type]
        name="Strength Value", default=1.0, min=0.0, max=1.0, subtype="FACTOR",
        description="Share of GaussPainter's correction applied to the raw frame",
    )
    weights: StringProperty(  # type: ignore[valid-type]
        name="Weights", subtype="DIR_PATH",
        description="GaussPainter weights folder (empty: the weights shipped with ExGS)",
    )
    preview_scale: FloatProperty(  # type: ignore[valid-type]
        name="Preview Scale", default=0.5, min=0.1, max=1.0, subtype="FACTOR",
        description="Resolution of the quick viewport render while the view moves",
    )
    still_delay: FloatProperty(  # type: ignore[valid-type]
        name="Still Delay", default=0.3, min=0.0, max=5.0, subtype="TIME_ABSOLUTE",
        description="Seconds the view must stay still before the full, restored viewport frame",
    )


def store_stats(obj: bpy.types.Object, stats: dict) -> None:
    obj["exgs_compression"] = json.dumps(stats)


def read_stats(obj: bpy.types.Object | None) -> dict | None:
    text = obj.get("exgs_compression") if obj is not None else None
    return json.loads(text) if isinstance(text, str) else None


classes = (ExgsCompressSettings, ExgsRenderSettings)


register_classes, unregister_classes = bpy.utils.register_classes_factory(classes)


def register() -> None:
    register_classes()
    bpy.types.Scene.exgs_compress = PointerProperty(type=ExgsCompressSettings)  # type: ignore[attr-defined]
    bpy.types.Scene.exgs_render = PointerProperty(type=ExgsRenderSettings)  # type: ignore[attr-defined]


def unregister() -> None:
    del bpy.types.Scene.exgs_render  # type: ignore[attr-defined]
    del bpy.types.Scene.exgs_compress  # type: ignore[attr-defined]
    unregister_classes()
