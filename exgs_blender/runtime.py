"""Where frames and compression are computed: in Blender's process, or in a worker process.

In this order (get_runtime prints which it took, so a render farm's log says it):
- A worker on the Python named by the environment variable EXGS_PYTHON (render farm workers, which have no
  preferences set and no one at the screen).
- In-process when this Python can import torch and numba (pip `bpy` in a full venv, or a Blender whose Python
  has them).
- Otherwise a worker (`python -m exgs_core.worker`, exgs_core.worker.WorkerRuntime) run by a Python that has
  the runtime: the one set in the preferences ("Use an existing Python"), or the virtualenv the preferences'
  "Set up runtime" button creates under the extension's user folder.
Without either, `runtime_problem()` says exactly what to install; import, export and the panels still work.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import bpy

from exgs_core.worker import InProcessRuntime, WorkerError, WorkerRuntime

Runtime = Union[InProcessRuntime, WorkerRuntime]

# The add-on's module name: "bl_ext.<repo>.exgs" when installed as an extension.
ADDON_ID = __package__.rpartition(".")[0] if __package__ and "." in __package__ else (__package__ or "exgs_blender")
# What the worker's Python needs, and the modules that must import for it to count as present. numpy 2 is
# allowed: Python 3.13 (Blender 5.1+) has no numpy 1 wheels; the tests' worker runs numpy 1.26.
RUNTIME_PACKAGES = ["numpy>=1.26", "torch>=2.2", "numba>=0.59", "diffusers>=0.30", "safetensors>=0.4",
                    "plyfile>=1.0,<1.1", "pillow>=10", "tqdm>=4.66", "zstandard>=0.22"]
RUNTIME_MODULES = ("numpy", "torch", "numba", "diffusers", "safetensors", "plyfile", "PIL", "tqdm", "zstandard")
# gsplat rasterises on CUDA GPUs; installed only when an NVIDIA GPU is found (without it frames use the CPU).
GSPLAT_PACKAGE = "gsplat>=1.4"
# PyTorch's own wheel indexes (https://pytorch.org/get-started/locally/): PyPI's torch is the CUDA build on
# Linux (about 3 GB of NVIDIA libraries) and the CPU build on Windows, so the index follows platform and GPU.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_CUDA_INDEX = "https://download.pytorch.org/whl/cu126"

# A Python with the runtime, for a worker that the preferences need not name (render farms, scripts).
PYTHON_VARIABLE = "EXGS_PYTHON"

_runtime: Runtime | None = None
_runtime_key: tuple | None = None
_job: dict[str, Any] = {"running": False, "kind": "", "message": "", "fraction": 0.0, "process": None,
                        "cancel": False}
_checks: dict[str, dict[str, Any]] = {}  # python -> {"state": "checking" | "ready" | "broken", "detail": str}
_checks_lock = threading.Lock()


class RuntimeMissing(Exception):
    """No Python with torch and numba is available; the message says what to install."""


def preferences() -> Any:
    """The add-on's preferences, or None when the package is not enabled as an add-on (e.g. tests)."""
    addon = bpy.context.preferences.addons.get(ADDON_ID)
    return addon.preferences if addon is not None else None


def in_process_available() -> bool:
    try:
        return all(importlib.util.find_spec(name) is not None for name in ("torch", "numba"))
    except (ImportError, ValueError):  # a broken or blocked install counts as missing
        return False


def runtime_dir() -> Path:
    """The folder of the runtime virtualenv (the extension's user folder; a scripts folder for legacy add-ons)."""
    try:
        return Path(bpy.utils.extension_path_user(ADDON_ID, path="runtime", create=True))
    except (ValueError, TypeError, AttributeError):
        return Path(bpy.utils.user_resource("SCRIPTS", path="exgs_runtime", create=True))


def venv_python(folder: Path | None = None) -> Path:
    folder = folder or runtime_dir()
    return folder / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def worker_python() -> str | None:
    """The Python the worker runs with: EXGS_PYTHON, else the preferences' choice, else the runtime virtualenv if
    it exists."""
    if os.environ.get(PYTHON_VARIABLE):
        return os.environ[PYTHON_VARIABLE]
    prefs = preferences()
    chosen = getattr(prefs, "python_path", "") if prefs is not None else ""
    if chosen:
        return bpy.path.abspath(chosen)
    candidate = venv_python()
    return str(candidate) if candidate.is_file() else None


