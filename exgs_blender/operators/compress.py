"""bpy.ops.exgs.compress(): UGC compression of the active splat object.

In the UI (invoke) the job runs on a thread while a modal operator polls it with a timer, shows progress and
cancels on Esc. Called from a script (EXEC, the default of bpy.ops, and always in background mode) it runs
synchronously. The original is read once, on the main thread, before the job starts, and only written after a
successful job: a cancelled or failed run leaves it untouched.
"""

from __future__ import annotations

import threading
from typing import Any

import bpy
import numpy as np

from exgs_core.camera import Camera
from exgs_core.scene import GaussianScene
from exgs_core.io.exgs import decode_exgs
from exgs_core.worker import Cancelled

from .. import runtime
from .io import OperatorResult
from ..engine import render_camera
from ..properties import read_stats, store_stats
from ..splat_object import create_splat_object, is_splat_object, replace_splat_data, scene_from_object, splat_info



class CompressJob:
    """One compression of a world-space scene; run() in this thread or start() a thread. No bpy inside."""

    def __init__(self, scene: GaussianScene, target: dict, cameras: list[Camera] | None, sh_degree: int,
                 rt: Any, restoration: str = "fit") -> None:
        self.scene, self.target, self.cameras, self.sh_degree, self.runtime = scene, target, cameras, sh_degree, rt
        self.restoration = restoration
        self.stage, self.fraction = "starting", 0.0
        self.data: bytes | None = None
        self.stats: dict | None = None
        self.error: str | None = None
        self.cancelled = False
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None

    def _progress(self, stage: str, fraction: float) -> None:
        if self._cancel.is_set():
            raise Cancelled("compression cancelled")
        self.stage, self.fraction = stage, float(fraction)

    def run(self) -> None:
        try:
            self.data, self.stats = self.runtime.compress(self.scene, self.target, self.cameras, self.sh_degree,
                                                          self._progress, self.restoration)
        except Cancelled:
            self.cancelled = True
        except Exception as error:  # reported to the user by the operator
            self.error = str(error) or type(error).__name__

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="exgs-compress", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def finished(self) -> bool:
        return self._thread is None or not self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.finished


# --- reading the job's inputs from Blender (main thread) ----------------------------------------------------


def target_of(settings: Any) -> dict:
    if settings.target == "KEEP":
        return {"kind": "keep", "value": float(settings.keep)}
    if settings.target == "SIZE":
        return {"kind": "size", "value": float(int(settings.size_mb * 1e6))}
    return {"kind": "ratio", "value": float(settings.ratio)}


def scoring_cameras(context: bpy.types.Context, views: str, path_views: int) -> list[Camera] | None:
    """World-space scoring views: None for the automatic orbit, the scene's cameras, or the active camera's path."""
    scene = context.scene
    if views == "AUTO" or scene is None:
        return None
    if views == "CAMERAS":
        objects = [o for o in scene.objects if o.type == "CAMERA" and o.data.type == "PERSP"]
        if not objects:
            raise ValueError("the scene has no perspective camera to score from")
        return [render_camera(scene, o) for o in objects]
    if scene.camera is None:
        raise ValueError("the scene has no active camera")
    frames = np.unique(np.linspace(scene.frame_start, scene.frame_end, path_views).round().astype(int))
    current, cameras = scene.frame_current, []
    try:
        for frame in frames:
            scene.frame_set(int(frame))
            cameras.append(render_camera(scene, scene.camera))
    finally:
        scene.frame_set(current)
    return cameras


def prepare_job(context: bpy.types.Context, obj: bpy.types.Object) -> CompressJob:
    settings = context.scene.exgs_compress
    scene = scene_from_object(obj, world_space=True)
    cameras = scoring_cameras(context, settings.views, settings.path_views)
    return CompressJob(scene, target_of(settings), cameras, settings.sh_degree, runtime.get_runtime(),
                       "fit" if settings.fit_restoration else "none")


