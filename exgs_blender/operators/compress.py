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
from ..blend_payload import attach_payload
from .io import OperatorResult
from ..engine import render_camera
from ..properties import read_stats, store_stats
from ..splats import create_splat, info_of, is_exgs_splat, is_splat, replace_splats, scene_of



class CompressJob:
    """One compression of a world-space scene; run() in this thread or start() a thread. No bpy inside."""

    def __init__(self, scene: GaussianScene, target: dict, cameras: list[Camera] | None, sh_degree: int | str | None,
                 rt: Any, views: str = "", restoration: str = "fit") -> None:
        self.scene, self.target, self.cameras, self.sh_degree, self.runtime = scene, target, cameras, sh_degree, rt
        self.views = views  # what the scoring views are, for the user
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


def camera_path_animated(scene: bpy.types.Scene) -> bool:
    """Whether the active camera may move over the frame range: it or a parent is animated or constrained
    (cheap, for panels; scoring_cameras() checks the actual matrices)."""
    obj = scene.camera
    while obj is not None:
        animation = obj.animation_data
        if (animation is not None and (animation.action is not None or len(animation.drivers) > 0)) or len(obj.constraints):
            return True
        obj = obj.parent
    return False


def path_cameras(scene: bpy.types.Scene, path_views: int) -> list[Camera]:
    """The active camera at `path_views` frames spread over the frame range (the current frame is restored)."""
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


def scoring_cameras(context: bpy.types.Context, views: str, path_views: int) -> tuple[list[Camera] | None, str]:
    """World-space scoring views and what they are: None for the orbit, the scene's cameras, or the active
    camera's path. "AUTO" takes the path when the active camera moves over the frame range, else the orbit."""
    scene = context.scene
    if views == "ORBIT" or scene is None:
        return None, "24 orbit views"
    if views == "CAMERAS":
        objects = [o for o in scene.objects if o.type == "CAMERA" and o.data.type == "PERSP"]
        if not objects:
            raise ValueError("the scene has no perspective camera to score from")
        return [render_camera(scene, o) for o in objects], f"{len(objects)} scene cameras"
    if views == "AUTO":
        camera = scene.camera
        if camera is None or camera.data.type != "PERSP" or not camera_path_animated(scene):
            return None, "24 orbit views (no animated camera)"
        cameras = path_cameras(scene, path_views)
        if all(np.allclose(c.world_to_camera, cameras[0].world_to_camera) for c in cameras):
            return None, "24 orbit views (the camera does not move)"
        return cameras, f"the camera path ({len(cameras)} views of {camera.name!r})"
    cameras = path_cameras(scene, path_views)
    return cameras, f"the camera path ({len(cameras)} views)"


def target_miss(target: dict, stats: dict) -> str | None:
    """One line when the result misses a ratio or size target by more than the promised 2%, else None."""
    if target["kind"] == "ratio":
        got, wanted, unit = float(stats["ratio_vs_inria_ply"]), float(target["value"]), "x"
    elif target["kind"] == "size":
        got, wanted, unit = float(stats["bytes_after"]) / 1e6, float(target["value"]) / 1e6, " MB"
    else:
        return None
    if abs(got - wanted) <= 0.02 * wanted:
        return None
    small = (got > wanted) if unit == "x" else (got < wanted)
    why = ("keeping every Gaussian already makes the file this small: ask for a higher ratio, or raise SH Degree"
           if small else "this is the smallest file this scene allows")
    return f"target {wanted:g}{unit} not reachable: got {got:.1f}{unit} ({why})"


def prepare_job(context: bpy.types.Context, obj: bpy.types.Object) -> CompressJob:
    settings = context.scene.exgs_compress
    scene = scene_of(obj, world_space=True)
    cameras, views = scoring_cameras(context, settings.views, settings.path_views)
    sh_degree = "auto" if settings.sh_degree == "AUTO" else int(settings.sh_degree)
    return CompressJob(scene, target_of(settings), cameras, sh_degree, runtime.get_runtime(), views,
                       "fit" if settings.fit_restoration else "none")