def _mode() -> str:
    if os.environ.get(PYTHON_VARIABLE):
        return "WORKER"
    prefs = preferences()
    return getattr(prefs, "runtime_mode", "AUTO") if prefs is not None else "AUTO"


def runtime_status(wait: bool = False) -> tuple[str, str]:
    """(state, message): state is "ready", "missing", "broken", "checking" or "installing".

    A worker Python counts as present only when every module of RUNTIME_MODULES imports in it: checked once
    per Python in a subprocess on a thread (wait=True waits for the answer).
    """
    if _mode() == "AUTO" and in_process_available():
        return "ready", "Blender's own Python has torch and numba"
    if _job["running"]:
        return "installing", _job["message"]
    python = worker_python()
    if python is None:
        return "missing", ("ExGS needs torch and numba: open Preferences > Add-ons > ExGS Gaussian Splats and press "
                           f"'Set Up Runtime', or set a Python that has them ({pip_line(RUNTIME_PACKAGES)})")
    check = check_python(python, wait)
    if check["state"] == "broken":
        fix = ("press 'Repair Runtime' in Preferences > Add-ons > ExGS Gaussian Splats"
               if Path(python) == venv_python() else f"install the runtime into it: {pip_line(RUNTIME_PACKAGES, python)}")
        return "broken", f"ExGS runtime {python} is broken ({check['detail']}): {fix}"
    return check["state"], python


def runtime_problem() -> str | None:
    """None when frames can be computed (or the check is still running); otherwise one line saying what to do."""
    state, message = runtime_status()
    return message if state in ("missing", "broken", "installing") else None


def check_python(python: str, wait: bool = False) -> dict[str, Any]:
    """Whether RUNTIME_MODULES import in `python`: {"state": "checking" | "ready" | "broken", "detail"}."""
    with _checks_lock:
        check = _checks.get(python)
        if check is None:
            check = {"state": "checking", "detail": "", "done": threading.Event()}
            _checks[python] = check
            threading.Thread(target=_run_check, args=(python, check), name="exgs-runtime-check", daemon=True).start()
            if not wait and not bpy.app.background and threading.current_thread() is threading.main_thread():
                bpy.app.timers.register(_redraw_when_checked, first_interval=0.5)
    if wait:
        check["done"].wait()
    return check


def _run_check(python: str, check: dict[str, Any]) -> None:
    code = "import " + ", ".join(RUNTIME_MODULES)
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300)
        lines = done.stderr.strip().splitlines()
        ok, detail = done.returncode == 0, (lines[-1] if lines else f"exit code {done.returncode}")
    except (OSError, subprocess.SubprocessError) as error:
        ok, detail = False, str(error)
    check.update(state="ready" if ok else "broken", detail="" if ok else detail)
    check["done"].set()


def _redraw_when_checked() -> float | None:
    """Timer (main thread): redraw every area once no check is running, so panels show the answer."""
    with _checks_lock:
        running = any(check["state"] == "checking" for check in _checks.values())
    if running:
        return 0.5
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            area.tag_redraw()
    return None


def forget_checks() -> None:
    """Check every Python again on next use (after set-up, repair, removal or a preference change)."""
    with _checks_lock:
        _checks.clear()


def get_runtime() -> Runtime:
    """The runtime in use (created on first use, re-created when the preferences change).

    RuntimeMissing when no Python with the runtime is available or the worker's Python is broken.
    """
    global _runtime, _runtime_key
    early: WorkerRuntime | None = None
    if _mode() == "AUTO" and in_process_available():
        key: tuple = ("in-process",)
    else:
        early = _start_worker_during_check()
        state, message = runtime_status(wait=True)
        if state != "ready":
            if early is not None:
                early.close()
            raise RuntimeMissing(message)
        key = ("worker", worker_python())
    if _runtime is None or key != _runtime_key:
        shutdown()
        if key[0] == "in-process":
            _runtime = InProcessRuntime()
        else:
            _runtime = early if early is not None and early.python == key[1] else WorkerRuntime(key[1])
        _runtime_key = key
        print(f"ExGS: computing {runtime_source()}", flush=True)
    if early is not None and early is not _runtime:
        early.close()
    return _runtime