def apply_result(context: bpy.types.Context, obj: bpy.types.Object, job: CompressJob, mode: str) -> bpy.types.Object:
    """Put the compressed Gaussians (object space) into a new object or into `obj`; stats on the result."""
    assert job.data is not None and job.stats is not None
    decoded = decode_exgs(job.data)
    matrix = np.array(obj.matrix_world, dtype=np.float64)
    local = decoded if np.allclose(matrix, np.eye(4), atol=0) else decoded.transformed(np.linalg.inv(matrix))
    source = splat_info(obj)["source_name"] or obj.name
    local.metadata.update(source_name=f"{source} (ExGS)", source_bytes=len(job.data))
    if mode == "REPLACE":
        replace_splat_data(obj, local)
        result = obj
    else:
        collection = obj.users_collection[0] if obj.users_collection else None
        result = create_splat_object(local, f"{obj.name} ExGS", collection)
        result.matrix_world = obj.matrix_world.copy()
        obj.hide_set(True)
        obj.hide_render = True
        for other in context.view_layer.objects.selected:
            other.select_set(False)
        result.select_set(True)
        context.view_layer.objects.active = result
    store_stats(result, job.stats)
    return result


# --- the operator ------------------------------------------------------------------------------------------


class EXGS_OT_compress(bpy.types.Operator):
    """Compress the active splat object with UGC (Esc cancels; the original is kept until it succeeds)"""

    bl_idname = "exgs.compress"
    bl_label = "Compress"
    bl_options = {"REGISTER", "UNDO"}

    _job: CompressJob | None = None
    _object_name: str = ""
    _timer: Any = None

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        obj = context.active_object
        if not is_splat_object(obj):
            cls.poll_message_set("Select a splat object (File > Import > Gaussian Splats)")
            return False
        if context.scene.exgs_compress.running:
            cls.poll_message_set("A compression is running")
            return False
        return True

    def _start(self, context: bpy.types.Context) -> CompressJob | None:
        obj = context.active_object
        if obj is None:
            return None
        try:
            job = prepare_job(context, obj)
        except Exception as error:  # missing runtime, bad transform, no camera: one line for the user
            self.report({"ERROR"}, f"ExGS compress: {error}")
            return None
        self._object_name = obj.name
        return job

    def execute(self, context: bpy.types.Context) -> OperatorResult:
        job = self._start(context)
        if job is None:
            return {"CANCELLED"}
        job.run()
        return self._finish(context, job)

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> OperatorResult:
        if bpy.app.background:
            return self.execute(context)
        job = self._start(context)
        if job is None:
            return {"CANCELLED"}
        self._job = job
        job.start()
        settings = context.scene.exgs_compress
        settings.running, settings.progress, settings.status = True, 0.0, "Compressing (Esc to cancel)"
        window_manager = context.window_manager
        window_manager.progress_begin(0, 100)
        self._timer = window_manager.event_timer_add(0.1, window=context.window)
        window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> OperatorResult:
        job = self._job
        assert job is not None
        if event.type == "ESC" and not job.cancelled:
            job.cancel()
            context.scene.exgs_compress.status = "Cancelling..."
        if event.type == "TIMER":
            settings = context.scene.exgs_compress
            settings.progress = job.fraction
            if not job._cancel.is_set():
                settings.status = f"{job.stage.capitalize()} {100 * job.fraction:.0f}% (Esc to cancel)"
            context.window_manager.progress_update(int(100 * job.fraction))
            for area in context.screen.areas if context.screen else ():
                area.tag_redraw()
            if job.finished:
                self._end_modal(context)
                return self._finish(context, job)
        return {"RUNNING_MODAL"} if event.type in ("TIMER", "ESC") else {"PASS_THROUGH"}

    def _end_modal(self, context: bpy.types.Context) -> None:
        window_manager = context.window_manager
        window_manager.event_timer_remove(self._timer)
        window_manager.progress_end()
        settings = context.scene.exgs_compress
        settings.running, settings.progress = False, 0.0

    def _finish(self, context: bpy.types.Context, job: CompressJob) -> OperatorResult:
        settings = context.scene.exgs_compress
        obj = bpy.data.objects.get(self._object_name)
        if job.cancelled or job.error or obj is None:
            message = "cancelled" if job.cancelled else (job.error or f"object {self._object_name!r} was removed")
            settings.status = f"Compression {message}; the original is unchanged"
            self.report({"WARNING"} if job.cancelled else {"ERROR"}, f"ExGS compress: {settings.status}")
            return {"CANCELLED"}
        result = apply_result(context, obj, job, settings.result)
        stats = read_stats(result) or {}
        settings.status = (f"{stats.get('gaussians_before', 0):,} -> {stats.get('gaussians_after', 0):,} Gaussians, "
                           f"{stats.get('ratio_vs_inria_ply', 0):.1f}x vs the INRIA .ply")
        self.report({"INFO"}, f"ExGS compress: {settings.status}")
        return {"FINISHED"}


classes = (EXGS_OT_compress,)

register, unregister = bpy.utils.register_classes_factory(classes)
