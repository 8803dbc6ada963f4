"""The EXGS render engine: F12, Render Animation and Rendered viewport shading of splat objects.

Frames are computed by the runtime (exgs_blender.runtime: in-process or a worker process); this module only
moves data: Blender cameras -> exgs_core Cameras, splat objects -> one world-space GaussianScene, frames ->
render passes. Colours: 3DGS colours are display-referred sRGB, Blender's Render Result is scene-linear, so the
passes hold sRGB-to-linear colours (Blender's Standard view transform shows the file's colours) and the world
colour goes the other way for the background. Images: row 0 at the bottom (flipped).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import bpy
import numpy as np

from exgs_core.camera import Camera, FLIP_YZ, blender_camera_to_camera
from exgs_core.painter.strength import strength_for_ratio
from exgs_core.scene import GaussianScene
from exgs_core.worker import Correction, Frame

from . import runtime
from .splats import change_key, check_transform, info_of, is_splat, restoration_of, scene_of

RAW_PASS = "ExGS Raw"
ALPHA_PASS = "ExGS Alpha"
BACKGROUND_DEPTH = 1e10  # what Blender's Depth pass holds where nothing was hit


# --- colour -------------------------------------------------------------------------------------------------


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1 / 2.4) - 0.055).astype(np.float32)


def world_color(scene: bpy.types.Scene) -> tuple[float, float, float]:
    """The world's colour (scene-linear): its Background node's colour when unlinked, else the viewport colour."""
    world = scene.world
    if world is None:
        return (0.0, 0.0, 0.0)
    tree = world.node_tree if getattr(world, "use_nodes", False) else None
    if tree is not None:
        for node in tree.nodes:
            if node.type == "BACKGROUND" and not node.inputs["Color"].is_linked:
                color: Any = node.inputs["Color"]
                strength: Any = node.inputs["Strength"]
                return tuple(float(c) * float(strength.default_value) for c in color.default_value[:3])  # type: ignore
    return tuple(float(c) for c in world.color[:3])  # type: ignore[return-value]


def display_background(scene: bpy.types.Scene) -> tuple[float, float, float]:
    """The background our renderer composites with (display sRGB): black for a transparent film."""
    if scene.render.film_transparent:
        return (0.0, 0.0, 0.0)
    return tuple(float(c) for c in linear_to_srgb(np.array(world_color(scene))))  # type: ignore[return-value]


def linear_rgba(rgb: np.ndarray, alpha: np.ndarray, transparent: bool) -> np.ndarray:
    """(H, W, 4) premultiplied scene-linear RGBA from a display-sRGB frame composited over the background."""
    out = np.empty(rgb.shape[:2] + (4,), np.float32)
    if transparent:
        straight = rgb / np.maximum(alpha, 1e-6)[..., None]
        out[..., :3] = srgb_to_linear(straight) * alpha[..., None]
        out[..., 3] = alpha
    else:
        out[..., :3] = srgb_to_linear(rgb)
        out[..., 3] = 1.0
    return out


def pass_pixels(frame: Frame, transparent: bool) -> dict[str, np.ndarray]:
    """Every pass as (H, W, C) float32, row 0 at the top: Combined, ExGS Raw, ExGS Alpha, Depth."""
    depth = np.where(frame.alpha > 1e-6, frame.depth, BACKGROUND_DEPTH).astype(np.float32)
    return {
        "Combined": linear_rgba(frame.combined, frame.alpha, transparent),
        RAW_PASS: linear_rgba(frame.raw, frame.alpha, transparent),
        ALPHA_PASS: frame.alpha[..., None].astype(np.float32),
        "Depth": depth[..., None],
    }


def blender_rows(image: np.ndarray) -> np.ndarray:
    """Flat float32 pixels in Blender's order (row 0 at the bottom) for rect.foreach_set."""
    return np.ascontiguousarray(image[::-1], dtype=np.float32).reshape(-1)


# --- cameras ------------------------------------------------------------------------------------------------