def _start_worker_during_check() -> WorkerRuntime | None:
    """A worker process started while its Python is still being checked, or None (nothing to overlap).

    The check (a subprocess importing RUNTIME_MODULES) and the worker's start-up (importing torch and the
    renderer) take seconds each; started together, the first frame or compress of a session waits for the
    longer of the two instead of both in turn: a render farm task (`blender -b ... -a`) pays this start-up for
    every chunk. A worker of a Python the check then finds broken is stopped unused."""
    python = worker_python()
    if python is None or _job["running"] or (_runtime is not None and _runtime_key == ("worker", python)):
        return None
    with _checks_lock:
        check = _checks.get(python)
    if check is not None and check["state"] != "checking":
        return None  # already answered: a worker started on first use waits for nothing else
    worker = WorkerRuntime(python)
    try:
        worker.start()
    except WorkerError:
        worker.close()
        return None
    return worker


def runtime_source() -> str:
    """Which runtime get_runtime takes and why, in words (for logs and the preferences)."""
    if os.environ.get(PYTHON_VARIABLE):
        return f"in a worker on {os.environ[PYTHON_VARIABLE]} (from the environment variable {PYTHON_VARIABLE})"
    if _mode() == "AUTO" and in_process_available():
        return "in Blender's process (its Python has torch and numba)"
    python = worker_python()
    if python is None:
        return "nowhere: no runtime is set up"
    chosen = bool(getattr(preferences(), "python_path", ""))
    return f"in a worker on {python} (from the preferences: {'Existing Python' if chosen else 'Set Up Runtime'})"


def shutdown() -> None:
    """Stop the worker process (if any) and forget the runtime."""
    global _runtime, _runtime_key
    if _runtime is not None:
        _runtime.close()
    _runtime, _runtime_key = None, None


# --- setting up, repairing and removing the runtime virtualenv ---------------------------------------------


@dataclass(frozen=True)
class InstallPlan:
    """Which builds the runtime gets on this machine, and how big it is (estimates, see docs)."""

    torch_index: str | None  # None: PyPI's default torch
    gsplat: bool
    build: str  # one line: which torch and why
    size: str  # download and disk size


def has_nvidia_gpu() -> bool:
    """An NVIDIA driver is installed (its nvidia-smi is on PATH); CUDA builds are useless without one."""
    return shutil.which("nvidia-smi") is not None


def install_plan(platform: str | None = None, nvidia: bool | None = None) -> InstallPlan:
    """The torch build for this platform and GPU. Sizes: a CPU runtime measured at 1.2 GB on disk (Linux,
    torch 2.13 CPU); the CUDA builds carry NVIDIA's libraries (cuDNN, cuBLAS...), about 3 GB to download."""
    platform = platform or sys.platform
    nvidia = has_nvidia_gpu() if nvidia is None else nvidia
    if platform == "darwin":
        return InstallPlan(None, False, "torch for macOS (CPU; Apple GPUs are not used by ExGS yet)",
                           "about 300 MB to download, 1.2 GB on disk")
    if nvidia:
        index = None if platform.startswith("linux") else TORCH_CUDA_INDEX  # PyPI's Linux torch is the CUDA one
        return InstallPlan(index, True, "torch with CUDA (an NVIDIA GPU was found) and gsplat",
                           "about 3 GB to download, 6-7 GB on disk")
    index = TORCH_CPU_INDEX if platform.startswith("linux") else None  # PyPI's Windows torch is the CPU one
    return InstallPlan(index, False, "torch for the CPU (no NVIDIA GPU found)", "about 300 MB to download, 1.2 GB on disk")


def pip_line(packages: list[str], python: str = "python") -> str:
    """The pip command for users to copy, each argument quoted where a shell would misread it (`numpy<2`)."""
    return " ".join(quoted(part) for part in (python, "-m", "pip", "install", *packages))


def quoted(argument: str) -> str:
    # Double quotes work in sh, cmd.exe and PowerShell alike for these characters.
    return f'"{argument}"' if any(c in argument for c in " <>|&;=!*$()") else argument