def already_compressed(obj: bpy.types.Object) -> str | None:
    """A warning when `obj` holds Gaussians that compression already pruned and quantised, else None."""
    ratio = info_of(obj)["inria_ratio"]
    if ratio is None and read_stats(obj) is None:
        return None
    shown = f" ({ratio:.1f}x)" if ratio else ""
    return (f"{obj.name!r} is already compressed{shown}: compressing it again prunes the pruned Gaussians and the "
            "ratio no longer compares with the original; compress the original object instead")


def apply_result(context: bpy.types.Context, obj: bpy.types.Object, job: CompressJob, mode: str) -> bpy.types.Object:
    """Put the compressed Gaussians (object space) into a new object or into `obj`; stats on the result."""
    assert job.data is not None and job.stats is not None
    decoded = decode_exgs(job.data)
    matrix = np.array(obj.matrix_world, dtype=np.float64)
    to_local = None if np.allclose(matrix, np.eye(4), atol=0) else np.linalg.inv(matrix)
    local = decoded if to_local is None else decoded.transformed(to_local)
    source = info_of(obj)["source_name"] or obj.name
    if not source.endswith(" (ExGS)"):
        source = f"{source} (ExGS)"
    local.metadata.update(source_name=source, source_bytes=len(job.data))
    if mode == "REPLACE" and is_exgs_splat(obj):  # Blender's own splats always get a new ExGS object
        replace_splats(obj, local)
        result = obj
    else:
        collection = obj.users_collection[0] if obj.users_collection else None
        base = obj.name[: -len(" ExGS")] if obj.name.endswith(" ExGS") else obj.name
        result = create_splat(local, f"{base} ExGS", collection)
        result.matrix_world = obj.matrix_world.copy()
        for other in context.view_layer.objects.selected:
            other.select_set(False)
        if mode == "NEW_DELETE":
            _delete_object(obj)
        else:
            obj.hide_set(True)
            obj.hide_render = True
        result.select_set(True)
        context.view_layer.objects.active = result
    attach_payload(result.data, job.data, to_local)  # what a saved .blend keeps
    store_stats(result, job.stats)
    return result


def _delete_object(obj: bpy.types.Object) -> None:
    """Remove an object and, when nothing else uses it, its data: the .blend then holds only the compressed copy."""
    data = obj.data
    bpy.data.objects.remove(obj)
    if data is not None and data.users == 0:
        if isinstance(data, bpy.types.Mesh):
            bpy.data.meshes.remove(data)
        elif isinstance(data, bpy.types.PointCloud):
            bpy.data.pointclouds.remove(data)


def _first_run_note() -> str:
    from exgs_core.worker import kernels_cached

    return "" if kernels_cached() else " (compiling kernels, first run only: up to a minute)"


# --- the operator ------------------------------------------------------------------------------------------


class EXGS_OT_compress(bpy.types.Operator):
    """Compress the active splat object with UGC (Esc cancels; the original is kept until it succeeds)"""

    bl_idname = "exgs.compress"
    bl_label = "Compress"
    bl_options = {"REGISTER", "UNDO"}

    _job: CompressJob | None = None
    _object_name: str = ""
    _warnings: list[str] = []
    _timer: Any = None

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        obj = context.active_object
        if not is_splat(obj):
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
        self._warnings = [w for w in (already_compressed(obj),) if w]
        for warning in self._warnings:
            self.report({"WARNING"}, f"ExGS compress: {warning}")
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
        settings.running, settings.progress, settings.status = True, 0.0, f"Compressing{_first_run_note()} (Esc to cancel)"
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
                note = _first_run_note() if job.fraction == 0.0 else ""
                settings.status = f"{job.stage.capitalize()} {100 * job.fraction:.0f}%{note} (Esc to cancel)"
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
                           f"{stats.get('ratio_vs_inria_ply', 0):.1f}x vs the INRIA .ply, scored from {job.views}")
        self.report({"INFO"}, f"ExGS compress: {settings.status}")
        miss = target_miss(job.target, stats)
        for warning in self._warnings + ([miss] if miss else []):
            settings.status = f"Warning: {warning}"
            self.report({"WARNING"}, f"ExGS compress: {warning}")
        return {"FINISHED"}


classes = (EXGS_OT_compress,)

register, unregister = bpy.utils.register_classes_factory(classes)
