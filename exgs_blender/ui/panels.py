"""3D Viewport > Sidebar > ExGS (compress) and Render Properties > ExGS (restoration, runtime)."""

from __future__ import annotations

import bpy

from exgs_core.io.ply import INRIA_BYTES_PER_GAUSSIAN

from .. import runtime
from ..properties import read_stats
from ..operators.compress import already_compressed, camera_path_animated
from ..native_splats import info_of, is_any_splat
from ..splat_object import is_splat_object, splat_problem


def _lines(layout: bpy.types.UILayout, text: str, width: int = 60) -> None:
    """A long warning as several labels (Blender labels do not wrap), the first with the error icon."""
    import textwrap

    for index, line in enumerate(textwrap.wrap(text, width)):
        layout.label(text=line, icon="ERROR" if index == 0 else "BLANK1")


def _size(num_bytes: float | None) -> str:
    if not num_bytes:
        return "unknown"
    return f"{num_bytes / 1e6:.2f} MB" if num_bytes >= 1e5 else f"{num_bytes / 1e3:.1f} kB"


def _runtime_line(layout: bpy.types.UILayout) -> None:
    problem = runtime.runtime_problem()
    if problem:
        box = layout.box()
        box.label(text="Runtime missing", icon="ERROR")
        for line in problem.split(": ", 1):
            box.label(text=line)


def view_transform_hint(scene: bpy.types.Scene) -> str | None:
    """A hint while a view transform other than Standard (AgX, Filmic...) changes the file's colours."""
    transform = scene.view_settings.view_transform
    if transform == "Standard":
        return None
    return f"The {transform} view transform changes the splats' colours; Standard shows them as in the file"


class VIEW3D_PT_exgs_compress(bpy.types.Panel):
    bl_label = "Compress"
    bl_idname = "VIEW3D_PT_exgs_compress"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "ExGS"

    def draw(self, context: bpy.types.Context) -> None:
        layout, settings, obj = self.layout, context.scene.exgs_compress, context.active_object
        if layout is None:
            return
        if obj is None or not is_any_splat(obj):
            layout.label(text="Select a splat object", icon="INFO")
            layout.label(text="File > Import > Gaussian Splats")
            return
        info = info_of(obj)  # an ExGS splat object or Blender's own native splats
        layout.label(text=f"{obj.name}: {info['count']:,} Gaussians, SH {info['sh_degree']}", icon="POINTCLOUD_DATA")
        problem = splat_problem(obj) if is_splat_object(obj) else None
        if problem:
            _lines(layout.box(), problem)
            return
        if info["restoration_strength"] is not None:
            gain = info["restoration_gain_db"]
            layout.label(text=f"Fitted restoration: {gain:+.2f} dB validated" if gain is not None
                         else "Fitted restoration", icon="SHADERFX")
        _runtime_line(layout)
        column = layout.column()
        column.enabled = not settings.running
        column.prop(settings, "target", expand=True)
        column.prop(settings, {"RATIO": "ratio", "SIZE": "size_mb", "KEEP": "keep"}[settings.target])
        column.prop(settings, "sh_degree")
        column.prop(settings, "views")
        if settings.views == "AUTO":
            animated = context.scene is not None and camera_path_animated(context.scene)
            column.label(text="Scoring from the active camera's path" if animated
                         else "Scoring from 24 orbit views (no animated camera)", icon="CAMERA_DATA")
        if settings.views in ("AUTO", "ACTIVE_PATH"):
            column.prop(settings, "path_views")
        column.prop(settings, "fit_restoration")
        column.prop(settings, "result", expand=True)
        warning = already_compressed(obj)
        if warning:
            _lines(layout.box(), warning)
        if settings.running:
            layout.progress(factor=settings.progress, type="BAR", text=settings.status)
        else:
            layout.operator("exgs.compress", icon="MOD_DECIM")
            if settings.status:
                layout.label(text=settings.status)
        _draw_stats(layout, read_stats(obj))


def _draw_stats(layout: bpy.types.UILayout, stats: dict | None) -> None:
    if not stats:
        return
    box = layout.box()
    box.label(text=f"Compressed ({stats.get('target', '')})", icon="CHECKMARK")
    grid = box.grid_flow(columns=3, even_columns=False)
    for text in ("", "Before", "After",
                 "Gaussians", f"{stats['gaussians_before']:,}", f"{stats['gaussians_after']:,}",
                 "Bytes", _size(stats.get("bytes_before")), _size(stats.get("bytes_after")),
                 "INRIA .ply", _size(INRIA_BYTES_PER_GAUSSIAN * stats["gaussians_before"]), ""):
        grid.label(text=text)
    ratio_input = f"{stats['ratio_vs_input']:.1f}x" if stats.get("ratio_vs_input") else "n/a"
    box.label(text=f"Ratio: {ratio_input} vs input file, {stats['ratio_vs_inria_ply']:.1f}x vs INRIA .ply")


class RENDER_PT_exgs(bpy.types.Panel):
    bl_label = "ExGS"
    bl_idname = "RENDER_PT_exgs"
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "render"
    COMPAT_ENGINES = {"EXGS"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.engine in cls.COMPAT_ENGINES

    def draw(self, context: bpy.types.Context) -> None:
        layout, settings, scene = self.layout, context.scene.exgs_render, context.scene
        if layout is None or scene is None:
            return
        layout.use_property_split = True
        _runtime_line(layout)
        hint = view_transform_hint(scene)
        if hint:
            box = layout.box()
            _lines(box, hint)
            box.prop(scene.view_settings, "view_transform")
        layout.prop(settings, "use_fitted")
        layout.prop(settings, "use_restore")
        column = layout.column()
        column.enabled = settings.use_restore
        column.prop(settings, "strength_mode")
        if settings.strength_mode == "MANUAL":
            column.prop(settings, "strength")
        column.prop(settings, "weights")
        layout.prop(scene.render, "film_transparent", text="Transparent Film")
        background = _background_node(scene.world)
        if background is not None:
            layout.prop(background.inputs["Color"], "default_value", text="Background (World)")
        elif scene.world is not None:
            layout.prop(scene.world, "color", text="Background (World)")
        layout.separator()
        layout.prop(settings, "preview_scale")
        layout.prop(settings, "still_delay")
        if context.view_layer is not None:
            layout.prop(context.view_layer, "use_pass_z", text="Depth Pass")
        layout.label(text="Passes: Combined (restored), ExGS Raw, ExGS Alpha, Depth")


def _background_node(world: bpy.types.World | None) -> bpy.types.Node | None:
    """The world's unlinked Background node (what the engine uses as background colour), if any."""
    if world is None or world.node_tree is None or not getattr(world, "use_nodes", False):
        return None
    for node in world.node_tree.nodes:
        if node.type == "BACKGROUND" and not node.inputs["Color"].is_linked:
            return node
    return None


classes = (VIEW3D_PT_exgs_compress, RENDER_PT_exgs)

register, unregister = bpy.utils.register_classes_factory(classes)