def render_camera(scene: bpy.types.Scene, camera_object: bpy.types.Object) -> Camera:
    """The exgs_core Camera that `scene` renders `camera_object` with (evaluated object for animation)."""
    data = camera_object.data
    if data.type != "PERSP":
        raise ValueError(f"camera {camera_object.name!r} is {data.type.lower()}: ExGS renders perspective cameras")
    r = scene.render
    return blender_camera_to_camera(
        data.lens, data.sensor_width, data.sensor_height, data.sensor_fit, data.shift_x, data.shift_y,
        r.resolution_x, r.resolution_y, r.resolution_percentage, r.pixel_aspect_x, r.pixel_aspect_y,
        np.array(camera_object.matrix_world, dtype=np.float64),
    )


def camera_from_matrices(width: int, height: int, projection: np.ndarray, view: np.ndarray) -> Camera:
    """The Camera of an OpenGL perspective projection (window_matrix) and world-to-view matrix (view_matrix).

    For x_ndc = P00 x/(-z) + P02 z/(-z) and u = (x_ndc + 1) W / 2: fx = P00 W/2, cx = (1 - P02) W/2; likewise
    fy = P11 H/2, cy = (1 + P12) H/2 with v pointing down. ValueError for orthographic projections.
    """
    p = np.asarray(projection, dtype=np.float64)
    if abs(p[3, 3]) > 1e-9 or abs(p[3, 2] + 1.0) > 1e-6:
        raise ValueError("orthographic view: ExGS renders perspective views only")
    fx, fy = p[0, 0] * width / 2, p[1, 1] * height / 2
    cx, cy = (1.0 - p[0, 2]) * width / 2, (1.0 + p[1, 2]) * height / 2
    world_to_camera = FLIP_YZ @ np.asarray(view, dtype=np.float64)
    return Camera(world_to_camera, fx, fy, cx, cy, width, height)


# --- splat objects -> one world-space scene (cached) -----------------------------------------------------------


@dataclass
class _CachedObject:
    fingerprint: str
    local: GaussianScene


_object_cache: dict[str, _CachedObject] = {}


def _local_scene(obj: bpy.types.Object, reuse: bool = False) -> tuple[str, GaussianScene]:
    """(fingerprint, object-space scene), cached per object; `reuse` trusts the cache without re-reading the
    data (the viewport does when the depsgraph reports no geometry change for the object)."""
    key = obj.original.name_full
    cached = _object_cache.get(key)
    if reuse and cached is not None:
        return cached.fingerprint, cached.local
    fingerprint = change_key(obj)
    if cached is None or cached.fingerprint != fingerprint:
        cached = _CachedObject(fingerprint, scene_of(obj, world_space=False))
        _object_cache[key] = cached
    return fingerprint, cached.local


def splat_objects(depsgraph: bpy.types.Depsgraph, viewport: bool = False) -> list[bpy.types.Object]:
    """The visible splat objects of the depsgraph (evaluated; ours and Blender's native ones), each once."""
    seen: dict[str, bpy.types.Object] = {}
    for obj in depsgraph.objects:
        if not is_splat(obj) or obj.original.name_full in seen:
            continue
        if viewport and not obj.original.visible_get():
            continue
        seen[obj.original.name_full] = obj
    return list(seen.values())


@dataclass(frozen=True)
class ObjectRestoration:
    """What can restore one splat object: its own fitted restoration (Restoration.to_text() and validated
    strength, from its .exgs file; None without one) and its compression ratio against the INRIA .ply (None:
    never compressed), which sets GaussPainter's strength "By Compression"."""

    fitted: str | None
    fitted_strength: float | None
    ratio: float | None


def object_restoration(obj: bpy.types.Object) -> ObjectRestoration:
    """Read from the object's data (custom properties: milliseconds, on the main thread)."""
    stored = restoration_of(obj)
    ratio = info_of(obj)["inria_ratio"]  # None for native objects: never compressed
    if stored is None:
        return ObjectRestoration(None, None, ratio)
    return ObjectRestoration(stored.to_text(), float(stored.strength), ratio)


def generic_strength(settings: Any, ratio: float | None) -> float:
    """The share of GaussPainter's correction for an object compressed `ratio` times (None: never compressed);
    0 while GaussPainter is off. "By Compression": strength_for_ratio; objects never compressed need none."""
    if not settings.use_restore:
        return 0.0
    if settings.strength_mode == "MANUAL":
        return float(settings.strength)
    return strength_for_ratio(ratio) if ratio is not None else 0.0


