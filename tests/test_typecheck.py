"""The type check of the Blender extension: mypy over exgs_blender with fake-bpy-module's stubs for bpy.

Configured in pyproject.toml ([tool.mypy]); part of the README's single test command.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed")
def test_exgs_blender_type_checks() -> None:
    try:
        importlib.metadata.version("fake-bpy-module")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("fake-bpy-module (the bpy stubs) is not installed")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, f"mypy found problems in exgs_blender:\n{done.stdout}{done.stderr}"
