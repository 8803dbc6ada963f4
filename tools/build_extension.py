"""Build (and validate) the installable Blender extension zip with the builder that ships inside the bpy wheel.

    .venv/bin/python tools/build_extension.py [--output-dir dist]

prints the path of the zip (exgs-<version>.zip). Works offline: the only bundled wheel (plyfile) is in wheels/.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def builder_script() -> Path:
    """blender_ext.py of the installed bpy module (bpy/<version>/scripts/addons_core/bl_pkg/cli/)."""
    import importlib.util

    spec = importlib.util.find_spec("bpy")
    if spec is None or spec.origin is None:
        raise SystemExit("build_extension: the bpy module is not installed (pip install bpy==5.0.1)")
    found = sorted(Path(spec.origin).parent.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    if not found:
        raise SystemExit(f"build_extension: no blender_ext.py under {Path(spec.origin).parent}")
    return found[-1]


def build(output_dir: Path) -> Path:
    """Build the zip into output_dir, validate it, and return its path."""
    output_dir.mkdir(parents=True, exist_ok=True)
    script = str(builder_script())
    _run([sys.executable, script, "build", "--source-dir", str(REPO_ROOT), "--output-dir", str(output_dir)])
    zips = sorted(output_dir.glob("exgs-*.zip"), key=lambda p: p.stat().st_mtime)
    if not zips:
        raise SystemExit(f"build_extension: the builder wrote no exgs-*.zip into {output_dir}")
    _run([sys.executable, script, "validate", str(zips[-1])])
    return zips[-1]


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"build_extension: {command[2]} failed:\n{done.stdout}{done.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=REPO_ROOT / "dist")
    print(build(parser.parse_args().output_dir))


if __name__ == "__main__":
    main()
