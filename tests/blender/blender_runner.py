"""Run code inside real Blender (pip bpy) in a subprocess, with the ExGS extension installed from its zip.

Every Blender test runs in each Blender of BLENDERS (tests/blender/conftest.py parametrises the
`blender_extension` fixture over them):
- "4.5": the oldest version the manifest claims (4.5 LTS), pip `bpy` in the main venv (Python 3.11): that Python
  has torch and numba, so frames and compression are computed in Blender's process (the in-process runtime);
- "5.3": the current release, pip `bpy` 5.3.0 in `.venv-blender53` (Python 3.13, numpy 2), stock: no torch, so
  its runtime is a worker on the main venv's Python, set in the add-on preferences as a user sets it.

pip bpy can be imported once per process and reads BLENDER_USER_RESOURCES before `import bpy`, so every
Blender test runs its script in a fresh process of that Blender's Python. Reuse it for any Blender test:

    from tests.blender.blender_runner import run_blender

    def test_something(blender_extension):  # session fixture (conftest.py): zip built, validated, installed
        out = run_blender('''
            obj = bpy.data.objects.new("x", None)
            result["name"] = obj.name
        ''', blender_extension, args={"path": "..."})
        assert out["name"] == "x"

Inside the script: `bpy` is imported and the extension enabled (enable=False to skip), `args` is the dict
passed in, `result` a dict returned to the caller as JSON (keep it JSON-serialisable), `EXTENSION_DIR` the
installed extension folder, `BLENDER_VERSION` the Blender's version as a tuple. `block_heavy=True` makes
torch, numba, diffusers, gsplat, PIL and tqdm unimportable and allows plyfile only from the extension's bundled
wheel, as in Blender's own Python (a stock Blender has none of them anyway). In a stock Blender the add-on's
"Existing Python" preference is set to the main venv's Python before the script runs (worker=False leaves it
empty). A failing script raises AssertionError with its output.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
EXTENSION_MODULE = "bl_ext.user_default.exgs"
STOCK_BLENDER_VENV = REPO_ROOT / ".venv-blender53"


@dataclass(frozen=True)
class Blender:
    """One pip `bpy` install: the Python that runs it, its version, and whether it is stock (no torch)."""

    python: Path
    version: tuple[int, int, int]
    stock: bool

    @property
    def label(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"


def blender_pythons() -> list[Path]:
    """The Pythons of the Blenders the suite runs in: the main venv's (4.5 LTS) and .venv-blender53's (5.3)."""
    return [Path(sys.executable), STOCK_BLENDER_VENV / "bin" / "python"]


@functools.cache
def describe_blender(python: Path) -> Blender:
    """The bpy version of `python` and whether torch is importable there; AssertionError naming the fix if not."""
    code = ("import importlib.metadata as m, importlib.util as u, json; "
            "print(json.dumps([m.version('bpy'), u.find_spec('torch') is not None]))")
    if not python.is_file():
        raise AssertionError(f"{python} is missing: run the README's set-up command (it creates {python.parents[1]})")
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"{python} has no bpy: run the README's set-up command\n{done.stderr[-2000:]}")
    version, has_torch = json.loads(done.stdout)
    major, minor, patch = (int(part) for part in version.split(".")[:3])
    return Blender(python, (major, minor, patch), stock=not has_torch)


@dataclass(frozen=True)
class InstalledExtension:
    """An isolated Blender user folder (BLENDER_USER_RESOURCES) with the extension zip installed in it."""

    user_dir: Path
    zip_path: Path
    blender: Blender

    @property
    def extension_dir(self) -> Path:
        return self.user_dir / "extensions" / "user_default" / "exgs"


_PRELUDE = '''
import json, os, sys
args = json.loads(os.environ["EXGS_TEST_ARGS"])
BLENDER_VERSION = tuple(json.loads(os.environ["EXGS_TEST_BLENDER_VERSION"]))
result = {}
EXTENSION_DIR = os.path.join(os.environ["BLENDER_USER_RESOURCES"], "extensions", "user_default", "exgs")
if os.environ.get("EXGS_BLOCK_HEAVY") == "1":
    import importlib.machinery

    class _BlenderPythonOnly:
        """Refuses what Blender's Python lacks; plyfile only from the extension's wheel folder."""

        blocked = {"torch", "numba", "diffusers", "gsplat", "PIL", "tqdm", "matplotlib"}

        def find_spec(self, name, path=None, target=None):
            top = name.split(".")[0]
            if top in self.blocked:
                raise ImportError(f"{name} is blocked: Blender's own Python does not have it")
            if top == "plyfile" and "." not in name:
                local = os.path.join(os.environ["BLENDER_USER_RESOURCES"], "extensions", ".local")
                places = [p for p in sys.path if p.startswith(local)]
                spec = importlib.machinery.PathFinder.find_spec(name, places)
                if spec is None:
                    raise ImportError("plyfile is not in the extension's bundled wheels")
                return spec
            return None

    sys.meta_path.insert(0, _BlenderPythonOnly())
import bpy
if os.environ.get("EXGS_ENABLE") == "1":
    import addon_utils
    if addon_utils.enable("%s", default_set=True, handle_error=None) is None:
        raise SystemExit("could not enable the extension")
    if os.environ.get("EXGS_TEST_WORKER_PYTHON"):  # a stock Blender: the runtime is a worker, as users set it
        bpy.context.preferences.addons["%s"].preferences.python_path = os.environ["EXGS_TEST_WORKER_PYTHON"]
''' % (EXTENSION_MODULE, EXTENSION_MODULE)

_EPILOGUE = '''
with open(os.environ["EXGS_TEST_RESULT"], "w") as _handle:
    json.dump(result, _handle)
'''


def run_blender(
    script: str,
    extension: InstalledExtension,
    args: dict[str, Any] | None = None,
    enable: bool = True,
    block_heavy: bool = False,
    timeout: float = 600,
    worker: bool = True,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run `script` (Python, dedented) in a fresh Blender process; return its `result` dict. `extra_env` adds
    environment variables (EXGS_PYTHON for a render farm worker)."""
    with tempfile.TemporaryDirectory(prefix="exgs_blender_run_") as tmp:
        script_path = Path(tmp) / "script.py"
        result_path = Path(tmp) / "result.json"
        script_path.write_text(_PRELUDE + textwrap.dedent(script) + _EPILOGUE)
        env = dict(os.environ)
        env.update(
            BLENDER_USER_RESOURCES=str(extension.user_dir),
            EXGS_TEST_ARGS=json.dumps(args or {}),
            EXGS_TEST_RESULT=str(result_path),
            EXGS_ENABLE="1" if enable else "0",
            EXGS_BLOCK_HEAVY="1" if block_heavy else "0",
            EXGS_TEST_BLENDER_VERSION=json.dumps(extension.blender.version),
            EXGS_TEST_WORKER_PYTHON=sys.executable if extension.blender.stock and worker else "",
            OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
            NUMBA_NUM_THREADS=env.get("NUMBA_NUM_THREADS", "1"),
        )
        env.update(extra_env or {})
        done = subprocess.run(
            [str(extension.blender.python), str(script_path)], env=env, cwd=tmp, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0 or not result_path.is_file():
            raise AssertionError(
                f"Blender script failed (exit {done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-6000:]}"
            )
        return json.loads(result_path.read_text())


def build_zip(output_dir: Path) -> Path:
    """Build and validate the extension zip with the bpy wheel's own builder (tools/build_extension.py)."""
    sys.path.insert(0, str(REPO_ROOT / "tools"))
    try:
        from build_extension import build
    finally:
        sys.path.remove(str(REPO_ROOT / "tools"))
    return build(output_dir)


def install_extension(zip_path: Path, user_dir: Path, blender: Blender | None = None) -> InstalledExtension:
    """Install the zip into a user folder the way Blender's Install from Disk does, in `blender` (default: the
    bpy of this Python)."""
    extension = InstalledExtension(user_dir, zip_path, blender or describe_blender(Path(sys.executable)))
    user_dir.mkdir(parents=True, exist_ok=True)
    run_blender(
        '''
        done = bpy.ops.extensions.package_install_files(
            filepath=args["zip"], repo="user_default", enable_on_install=True
        )
        result["done"] = sorted(done)
        result["enabled"] = "%s" in bpy.context.preferences.addons
        '''
        % EXTENSION_MODULE,
        extension,
        args={"zip": str(zip_path)},
        enable=False,
    )
    return extension