def object_correction(settings: Any, own: ObjectRestoration, start: int, stop: int) -> Correction | None:
    """How the object whose Gaussians are [start, stop) of the frame's scene is restored; None: it stays raw.

    Its own fitted restoration at its validated strength while Fitted Restoration is on (a validated strength 0
    means its file found no correction that helps: GaussPainter is not tried instead); otherwise GaussPainter at
    generic_strength (off by default: nothing showed that the generic painter helps objects it was not fitted to).
    """
    if settings.use_fitted and own.fitted is not None:
        return Correction(start, stop, own.fitted_strength, own.fitted) if own.fitted_strength else None
    strength = generic_strength(settings, own.ratio)
    return Correction(start, stop, strength) if strength > 0 else None


@dataclass
class WorldParts:
    """The splat objects of a frame: each object-space scene and its world matrix (None: identity), what can
    restore each object, and a key that changes when any data or transform changes. Cheap to make on the main
    thread; build() (the costly transform, seconds for 1M Gaussians) runs on any thread and keeps the last scene
    it built (the objects' Gaussians concatenated in this order)."""

    key: str
    parts: list[tuple[GaussianScene, np.ndarray | None]]
    restorations: list[ObjectRestoration]

    def corrections(self, settings: Any) -> tuple[Correction, ...]:
        """One Correction per object that is restored (each applied only where its object shows)."""
        found, start = [], 0
        for (local, _), own in zip(self.parts, self.restorations):
            correction = object_correction(settings, own, start, start + len(local))
            if correction is not None:
                found.append(correction)
            start += len(local)
        return tuple(found)

    def build(self) -> GaussianScene:
        with _built_lock:
            if _built.get("key") == self.key:
                return _built["scene"]
        scenes = [local if matrix is None else local.transformed(matrix) for local, matrix in self.parts]
        scene = scenes[0] if len(scenes) == 1 else GaussianScene.concatenate(scenes)
        with _built_lock:
            _built.update(key=self.key, scene=scene)
        return scene


_built: dict[str, Any] = {}  # the last world scene built: {"key", "scene"}
_built_lock = threading.Lock()


def world_parts(objects: Iterable[bpy.types.Object], unchanged: Callable[[bpy.types.Object], bool] | None = None
                ) -> WorldParts | None:
    """The WorldParts of these objects, None without objects. `unchanged(obj)` True: reuse the cached data.

    ValueError naming the object when its transform is not a rotation with uniform scale.
    """
    keys, parts, restorations = [], [], []
    for obj in objects:
        fingerprint, local = _local_scene(obj, reuse=unchanged is not None and unchanged(obj))
        matrix = np.array(obj.matrix_world, dtype=np.float64)
        identity = np.allclose(matrix, np.eye(4), atol=0)
        if not identity:
            check_transform(obj, matrix)
        keys.append(fingerprint + matrix.tobytes().hex())
        parts.append((local, None if identity else matrix))
        restorations.append(object_restoration(obj))
    if not parts:
        return None
    return WorldParts(hashlib.blake2b("|".join(keys).encode(), digest_size=16).hexdigest(), parts, restorations)


def world_scene(objects: Iterable[bpy.types.Object]) -> tuple[str, GaussianScene] | None:
    """(key, scene): all objects in world space; the key changes when any data or transform changes."""
    found = world_parts(objects)
    return None if found is None else (found.key, found.build())


def ensure_scene(rt: runtime.Runtime, objects: list[bpy.types.Object]) -> WorldParts | None:
    """Send the current splat scene to the runtime when it changed; its parts (their key names it in the
    runtime), or None with no splat objects. An unchanged scene (same data and transforms) is not rebuilt:
    animation frames that move nothing are cheap."""
    found = world_parts(objects)
    if found is None:
        return None
    if not rt.has_scene(found.key):
        rt.load_scene(found.key, found.build())
    return found


def viewport_parts(depsgraph: bpy.types.Depsgraph, first: bool) -> WorldParts | None:
    """What view_update needs, in milliseconds when nothing changed: object data is re-read only for objects
    the depsgraph reports a geometry change for (everything on an engine's `first` call)."""
    changed = None if first else {update.id.original.name_full for update in depsgraph.updates
                                  if update.is_updated_geometry}

    def unchanged(obj: bpy.types.Object) -> bool:
        return changed is not None and obj.original.name_full not in changed and obj.original.data.name_full not in changed
    return world_parts(splat_objects(depsgraph, viewport=True), unchanged)