def setup_commands(base_python: str | None = None, wheels: str | None = None,
                   plan: InstallPlan | None = None) -> list[tuple[str, list[str], bool]]:
    """(label, command, required) steps that create the runtime virtualenv (when missing) and install into it.

    `wheels`: a folder of wheels to install from offline (pip --no-index --find-links), no download.
    Steps that are not required (gsplat) may fail: frames are then computed on the CPU.
    """
    folder, plan = runtime_dir(), plan or install_plan()
    python = str(venv_python(folder))
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check"]
    source = ["--no-index", "--find-links", wheels] if wheels else []
    torch_source = source or (["--index-url", plan.torch_index] if plan.torch_index else [])
    torch_specs = [p for p in RUNTIME_PACKAGES if p.startswith("torch")]  # first, from the index of its build
    steps: list[tuple[str, list[str], bool]] = []
    if not venv_python(folder).is_file():
        steps.append(("creating the virtualenv", [base_python or sys.executable, "-m", "venv", str(folder)], True))
    if torch_specs:
        steps.append(("installing torch", [*pip, *torch_source, *torch_specs], True))
    steps.append(("installing numba, diffusers and the rest", [*pip, *source, *RUNTIME_PACKAGES], True))
    if plan.gsplat:
        steps.append(("installing gsplat (optional)", [*pip, *source, GSPLAT_PACKAGE], False))
    # Compile ahead: the first F12 or compress would otherwise wait for numba (20 s to a minute).
    root = str(Path(__file__).resolve().parents[1])  # the folder holding exgs_core
    warm_up = f"import sys; sys.path.insert(0, {root!r}); from exgs_core.worker import warm_up; warm_up()"
    steps.append(("compiling kernels (first run only, optional)", [python, "-c", warm_up], False))
    return steps


def setup_status() -> dict[str, Any]:
    """{"running", "kind", "message", "fraction"} of the current or last set-up, repair or removal."""
    return {k: _job[k] for k in ("running", "kind", "message", "fraction")}


def setup_log() -> Path:
    return runtime_dir().parent / "runtime-setup.log"


def start_setup(base_python: str | None = None, wheels: str | None = None, kind: str = "setup") -> None:
    """Set up (or repair: the same steps, pip keeps what is already installed) on a background thread;
    setup_status() follows it, cancel_setup() stops it."""
    if _job["running"]:
        return
    shutdown()
    steps = setup_commands(base_python, wheels)
    _job.update(running=True, kind=kind, fraction=0.0, cancel=False, message=f"{kind}: starting (log: {setup_log()})")
    threading.Thread(target=_run_steps, args=(steps, kind), name="exgs-runtime-setup", daemon=True).start()


def cancel_setup() -> None:
    _job["cancel"] = True
    process = _job["process"]
    if process is not None and process.poll() is None:
        process.terminate()


def start_remove() -> None:
    """Delete the runtime virtualenv (on a thread: several GB take a while)."""
    if _job["running"]:
        return
    shutdown()
    _job.update(running=True, kind="remove", fraction=0.0, cancel=False, message=f"removing {runtime_dir()}")

    def run() -> None:
        try:
            shutil.rmtree(runtime_dir(), ignore_errors=False)
            _job["message"] = "runtime removed"
        except OSError as error:
            _job["message"] = f"could not remove the runtime: {error}"
        finally:
            forget_checks()
            _job.update(running=False, fraction=1.0)

    threading.Thread(target=run, name="exgs-runtime-remove", daemon=True).start()


def _run_steps(steps: list[tuple[str, list[str], bool]], kind: str) -> None:
    log, skipped = setup_log(), []
    try:
        with open(log, "w", encoding="utf-8") as handle:
            for index, (label, command, required) in enumerate(steps):
                if not _run_step(handle, index, len(steps), label, command) and not _job["cancel"]:
                    if required:
                        raise RuntimeError(f"{label} failed")
                    skipped.append(label.split(" (")[0])
                if _job["cancel"]:
                    raise RuntimeError("cancelled")
        note = f" ({', '.join(skipped)} failed; see the log)" if skipped else ""
        _job.update(message=f"runtime ready: {venv_python()}{note}", fraction=1.0)
    except (OSError, RuntimeError) as error:
        _job["message"] = (f"runtime {kind}: {error}; press 'Repair Runtime' to finish it (offline: set a wheels "
                           f"folder); log: {log}")
    finally:
        _job.update(running=False, process=None)
        forget_checks()


def _run_step(handle: Any, index: int, count: int, label: str, command: list[str]) -> bool:
    """Run one step, its output into the log and its latest line into the status; True when it succeeded."""
    handle.write("$ " + " ".join(quoted(c) for c in command) + "\n")
    handle.flush()
    _job.update(message=f"step {index + 1}/{count}: {label}", fraction=index / count)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               encoding="utf-8", errors="replace")
    _job["process"] = process
    assert process.stdout is not None
    for line in process.stdout:
        handle.write(line)
        if line.strip():
            _job["message"] = f"step {index + 1}/{count}: {label}: {line.strip()[:90]}"
    return process.wait() == 0


def register() -> None:
    pass


def unregister() -> None:
    shutdown()
