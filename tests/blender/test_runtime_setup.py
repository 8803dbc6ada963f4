"""Setting up, breaking, repairing and removing the runtime virtualenv inside real Blender, offline.

Set Up Runtime pointed at an empty wheels folder fails like an offline machine does and leaves a virtualenv
without packages: it must be reported as broken (not as present), with the repair to do. Repair Runtime then
installs from a local wheels folder (pip --no-index --find-links) and the runtime must import and run a worker.
Installing torch itself takes minutes and GBs, so the test's wheels folder holds one tiny wheel, built here,
whose .pth file puts this venv's site-packages (real torch, numba, diffusers) on the runtime's path, and the
runtime's package list is set to that wheel: everything else (venv, pip, the import check, the worker) is real.
"""

from __future__ import annotations

import base64
import hashlib
import site
import zipfile
from pathlib import Path

import pytest

from tests.blender.blender_runner import InstalledExtension, run_blender

LINK = "exgs_test_runtime_link"


def _link_wheel(folder: Path) -> Path:
    """A minimal, valid wheel holding one .pth line: the site-packages of the Python running the tests."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        f"{LINK}.pth": "\n".join(site.getsitepackages()) + "\n",
        f"{LINK}-1.0.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {LINK}\nVersion: 1.0\n",
        f"{LINK}-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    record.append(f"{LINK}-1.0.dist-info/RECORD,,")
    files[f"{LINK}-1.0.dist-info/RECORD"] = "\n".join(record) + "\n"
    path = folder / f"{LINK}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


def test_broken_runtime_is_reported_and_repaired_offline(blender_extension: InstalledExtension,
                                                         tmp_path: Path) -> None:
    if blender_extension.blender.stock:
        pytest.skip("Set Up Runtime builds the runtime from Blender's own Python (3.13 in the stock 5.3), and no "
                    "torch for it can be installed offline here; the 4.5 run covers set-up and repair")
    empty, wheels = tmp_path / "empty", tmp_path / "wheels"
    empty.mkdir()
    _link_wheel(wheels)
    out = run_blender("""
        import time
        from bl_ext.user_default.exgs.exgs_blender import runtime

        progress = []

        def wait_job():
            end = time.monotonic() + 300
            while runtime.setup_status()["running"] and time.monotonic() < end:
                status = runtime.setup_status()
                progress.append([status["fraction"], status["message"]])
                time.sleep(0.1)
            return runtime.setup_status()["message"]

        prefs = runtime.preferences()
        prefs.runtime_mode = "WORKER"  # pip bpy has torch in-process; the worker path is the one under test
        result["missing"] = runtime.runtime_status()
        result["pip_line"] = runtime.pip_line(runtime.RUNTIME_PACKAGES)
        result["plans"] = {f"{p}-{g}": [plan.torch_index, plan.gsplat, plan.size] for p in ("linux", "win32", "darwin")
                           for g in (True, False) for plan in [runtime.install_plan(p, g)]}

        # Offline with nothing to install from: the set-up fails and leaves a virtualenv without packages.
        prefs.wheels_dir = args["empty"]
        assert bpy.ops.exgs.setup_runtime() == {"FINISHED"}
        t0 = time.monotonic()
        result["failed_setup"] = wait_job()
        result["t_setup"] = time.monotonic() - t0
        result["venv"] = runtime.venv_python().is_file()
        result["broken"] = runtime.runtime_status(wait=True)
        try:
            runtime.get_runtime()  # what F12 and Compress call first
        except runtime.RuntimeMissing as error:
            result["compress_error"] = str(error)

        # The tests share the kernels they compiled with the installed extension (conftest): without the
        # compress kernels' cache the repair's warm-up has to compile and cache them itself.
        from pathlib import Path
        import exgs_core.worker as worker
        for cached in (Path(worker.__file__).resolve().parent / "ugc" / "__pycache__").glob("*.nb[ic]"):
            cached.unlink()
        result["cached_before_repair"] = worker.kernels_cached()

        # Repair from a local wheels folder, offline.
        runtime.RUNTIME_PACKAGES = [args["link"]]
        prefs.wheels_dir = args["wheels"]
        result["repair_steps"] = [c for _, c, _ in runtime.setup_commands(wheels=args["wheels"])]
        assert bpy.ops.exgs.setup_runtime() == {"FINISHED"}
        result["kind"] = runtime.setup_status()["kind"]
        t0 = time.monotonic()
        result["repaired"] = wait_job()
        result["t_repair"] = time.monotonic() - t0
        result["state"] = runtime.runtime_status(wait=True)
        from exgs_core.worker import kernels_cached
        result["kernels_cached"] = kernels_cached()
        result["t_check"] = time.monotonic() - t0
        result["info"] = runtime.get_runtime().info()  # a worker started with the repaired runtime
        result["worker"] = runtime.get_runtime().name
        result["t_info"] = time.monotonic() - t0

        assert bpy.ops.exgs.remove_runtime() == {"FINISHED"}
        wait_job()
        result["removed"] = [runtime.venv_python().is_file(), runtime.runtime_status()[0]]
        result["progress"] = progress

        # Cancel stops a running set-up (here while the virtualenv is being created); Remove cleans up.
        prefs.wheels_dir = args["empty"]
        assert bpy.ops.exgs.setup_runtime() == {"FINISHED"}
        time.sleep(0.5)
        assert bpy.ops.exgs.cancel_runtime_setup() == {"FINISHED"}
        result["cancelled"] = wait_job()
        assert bpy.ops.exgs.remove_runtime() == {"FINISHED"}
        wait_job()
    """, blender_extension, worker=False, args={"empty": str(empty), "wheels": str(wheels), "link": LINK})
    assert out["missing"][0] == "missing" and "Set Up Runtime" in out["missing"][1]
    assert '"numpy>=1.26"' in out["pip_line"] and '"torch>=2.2"' in out["pip_line"]
    plans = out["plans"]
    assert plans["linux-True"][:2] == [None, True] and plans["linux-False"][:2] == ["https://download.pytorch.org/whl/cpu", False]
    assert plans["win32-True"][:2] == ["https://download.pytorch.org/whl/cu126", True] and plans["win32-False"][:2] == [None, False]
    assert plans["darwin-False"][:2] == [None, False] and "3 GB" in plans["linux-True"][2]
    assert "installing torch failed" in out["failed_setup"] and "Repair Runtime" in out["failed_setup"]
    assert out["venv"]
    assert out["broken"][0] == "broken", out["broken"]
    assert "No module named" in out["broken"][1] and "Repair Runtime" in out["broken"][1]
    assert "is broken" in out["compress_error"] and "Broken pipe" not in out["compress_error"]
    pip_steps = [c for c in out["repair_steps"] if "pip" in c]
    assert pip_steps and all("--no-index" in c and "--find-links" in c for c in pip_steps)
    assert "warm_up()" in out["repair_steps"][-1][-1]  # kernels compiled ahead, after the install
    assert out["kind"] == "repair" and out["repaired"].startswith("runtime ready"), out["repaired"]
    assert out["state"][0] == "ready", out["state"]
    assert not out["cached_before_repair"] and out["kernels_cached"]  # the repair's warm-up compiled them
    assert out["info"]["torch"] and out["info"]["numba"] and out["info"]["executable"].endswith("python")
    assert "runtime" in out["info"]["executable"] and out["worker"] == "worker"
    assert out["removed"] == [False, "missing"]
    steps = [m for _, m in out["progress"] if m.startswith("step ")]
    assert any("installing" in m for m in steps) and any("compiling kernels" in m for m in steps)
    assert all(0.0 <= f <= 1.0 for f, _ in out["progress"])
    assert "cancelled" in out["cancelled"] and "Repair Runtime" in out["cancelled"]
