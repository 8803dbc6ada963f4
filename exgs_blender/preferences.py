"""Add-on preferences: where the runtime (torch, numba, diffusers) comes from, its state, and setting it up,
repairing or removing it (all on background threads: the UI never waits for pip or for an import check)."""

from __future__ import annotations

import threading
from typing import Any

import bpy
from bpy.props import EnumProperty, StringProperty

from . import runtime
from .operators.io import OperatorResult

_info: dict[str, Any] = {"info": None, "error": "", "running": False}


def _redraw_preferences() -> float | None:
    """Timer: redraw the Preferences window while a check or set-up runs (threads cannot redraw)."""
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type == "PREFERENCES":
                area.tag_redraw()
    return 0.5 if _info["running"] or runtime.setup_status()["running"] else None


def _start_redraws() -> None:
    if not bpy.app.background and not bpy.app.timers.is_registered(_redraw_preferences):
        bpy.app.timers.register(_redraw_preferences, first_interval=0.5)


def _forget_checks(self: Any, context: bpy.types.Context) -> None:
    # A named function, not a lambda in the property annotation: Blender 5.3 evaluates annotations in a
    # namespace of its own, where a lambda's global names are not found when it is called.
    runtime.forget_checks()


class EXGS_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = runtime.ADDON_ID

    runtime_mode: EnumProperty(  # type: ignore[valid-type]
        name="Runtime",
        items=[("AUTO", "Automatic", "Blender's own Python when it has torch and numba, otherwise a worker"),
               ("WORKER", "Worker process", "Always compute in a separate Python process")],
        default="AUTO",
        update=_forget_checks,
    )
    python_path: StringProperty(  # type: ignore[valid-type]
        name="Existing Python",
        description="A Python with torch, numba and diffusers (empty: the runtime set up below)",
        subtype="FILE_PATH",
        update=_forget_checks,
    )
    wheels_dir: StringProperty(  # type: ignore[valid-type]
        name="Offline Wheels",
        description="Install from this folder of wheels instead of downloading (pip --no-index --find-links); "
                    "make it on a connected machine with: pip download -d FOLDER <the packages below>",
        subtype="DIR_PATH",
    )

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        if layout is None:
            return
        layout.prop(self, "runtime_mode")
        layout.prop(self, "python_path")
        self._draw_state(layout.box())
        self._draw_setup(layout.box())

    def _draw_state(self, box: bpy.types.UILayout) -> None:
        state, message = runtime.runtime_status()
        text = f"Runtime: {state}" + ("" if state in ("missing", "broken") else f" ({message})")
        if state == "ready":
            box.label(text=text, icon="CHECKMARK")
        elif state in ("checking", "installing"):
            box.label(text=text, icon="TIME")
        else:
            box.label(text=text, icon="ERROR")
        if state in ("missing", "broken"):
            for line in message.split(": ", 1):
                box.label(text=line)
        info = _info["info"]
        if info:
            found = ", ".join(f"{k} {info[k]}" for k in ("python", "torch", "numba", "diffusers", "gsplat") if info.get(k))
            box.label(text=f"Found: {found}", icon="CHECKMARK")
            box.label(text=f"Device: {info.get('device', 'none')}  ({info.get('executable')})")
        elif _info["error"]:
            box.label(text=_info["error"], icon="ERROR")
        row = box.row()
        row.enabled = not _info["running"]
        row.operator(EXGS_OT_check_runtime.bl_idname, icon="FILE_REFRESH",
                     text="Checking..." if _info["running"] else "Check Runtime")

    def _draw_setup(self, box: bpy.types.UILayout) -> None:
        plan = runtime.install_plan()
        wheels = bpy.path.abspath(self.wheels_dir) if self.wheels_dir else None
        box.label(text=f"Runtime folder: {runtime.runtime_dir()}")
        box.label(text=f"Installs {plan.build}: " + ("from the offline wheels folder" if wheels else plan.size))
        box.prop(self, "wheels_dir")
        column = box.column(align=True)
        for label, command, _required in runtime.setup_commands(wheels=wheels, plan=plan):
            column.label(text=f"{label}: " + " ".join(runtime.quoted(c) for c in command))
        status = runtime.setup_status()
        if status["running"]:
            box.progress(factor=status["fraction"], type="BAR", text=status["message"][:120])
            box.operator(EXGS_OT_cancel_runtime_setup.bl_idname, icon="CANCEL")
            return
        if status["message"]:
            box.label(text=status["message"], icon="INFO")
        row = box.row()
        exists = runtime.venv_python().is_file()
        row.operator(EXGS_OT_setup_runtime.bl_idname, icon="IMPORT",
                     text="Repair Runtime" if exists else "Set Up Runtime")
        sub = row.row()
        sub.enabled = runtime.runtime_dir().is_dir() and any(runtime.runtime_dir().iterdir())
        sub.operator(EXGS_OT_remove_runtime.bl_idname, icon="TRASH")


