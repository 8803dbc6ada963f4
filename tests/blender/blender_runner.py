"""Run code inside real Blender (pip bpy) in a subprocess, with the ExGS extension installed from its zip.

pip bpy can be imported once per process and reads BLENDER_USER_RESOURCES before `import bpy`, so every
Blender test runs its script in a fresh `sys.executable` process. Reuse it for any Blender test:

    from tests.blender.blender_runner import run_blender

    def test_something(blender_extension):  # session fixture (conftest.py): zip built, validated, installed
        out = run_blender('''
            obj = bpy.data.objects.new("x", None)
            result["name"] = obj.name
        ''', blender_extension, args={"path": "..."})
        assert out["name"] == "x"

Inside the script: `bpy` is imported and the extension enabled (enable=False to skip), `args` is the dict
passed in, `result` a dict returned to the caller as JSON (keep it JSON-serialisable), `EXTENSION_DIR` the
installed extension folder. `block_heavy=True` makes torch, numba, diffusers, gsplat, PIL and tqdm
unimportable and allows plyfile only from the extension's bundled wheel, as in Blender's own Python.
A failing script raises AssertionError with its output.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class InstalledExtension:
    """An isolated Blender user folder (BLENDER_USER_RESOURCES) with the extension zip installed in it."""

    user_dir: Path
    zip_path: Path

    @property
    def extension_dir(self) -> Path:
        return self.user_dir / "extensions" / "user_default" / "exgs"


_PRELUDE = '''
import json, os, sys
args = json.loads(os.environ["EXGS_TEST_ARGS"])
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
''' % EXTENSION_MODULE

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
) -> dict[str, Any]:
    """Run `script` (Python, dedented) in a fresh Blender process; return its `result` dict."""
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
            OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
            NUMBA_NUM_THREADS=env.get("NUMBA_NUM_THREADS", "1"),
        )
        done = subprocess.run(
            [sys.executable, str(script_path)], env=env, cwd=tmp, capture_output=True, text=True, timeout=timeout
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


def install_extension(zip_path: Path, user_dir: Path) -> InstalledExtension:
    """Install the zip into a fresh user folder the way Blender's Install from Disk does."""
    extension = InstalledExtension(user_dir, zip_path)
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
