"""Add-on preferences: where the runtime (torch, numba, diffusers) comes from, and what was found."""

from __future__ import annotations

import bpy
from bpy.props import EnumProperty, StringProperty

from . import runtime
from .operators.io import OperatorResult

_info_cache: dict[str, dict] = {}


class EXGS_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = runtime.ADDON_ID

    runtime_mode: EnumProperty(  # type: ignore[valid-type]
        name="Runtime",
        items=[("AUTO", "Automatic", "Blender's own Python when it has torch and numba, otherwise a worker"),
               ("WORKER", "Worker process", "Always compute in a separate Python process")],
        default="AUTO",
    )
    python_path: StringProperty(  # type: ignore[valid-type]
        name="Existing Python",
        description="A Python with torch, numba and diffusers (empty: the runtime set up below)",
        subtype="FILE_PATH",
    )

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        if layout is None:
            return
        layout.prop(self, "runtime_mode")
        layout.prop(self, "python_path")
        problem = runtime.runtime_problem()
        box = layout.box()
        if problem:
            box.label(text=problem, icon="ERROR")
        info = _info_cache.get("info")
        if info:
            found = ", ".join(f"{k} {info[k]}" for k in ("python", "torch", "numba", "diffusers", "gsplat") if info.get(k))
            box.label(text=f"Found: {found}", icon="CHECKMARK")
            box.label(text=f"Device: {info.get('device', 'none')}  ({info.get('executable')})")
        box.operator(EXGS_OT_check_runtime.bl_idname, icon="FILE_REFRESH")
        setup = layout.box()
        setup.label(text=f"Set up a runtime in {runtime.runtime_dir()} (downloads torch, about 1-3 GB):")
        for command in runtime.setup_commands():
            setup.label(text="  " + " ".join(command))
        status = runtime.setup_status()
        if status["message"]:
            setup.label(text=status["message"], icon="INFO")
        row = setup.row()
        row.enabled = not status["running"]
        row.operator(EXGS_OT_setup_runtime.bl_idname, icon="IMPORT")


class EXGS_OT_check_runtime(bpy.types.Operator):
    """Find the runtime and show its versions and device"""

    bl_idname = "exgs.check_runtime"
    bl_label = "Check Runtime"

    def execute(self, context: bpy.types.Context) -> OperatorResult:
        try:
            _info_cache["info"] = runtime.get_runtime().info()
        except Exception as error:  # any failure is reported to the user in one line
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        info = _info_cache["info"]
        self.report({"INFO"}, f"ExGS runtime: torch {info.get('torch')}, {info.get('device')}")
        return {"FINISHED"}


class EXGS_OT_setup_runtime(bpy.types.Operator):
    """Create a virtualenv in the extension's user folder and install torch, numba and diffusers into it"""

    bl_idname = "exgs.setup_runtime"
    bl_label = "Set Up Runtime"

    def execute(self, context: bpy.types.Context) -> OperatorResult:
        runtime.start_setup()
        self.report({"INFO"}, runtime.setup_status()["message"])
        return {"FINISHED"}


classes = (EXGS_AP_preferences, EXGS_OT_check_runtime, EXGS_OT_setup_runtime)

register, unregister = bpy.utils.register_classes_factory(classes)
