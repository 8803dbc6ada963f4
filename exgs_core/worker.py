"""Frames and compression for Blender, in this process or in a worker process (`python -m exgs_core.worker`).

Blender's own Python lacks torch and numba. The extension then starts a worker: any Python that can import
exgs_core and its runtime (torch, numba, diffusers). Both paths share the same interface (`Runtime`):

    load_scene(key, scene)                       once per scene version
    render(key, camera, background, corrections, weights) -> Frame     corrections: one Correction per restored object
    compress(scene, target, cameras, sh_degree, on_progress) -> (exgs bytes, stats)

Worker protocol, pickle-free: every message is one line of UTF-8 JSON (the header) followed by the raw bytes of
the arrays that the header lists in `header["arrays"]` ([{"name", "dtype", "shape"}], C order, in order).
Requests carry "cmd": hello | scene | render | compress | quit. Replies carry "ok" (and "error" when false);
a compress job sends {"progress": [stage, fraction]} lines before its reply.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Callable, Sequence

import numpy as np

from exgs_core.camera import Camera
from exgs_core.errors import ExgsError
from exgs_core.scene import GaussianScene

ProgressCallback = Callable[[str, float], None]
_SCENE_FIELDS = ("means", "quats", "log_scales", "opacity_logits", "sh")


class WorkerError(ExgsError):
    """The worker process failed or answered with an error."""


class Cancelled(ExgsError):
    """A job was cancelled by the user."""


@dataclass
class Frame:
    raw: np.ndarray  # (H, W, 3) display-referred sRGB, background composited, row 0 at the top
    alpha: np.ndarray  # (H, W) accumulated opacity
    depth: np.ndarray  # (H, W) expected camera depth, 0 where nothing was hit
    restored: np.ndarray | None = None  # (H, W, 3) GaussPainter output, None when restoration was off/skipped
    warning: str | None = None  # one line for the user (e.g. weights missing)

    @property
    def combined(self) -> np.ndarray:
        return self.raw if self.restored is None else self.restored


@dataclass(frozen=True)
class Correction:
    """How one object of the loaded scene is restored: its Gaussians are [start, stop) of the scene, `strength`
    the share of the correction applied (0..1), and `fitted` its own fitted restoration (Restoration.to_text()),
    or None for GaussPainter (the request's weights). Objects without a Correction render raw."""

    start: int
    stop: int
    strength: float
    fitted: str | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(data: dict) -> "Correction":
        return Correction(int(data["start"]), int(data["stop"]), float(data["strength"]), data.get("fitted"))


# --- message framing --------------------------------------------------------------------------------------


def write_message(stream: IO[bytes], header: dict, arrays: dict[str, np.ndarray] | None = None) -> None:
    arrays = {name: np.ascontiguousarray(a) for name, a in (arrays or {}).items()}
    header = {**header, "arrays": [{"name": n, "dtype": a.dtype.str, "shape": list(a.shape)}
                                   for n, a in arrays.items()]}
    stream.write(json.dumps(header).encode("utf-8") + b"\n")
    for array in arrays.values():
        stream.write(array.data.cast("B"))
    stream.flush()


def read_message(stream: IO[bytes]) -> tuple[dict, dict[str, np.ndarray]]:
    line = stream.readline()
    if not line:
        raise EOFError("the other side closed the stream")
    header = json.loads(line.decode("utf-8"))
    arrays = {}
    for spec in header.pop("arrays", []):
        dtype, shape = np.dtype(spec["dtype"]), tuple(int(s) for s in spec["shape"])
        size = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
        data = _read_exact(stream, size)
        arrays[spec["name"]] = np.frombuffer(data, dtype=dtype).reshape(shape).copy()
    return header, arrays


def _read_exact(stream: IO[bytes], size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            raise EOFError(f"stream ended {remaining} bytes before the end of an array")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def camera_to_json(camera: Camera) -> dict:
    return {"world_to_camera": np.asarray(camera.world_to_camera).tolist(), "fx": camera.fx, "fy": camera.fy,
            "cx": camera.cx, "cy": camera.cy, "width": camera.width, "height": camera.height}


def camera_from_json(data: dict) -> Camera:
    return Camera(np.array(data["world_to_camera"], dtype=np.float64), data["fx"], data["fy"], data["cx"],
                  data["cy"], data["width"], data["height"])


def scene_arrays(scene: GaussianScene) -> dict[str, np.ndarray]:
    return {name: getattr(scene, name) for name in _SCENE_FIELDS}


def scene_from_arrays(arrays: dict[str, np.ndarray], metadata: dict | None = None) -> GaussianScene:
    return GaussianScene(arrays["means"], arrays["quats"], arrays["log_scales"], arrays["opacity_logits"],
                         arrays["sh"], dict(metadata or {}))


# --- the computation itself (needs torch and numba) -------------------------------------------------------


_painters: dict[str, Any] = {}


def load_painter_cached(weights: str | None) -> tuple[Any, str | None]:
    """(painter or None, warning or None); the default weights when `weights` is empty."""
    from exgs_core.painter import PainterWeightsError, default_weights_path, load_painter

    folder = weights or str(default_weights_path())
    if folder in _painters:
        return _painters[folder], None
    if not weights and not Path(folder).is_dir():
        return None, (f"GaussPainter weights not found at {folder}: showing the raw render "
                      "(set a weights folder in Render Properties > ExGS)")
    try:
        painter = load_painter(folder)
    except (PainterWeightsError, OSError, ValueError) as error:
        return None, f"GaussPainter not loaded ({error}): showing the raw render"
    _painters[folder] = painter
    return painter, None


_fitted: dict[str, Any] = {}
FITTED_CACHED = 16  # modules kept (one per object with a fitted restoration; each is a few KB)


def fitted_module_cached(text: str) -> Any:
    """The torch module of a stored restoration (Restoration.to_text()), built once per distinct text."""
    if text not in _fitted:
        from exgs_core.io.exgs import Restoration
        from exgs_core.painter.fit import restoration_module

        if len(_fitted) >= FITTED_CACHED:
            _fitted.pop(next(iter(_fitted)))
        _fitted[text] = restoration_module(Restoration.from_text(text))
    return _fitted[text]


def render_frame(scene: GaussianScene, camera: Camera, background: Sequence[float] = (0.0, 0.0, 0.0),
                 corrections: Sequence[Correction] = (), weights: str | None = None) -> Frame:
    """Raw render of `scene` from `camera`, restored where `corrections` ask (each object by its own correction,
    only where it shows: painter.restore.restore_objects). GaussPainter corrections need `weights` (empty: the
    shipped ones); without them those objects stay raw and Frame.warning says why.
    """
    from exgs_core.render import render

    active = [c for c in corrections if c.strength > 0]
    painter, warning = load_painter_cached(weights) if any(c.fitted is None for c in active) else (None, None)
    active = [c for c in active if c.fitted is not None or painter is not None]
    # One correction for the whole scene (a frame of one object) needs no coverage: it applies everywhere.
    whole = len(active) == 1 and (active[0].start, active[0].stop) == (0, len(scene))
    groups = [] if whole else [(c.start, c.stop) for c in active]
    out = render(scene, camera, background=tuple(background), groups=groups)
    frame = Frame(out.rgb.numpy(), out.alpha.numpy(), out.depth.numpy(), warning=warning)
    if active:
        from exgs_core.painter.restore import restore_objects

        restorers = [(fitted_module_cached(c.fitted) if c.fitted is not None else painter, c.strength)
                     for c in active]
        coverage = None if out.coverage is None else out.coverage.numpy()
        frame.restored = restore_objects(frame.raw, frame.alpha, coverage, restorers)
    return frame


def compress_scene(scene: GaussianScene, target: dict, cameras: Sequence[Camera] | None, sh_degree: int | str | None,
                   on_progress: ProgressCallback | None = None, restoration: str = "fit",
                   release_input: bool = False) -> tuple[bytes, dict]:
    """UGC compression: (.exgs bytes, stats). `cameras` (scored at SCORING_SIZE) or None for the automatic views.
    `restoration` "fit" fits a restoration to the scene within the target (exgs_core.ugc.restoration), "none".
    `release_input`: `scene` is not used afterwards (see compress()): large scenes drop their unused SH bands."""
    from exgs_core.ugc.compress import CompressSettings, Target, at_scoring_size, scoring_cameras
    from exgs_core.ugc.restoration import RestorationSettings, compress_restored

    views = at_scoring_size(cameras) if cameras else scoring_cameras(scene)
    settings = CompressSettings(sh_degree=sh_degree)
    result = compress_restored(scene, Target(target["kind"], float(target["value"])), views, settings,
                               on_progress=on_progress, restoration=RestorationSettings(restoration),
                               release_input=release_input)
    return result.data, result.stats


def kernels_cached() -> bool:
    """Whether numba's on-disk cache holds the CPU kernels for this Python (else the first render or compress
    compiles them, about 20 s). Looks for the cache index files only: no numba import."""
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    root = Path(__file__).resolve().parent
    return all(any((root / package / "__pycache__").glob(f"*.{tag}.nbi")) for package in ("render", "ugc"))


def warm_up() -> None:
    """Compile the CPU kernels into numba's on-disk cache (render and compress of a tiny random scene), so the
    first F12 or compress after installing does not wait for them. Seconds when already cached."""
    from exgs_core.camera import orbit_cameras

    rng = np.random.default_rng(0)
    count = 64
    quats = np.zeros((count, 4), np.float32)
    quats[:, 0] = 1.0
    scene = GaussianScene(rng.normal(size=(count, 3)).astype(np.float32), quats,
                          np.full((count, 3), -2.0, np.float32), np.zeros(count, np.float32),
                          rng.normal(size=(count, 1, 3)).astype(np.float32))
    render_frame(scene, orbit_cameras(scene.means, 1, 32, 32)[0])
    compress_scene(scene, {"kind": "keep", "value": 0.5}, None, 0, restoration="none")  # a fit compiles nothing


def runtime_info() -> dict:
    """What this Python has: versions of the runtime packages, and the device frames are computed on."""
    info: dict[str, Any] = {"python": sys.version.split()[0], "executable": sys.executable}
    for name in ("numpy", "torch", "numba", "diffusers", "gsplat"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "installed")
        except Exception:  # a broken install counts as missing
            info[name] = None
    if info["torch"]:
        import torch

        info["device"] = f"CUDA ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "CPU"
    return info


# --- runtimes: the same interface in this process and through a worker -------------------------------------


class InProcessRuntime:
    """Computes in this Python (torch and numba import here)."""

    name = "in-process"

    def __init__(self) -> None:
        self._scenes: dict[str, GaussianScene] = {}
        self._lock = threading.Lock()

    def info(self) -> dict:
        return runtime_info()

    def has_scene(self, key: str) -> bool:
        return key in self._scenes

    def load_scene(self, key: str, scene: GaussianScene) -> None:
        with self._lock:  # keeps the previous scene too: F12 and the viewport may alternate between two
            self._scenes = {k: v for k, v in list(self._scenes.items())[-1:] if k != key}
            self._scenes[key] = scene

    def render(self, key: str, camera: Camera, background: Sequence[float] = (0.0, 0.0, 0.0),
               corrections: Sequence[Correction] = (), weights: str | None = None) -> Frame:
        with self._lock:
            scene = self._scenes[key]
            return render_frame(scene, camera, background, corrections, weights)

    def compress(self, scene: GaussianScene, target: dict, cameras: Sequence[Camera] | None,
                 sh_degree: int | str | None, on_progress: ProgressCallback | None = None,
                 restoration: str = "fit") -> tuple[bytes, dict]:
        return compress_scene(scene, target, cameras, sh_degree, on_progress, restoration)

    def close(self) -> None:
        self._scenes.clear()


class WorkerRuntime:
    """Computes in a worker process: `python -m exgs_core.worker` run by `python` with exgs_core importable."""

    name = "worker"

    def __init__(self, python: str, extra_path: str | None = None) -> None:
        self.python = python
        self.extra_path = extra_path or str(Path(__file__).resolve().parents[1])
        self._process: subprocess.Popen | None = None
        self._scene_key: str | None = None
        self._log: IO[bytes] | None = None  # the worker's stderr, created with the first process
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the worker process now (it imports the renderer before it answers) instead of on the first
        request; WorkerError when it cannot be started."""
        with self._lock:
            self._start()

    def _start(self) -> subprocess.Popen:
        if self._process is None or self._process.poll() is not None:
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (self.extra_path, env.get("PYTHONPATH")) if p)
            if self._log is None:
                self._log = tempfile.NamedTemporaryFile(prefix="exgs-worker-", suffix=".log", delete=False)
            try:
                self._process = subprocess.Popen([self.python, "-m", "exgs_core.worker"], stdin=subprocess.PIPE,
                                                 stdout=subprocess.PIPE, stderr=self._log, env=env)
            except OSError as error:
                self._remove_log()
                raise WorkerError(f"cannot start the ExGS worker with {self.python}: {error}") from error
            self._scene_key = None
        return self._process

    def _request(self, header: dict, arrays: dict | None = None,
                 on_progress: ProgressCallback | None = None) -> tuple[dict, dict]:
        process = self._start()
        assert process.stdin is not None and process.stdout is not None
        try:
            write_message(process.stdin, header, arrays)
            while True:
                reply, out = read_message(process.stdout)
                if "progress" not in reply:
                    break
                if on_progress is not None:
                    try:
                        on_progress(*reply["progress"])
                    except BaseException:
                        self.close()  # the only way to stop a running job; the next request restarts it
                        raise
        except (OSError, EOFError, ValueError) as error:
            self._stop()
            tail = self._log_tail()
            self._log = None  # kept on disk for the user (the message names it); the next process gets a new one
            raise WorkerError(f"the ExGS worker ({self.python}) stopped: {error}. {tail}") from error
        if not reply.get("ok"):
            raise WorkerError(f"ExGS worker: {reply.get('error', 'unknown error')}")
        return reply, out

    def _log_tail(self) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        text = Path(self._log.name).read_text(errors="replace").strip().splitlines()
        return f"Its log ({self._log.name}) ends: {text[-1]}" if text else ""

    def info(self) -> dict:
        with self._lock:
            return self._request({"cmd": "hello"})[0]["info"]

    def has_scene(self, key: str) -> bool:
        return self._scene_key == key and self._process is not None and self._process.poll() is None

    def load_scene(self, key: str, scene: GaussianScene) -> None:
        with self._lock:
            self._request({"cmd": "scene"}, scene_arrays(scene))
            self._scene_key = key

    def render(self, key: str, camera: Camera, background: Sequence[float] = (0.0, 0.0, 0.0),
               corrections: Sequence[Correction] = (), weights: str | None = None) -> Frame:
        with self._lock:
            if self._scene_key != key:
                raise WorkerError(f"the worker does not hold scene {key!r}; call load_scene first")
            reply, out = self._request({"cmd": "render", "camera": camera_to_json(camera),
                                        "background": list(background), "weights": weights,
                                        "corrections": [c.to_json() for c in corrections]})
        return Frame(out["raw"], out["alpha"], out["depth"], out.get("restored"), reply.get("warning"))

    def compress(self, scene: GaussianScene, target: dict, cameras: Sequence[Camera] | None,
                 sh_degree: int | str | None, on_progress: ProgressCallback | None = None,
                 restoration: str = "fit") -> tuple[bytes, dict]:
        header = {"cmd": "compress", "target": target, "sh_degree": sh_degree, "metadata": _json_safe(scene.metadata),
                  "restoration": restoration,
                  "cameras": [camera_to_json(c) for c in cameras] if cameras else None}
        with self._lock:
            self._scene_key = None  # the worker's scene is replaced by the one being compressed
            reply, out = self._request(header, scene_arrays(scene), on_progress)
        return out["data"].tobytes(), reply["stats"]

    def close(self) -> None:
        """Stop the worker process and delete its log (a log named in an error message is kept)."""
        self._stop()
        self._remove_log()

    def _stop(self) -> None:
        process, self._process, self._scene_key = self._process, None, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def _remove_log(self) -> None:
        log, self._log = self._log, None
        if log is not None:
            log.close()
            Path(log.name).unlink(missing_ok=True)


def _json_safe(metadata: dict) -> dict:
    return {k: v for k, v in metadata.items() if isinstance(v, (str, int, float, bool)) or v is None}


# --- the worker's main loop -------------------------------------------------------------------------------


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    scene: GaussianScene | None = None
    while True:
        try:
            header, arrays = read_message(stdin)
        except EOFError:
            return
        command = header.get("cmd")
        if command == "quit":
            write_message(stdout, {"ok": True})
            return
        try:
            if command == "scene":
                scene = scene_from_arrays(arrays)
                write_message(stdout, {"ok": True, "count": len(scene)})
            elif command == "render":
                if scene is None:
                    raise ExgsError("no scene loaded")
                corrections = [Correction.from_json(c) for c in header.get("corrections") or ()]
                frame = render_frame(scene, camera_from_json(header["camera"]), header.get("background", (0, 0, 0)),
                                     corrections, header.get("weights"))
                out = {"raw": frame.raw, "alpha": frame.alpha, "depth": frame.depth}
                if frame.restored is not None:
                    out["restored"] = frame.restored
                write_message(stdout, {"ok": True, "warning": frame.warning}, out)
            elif command == "compress":
                scene = scene_from_arrays(arrays, header.get("metadata"))
                cameras = [camera_from_json(c) for c in header["cameras"]] if header.get("cameras") else None
                data, stats = compress_scene(scene, header["target"], cameras, header.get("sh_degree"),
                                             lambda stage, f: write_message(stdout, {"progress": [stage, f]}),
                                             header.get("restoration", "fit"), release_input=True)
                scene = None  # this process's own copy, cut by release_input: Blender loads a scene to render
                write_message(stdout, {"ok": True, "stats": stats}, {"data": np.frombuffer(data, np.uint8)})
            elif command == "hello":
                write_message(stdout, {"ok": True, "info": runtime_info()})
            else:
                raise ExgsError(f"unknown command {command!r}")
        except Exception as error:  # reported to Blender, the worker keeps serving
            write_message(stdout, {"ok": False, "error": f"{type(error).__name__}: {error}"})


def main() -> None:
    from exgs_core.memory import return_freed_memory

    return_freed_memory()  # a process of its own: large scenes' freed chunks must not stay resident
    stdout = sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints must not corrupt the protocol stream
    try:  # what every frame and compression needs (torch, numba), imported before the first request arrives
        import exgs_core.render  # noqa: F401
    except Exception:  # a broken runtime: each request reports what is missing, as it always has
        pass
    serve(sys.stdin.buffer, stdout)


if __name__ == "__main__":
    main()