class EXGS_OT_check_runtime(bpy.types.Operator):
    """Check the runtime again and show its versions and device (on a thread: the UI does not wait)"""

    bl_idname = "exgs.check_runtime"
    bl_label = "Check Runtime"

    def execute(self, context: bpy.types.Context) -> OperatorResult:
        if _info["running"]:
            return {"CANCELLED"}
        runtime.forget_checks()
        _info.update(running=True, error="", info=None)

        def run() -> None:
            try:
                _info["info"] = runtime.get_runtime().info()
            except Exception as error:  # any failure is shown in the preferences in one line
                _info["error"] = str(error)
            finally:
                _info["running"] = False

        thread = threading.Thread(target=run, name="exgs-runtime-info", daemon=True)
        thread.start()
        if bpy.app.background:  # scripts and tests: answer now
            thread.join()
            if _info["error"]:
                self.report({"ERROR"}, _info["error"])
                return {"CANCELLED"}
            self.report({"INFO"}, f"ExGS runtime: torch {_info['info'].get('torch')}, {_info['info'].get('device')}")
        _start_redraws()
        return {"FINISHED"}


class EXGS_OT_setup_runtime(bpy.types.Operator):
    """Create a virtualenv in the extension's user folder (when missing) and install torch, numba and diffusers
    into it; on an existing runtime this repairs it (pip keeps what is already installed)"""

    bl_idname = "exgs.setup_runtime"
    bl_label = "Set Up Runtime"

    def execute(self, context: bpy.types.Context) -> OperatorResult:
        prefs = runtime.preferences()
        wheels = bpy.path.abspath(prefs.wheels_dir) if prefs is not None and prefs.wheels_dir else None
        runtime.start_setup(wheels=wheels, kind="repair" if runtime.venv_python().is_file() else "setup")
        self.report({"INFO"}, runtime.setup_status()["message"])
        _start_redraws()
        return {"FINISHED"}


class EXGS_OT_cancel_runtime_setup(bpy.types.Operator):
    """Stop the running set-up (the partly installed runtime can be repaired later)"""

    bl_idname = "exgs.cancel_runtime_setup"
    bl_label = "Cancel"

    def execute(self, context: bpy.types.Context) -> OperatorResult:
        runtime.cancel_setup()
        return {"FINISHED"}


class EXGS_OT_remove_runtime(bpy.types.Operator):
    """Delete the runtime virtualenv and everything installed in it"""

    bl_idname = "exgs.remove_runtime"
    bl_label = "Remove Runtime"

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> OperatorResult:
        return context.window_manager.invoke_confirm(self, event)

    def execute(self, context: bpy.types.Context) -> OperatorResult:
        runtime.start_remove()
        self.report({"INFO"}, runtime.setup_status()["message"])
        _start_redraws()
        return {"FINISHED"}


classes = (EXGS_AP_preferences, EXGS_OT_check_runtime, EXGS_OT_setup_runtime, EXGS_OT_cancel_runtime_setup,
           EXGS_OT_remove_runtime)

register, unregister = bpy.utils.register_classes_factory(classes)