# --- the viewport's background renderer (no bpy, no gpu: testable headless) ---------------------------------


@dataclass
class ViewRequest:
    key: str
    camera: Camera
    background: tuple[float, float, float]
    corrections: tuple[Correction, ...]  # WorldParts.corrections(): empty renders raw
    weights: str | None
    preview_scale: float
    still_delay: float
    # Sent to the runtime when it lacks `key`: a scene, or a function building it (called on the renderer's thread).
    scene: GaussianScene | Callable[[], GaussianScene] | None = field(default=None, compare=False)


class ViewportRenderer:
    """Renders viewport frames on a thread: a quick raw frame for each new view, the full one once still.

    `request()` never blocks; `latest()` is the newest finished (request, frame, final) for drawing;
    `on_frame` is called from the thread after each frame (the engine turns it into a redraw on the main thread).
    """

    def __init__(self, get_runtime: Callable[[], Any], on_frame: Callable[[], None] | None = None) -> None:
        self._get_runtime = get_runtime
        self._on_frame = on_frame or (lambda: None)
        self._wanted: ViewRequest | None = None
        self._latest: tuple[ViewRequest, Frame, bool] | None = None
        self.error: str | None = None
        self._changed = threading.Condition()
        self._stop = False
        self._busy = False
        self._thread = threading.Thread(target=self._loop, name="exgs-viewport", daemon=True)
        self._thread.start()

    def request(self, request: ViewRequest) -> None:
        with self._changed:
            if self._wanted == request:
                return
            self._wanted = request
            self._changed.notify()

    def latest(self) -> tuple[ViewRequest, Frame, bool] | None:
        return self._latest

    def wait_final(self, timeout: float) -> bool:
        """For tests and scripts: wait until the final frame of the current request is out."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            latest = self._latest
            if (latest is not None and latest[2] and latest[0] == self._wanted) or self.error:
                return self.error is None
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        with self._changed:
            self._stop = True
            self._changed.notify()

    def _next(self) -> ViewRequest | None:
        with self._changed:
            while not self._stop and (self._wanted is None or self._done(self._wanted)):
                self._changed.wait()
            return None if self._stop else self._wanted

    def _done(self, request: ViewRequest) -> bool:
        return self._latest is not None and self._latest[0] == request and self._latest[2]

    def _still(self, request: ViewRequest) -> bool:
        with self._changed:
            self._changed.wait_for(lambda: self._stop or self._wanted != request, timeout=request.still_delay)
            return not self._stop and self._wanted == request

    def _loop(self) -> None:
        while (request := self._next()) is not None:
            try:
                rt = self._get_runtime()
                if request.scene is not None and not rt.has_scene(request.key):
                    rt.load_scene(request.key, request.scene() if callable(request.scene) else request.scene)
                preview = self._latest is None or self._latest[0] != request
                if preview and request.preview_scale < 1.0:
                    camera = request.camera.scaled(request.preview_scale)
                    self._publish(request, rt.render(request.key, camera, request.background), False)
                    if not self._still(request):
                        continue
                frame = rt.render(request.key, request.camera, request.background, request.corrections,
                                  request.weights)
                self._publish(request, frame, True)
                self.error = None
            except Exception as error:  # shown in the viewport; the next request tries again
                self.error = str(error)
                with self._changed:
                    self._changed.wait(timeout=1.0)

    def _publish(self, request: ViewRequest, frame: Frame, final: bool) -> None:
        self._latest = (request, frame, final)
        self._on_frame()


# --- the engine ---------------------------------------------------------------------------------------------


class ExgsRenderEngine(bpy.types.RenderEngine):
    bl_idname = "EXGS"
    bl_label = "ExGS"
    bl_use_preview = False
    bl_use_postprocess = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._viewport: ViewportRenderer | None = None
        self._view_parts: WorldParts | None = None
        self._view_updated = False
        self._frame_ready = False
        self._texture: Any = None
        self._texture_frame: Any = None

    def __del__(self) -> None:
        viewport = getattr(self, "_viewport", None)
        if viewport is not None:
            viewport.stop()
        if hasattr(super(), "__del__"):
            super().__del__()  # type: ignore[misc]

    # --- F12 and Render Animation ---
    def render(self, depsgraph: bpy.types.Depsgraph) -> None:  # type: ignore[override]
        scene = depsgraph.scene
        if scene is None:
            return
        try:
            camera_object = scene.camera
            if camera_object is None:
                raise ValueError("the scene has no active camera")
            camera = render_camera(scene, camera_object.evaluated_get(depsgraph))
            settings = scene.exgs_render  # type: ignore[attr-defined]
            rt = runtime.get_runtime()
            self.update_stats("ExGS", "Reading splat objects")
            found = ensure_scene(rt, splat_objects(depsgraph))
            if self.test_break():
                return
            self.update_stats("ExGS", "Rendering" + _first_run_note())
            if found is None:
                frame = _empty_frame(camera, display_background(scene))
            else:
                frame = rt.render(found.key, camera, display_background(scene), found.corrections(settings),
                                  weights_folder(settings))
        except Exception as error:  # reported in Blender's render report, like other engines' errors
            self.report({"ERROR"}, f"ExGS: {error}")
            return
        if frame.warning and bpy.app.background:
            # A render farm's worker (blender -b): no one reads a warning there, so a frame that could not be
            # restored as asked fails rather than being written raw in its place.
            self.report({"ERROR"}, f"ExGS: frame {scene.frame_current} not written: {frame.warning}")
            return
        if frame.warning:
            self.report({"WARNING"}, f"ExGS: {frame.warning}")
        if not self.test_break():
            self._write_result(depsgraph, frame, scene.render.film_transparent)

    def _write_result(self, depsgraph: bpy.types.Depsgraph, frame: Frame, transparent: bool) -> None:
        height, width = frame.alpha.shape
        view_layer = depsgraph.view_layer
        self.add_pass(RAW_PASS, 4, "RGBA", layer=view_layer.name)
        self.add_pass(ALPHA_PASS, 1, "X", layer=view_layer.name)
        result = self.begin_result(0, 0, width, height, layer=view_layer.name)
        layer = result.layers[0]
        for name, pixels in pass_pixels(frame, transparent).items():
            render_pass = layer.passes.find_by_name(name, "")
            if render_pass is not None:
                render_pass.rect.foreach_set(blender_rows(pixels))  # type: ignore[arg-type]
        self.end_result(result)

    def update_render_passes(self, scene: bpy.types.Scene | None = None,
                             renderlayer: bpy.types.ViewLayer | None = None) -> None:
        self.register_pass(scene, renderlayer, "Combined", 4, "RGBA", "COLOR")
        self.register_pass(scene, renderlayer, RAW_PASS, 4, "RGBA", "COLOR")
        self.register_pass(scene, renderlayer, ALPHA_PASS, 1, "X", "VALUE")
        if renderlayer is not None and renderlayer.use_pass_z:
            self.register_pass(scene, renderlayer, "Depth", 1, "Z", "VALUE")

    # --- viewport (Rendered shading) ---
    def view_update(self, context: bpy.types.Context, depsgraph: bpy.types.Depsgraph) -> None:  # type: ignore[override]
        # Only finds what changed (milliseconds); the world-space scene is built on the viewport renderer's thread.
        try:
            found = viewport_parts(depsgraph, first=not self._view_updated)
            self._view_updated = True
        except Exception as error:
            found = None
            self.report({"ERROR"}, f"ExGS: {error}")
        self._view_parts = found

    def view_draw(self, context: bpy.types.Context, depsgraph: bpy.types.Depsgraph) -> None:  # type: ignore[override]
        region, region_3d, scene = context.region, context.region_data, depsgraph.scene
        parts = self._view_parts
        if parts is None or region is None or region_3d is None or scene is None:
            return
        try:
            camera = camera_from_matrices(region.width, region.height, np.array(region_3d.window_matrix),
                                          np.array(region_3d.view_matrix))
        except ValueError:
            return  # orthographic view: nothing to draw
        settings = scene.exgs_render  # type: ignore[attr-defined]
        try:
            weights = weights_folder(settings)
        except ValueError as error:
            self.report({"ERROR"}, f"ExGS: {error}")
            weights = None
        request = ViewRequest(parts.key, camera, display_background(scene), parts.corrections(settings), weights,
                              settings.preview_scale, settings.still_delay, scene=parts.build)
        self._viewport_renderer().request(request)
        latest = self._viewport.latest() if self._viewport is not None else None
        if latest is not None:
            _, frame, _ = latest
            self._draw_frame(scene, frame, region.width, region.height)

    def _viewport_renderer(self) -> ViewportRenderer:
        if self._viewport is None:
            self._viewport = ViewportRenderer(runtime.get_runtime, self._mark_frame_ready)
            bpy.app.timers.register(self._redraw_when_ready, first_interval=0.05)
        return self._viewport

    def _mark_frame_ready(self) -> None:
        self._frame_ready = True  # set on the renderer's thread; the timer redraws on the main thread

    def _redraw_when_ready(self) -> float | None:
        try:
            if self._frame_ready:
                self._frame_ready = False
                self.tag_redraw()
            return 0.05
        except ReferenceError:  # the engine was freed (shading switched away)
            return None

    def _draw_frame(self, scene: bpy.types.Scene, frame: Frame, width: int, height: int) -> None:
        import gpu  # only here: the gpu module does not exist in background mode
        from gpu_extras.presets import draw_texture_2d

        if self._texture_frame is not frame:
            pixels = blender_rows(linear_rgba(frame.combined, frame.alpha, True))
            h, w = frame.alpha.shape
            buffer = gpu.types.Buffer("FLOAT", pixels.size, pixels)  # type: ignore[arg-type]
            self._texture = gpu.types.GPUTexture((w, h), format="RGBA16F", data=buffer)
            self._texture_frame = frame
        gpu.state.blend_set("ALPHA_PREMULT")
        self.bind_display_space_shader(scene)
        draw_texture_2d(self._texture, (0, 0), width, height)
        self.unbind_display_space_shader()
        gpu.state.blend_set("NONE")


def weights_folder(settings: Any) -> str | None:
    """The Weights folder as an absolute path (Blender's `//` means next to the .blend), None when empty."""
    if not settings.weights:
        return None
    if settings.weights.startswith("//") and not bpy.data.filepath:
        raise ValueError(f"the Weights folder {settings.weights!r} is relative to the .blend file: save the .blend "
                         "first, or pick an absolute folder")
    return os.path.normpath(bpy.path.abspath(settings.weights))


def _first_run_note() -> str:
    from exgs_core.worker import kernels_cached

    return "" if kernels_cached() else " (compiling kernels, first run only: about 20 s)"


def _empty_frame(camera: Camera, background: tuple[float, float, float]) -> Frame:
    h, w = camera.height, camera.width
    raw = np.broadcast_to(np.array(background, np.float32), (h, w, 3)).copy()
    return Frame(raw, np.zeros((h, w), np.float32), np.zeros((h, w), np.float32))


# Blender's own panels that apply to EXGS too (output, format, frame range, colour management, camera, world).
_SHARED_PANELS = (
    "RENDER_PT_format", "RENDER_PT_frame_range", "RENDER_PT_time_stretching", "RENDER_PT_output",
    "RENDER_PT_encoding", "RENDER_PT_color_management", "RENDER_PT_stamp", "DATA_PT_lens", "DATA_PT_camera",
    "DATA_PT_camera_display", "DATA_PT_context_camera", "WORLD_PT_context_world", "VIEWLAYER_PT_layer",
)


def _shared_panels() -> list[Any]:
    panels = []
    for name in _SHARED_PANELS:
        panel = getattr(bpy.types, name, None)
        if panel is not None and hasattr(panel, "COMPAT_ENGINES"):
            panels.append(panel)
    return panels


def register() -> None:
    bpy.utils.register_class(ExgsRenderEngine)
    for panel in _shared_panels():
        panel.COMPAT_ENGINES.add(ExgsRenderEngine.bl_idname)


def unregister() -> None:
    for panel in _shared_panels():
        panel.COMPAT_ENGINES.discard(ExgsRenderEngine.bl_idname)
    bpy.utils.unregister_class(ExgsRenderEngine)
    _object_cache.clear()
    _built.clear()
