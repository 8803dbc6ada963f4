"""Where frames and compression are computed: in Blender's process, or in a worker process.

- In-process when this Python can import torch and numba (pip `bpy` in a full venv, or a Blender whose Python
  has them).
- Otherwise a worker (`python -m exgs_core.worker`, exgs_core.worker.WorkerRuntime) run by a Python that has
  the runtime: the one set in the preferences ("Use an existing Python"), or the virtualenv the preferences'
  "Set up runtime" button creates under the extension's user folder.
Without either, `runtime_problem()` says exactly what to install; import, export and the panels still work.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Union

import bpy

from exgs_core.worker import InProcessRuntime, WorkerRuntime

Runtime = Union[InProcessRuntime, WorkerRuntime]

# The add-on's module name: "bl_ext.<repo>.exgs" when installed as an extension.
ADDON_ID = __package__.rpartition(".")[0] if __package__ and "." in __package__ else (__package__ or "exgs_blender")
# What the worker's Python needs (versions as tested; torch's default index gives the CUDA build on Linux/Windows).
RUNTIME_PACKAGES = ["numpy<2", "torch>=2.2", "numba>=0.59", "diffusers>=0.30", "safetensors>=0.4",
                    "plyfile>=1.0,<1.1", "pillow>=10", "tqdm>=4.66", "zstandard>=0.22"]

_runtime: Runtime | None = None
_runtime_key: tuple | None = None
_setup_state: dict[str, Any] = {"running": False, "message": ""}


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
    """The Python the worker runs with: the preferences' choice, else the runtime virtualenv if it exists."""
    prefs = preferences()
    chosen = getattr(prefs, "python_path", "") if prefs is not None else ""
    if chosen:
        return bpy.path.abspath(chosen)
    candidate = venv_python()
    return str(candidate) if candidate.is_file() else None


def _mode() -> str:
    prefs = preferences()
    return getattr(prefs, "runtime_mode", "AUTO") if prefs is not None else "AUTO"


def runtime_problem() -> str | None:
    """None when frames can be computed; otherwise one line saying exactly what to do."""
    if _mode() == "AUTO" and in_process_available():
        return None
    if worker_python() is not None:
        return None
    return ("ExGS needs torch and numba: open Preferences > Add-ons > ExGS and press 'Set up runtime', or set a "
            f"Python that has them (pip install {' '.join(RUNTIME_PACKAGES)})")


def get_runtime() -> Runtime:
    """The runtime in use (created on first use, re-created when the preferences change)."""
    global _runtime, _runtime_key
    if _mode() == "AUTO" and in_process_available():
        key: tuple = ("in-process",)
    else:
        python = worker_python()
        if python is None:
            raise RuntimeMissing(runtime_problem())
        key = ("worker", python)
    if _runtime is None or key != _runtime_key:
        shutdown()
        _runtime = InProcessRuntime() if key[0] == "in-process" else WorkerRuntime(key[1])
        _runtime_key = key
    return _runtime


def shutdown() -> None:
    """Stop the worker process (if any) and forget the runtime."""
    global _runtime, _runtime_key
    if _runtime is not None:
        _runtime.close()
    _runtime, _runtime_key = None, None


# --- setting up the runtime virtualenv ---------------------------------------------------------------------


def setup_commands(base_python: str | None = None) -> list[list[str]]:
    """The commands that create the runtime virtualenv and install the runtime into it."""
    folder = runtime_dir()
    python = base_python or sys.executable
    return [[python, "-m", "venv", str(folder)],
            [str(venv_python(folder)), "-m", "pip", "install", *RUNTIME_PACKAGES]]


def setup_status() -> dict[str, Any]:
    return dict(_setup_state)


def start_setup(base_python: str | None = None) -> None:
    """Run setup_commands() on a background thread; setup_status() follows it."""
    if _setup_state["running"]:
        return
    commands = setup_commands(base_python)
    log = runtime_dir().parent / "runtime-setup.log"
    _setup_state.update(running=True, message=f"setting up the runtime (log: {log})")

    def run() -> None:
        try:
            with open(log, "w") as handle:
                for command in commands:
                    handle.write("$ " + " ".join(command) + "\n")
                    handle.flush()
                    subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=True)
            _setup_state["message"] = f"runtime ready: {venv_python()}"
            shutdown()
        except (OSError, subprocess.CalledProcessError) as error:
            _setup_state["message"] = f"runtime set-up failed ({error}); see {log}"
        finally:
            _setup_state["running"] = False

    threading.Thread(target=run, name="exgs-runtime-setup", daemon=True).start()


def register() -> None:
    pass


def unregister() -> None:
    shutdown()
