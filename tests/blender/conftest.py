"""Fixtures of the tests inside real Blender: one extension zip and one installed user folder per session.

Helpers to run scripts in Blender are in tests/blender/blender_runner.py (run_blender).
"""

from __future__ import annotations

import importlib.util

import pytest

from tests.blender.blender_runner import InstalledExtension, build_zip, install_extension

def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/blender/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.blender)


@pytest.fixture(scope="session")
def extension_zip(tmp_path_factory: pytest.TempPathFactory):
    """The extension zip, built and validated once per session."""
    if importlib.util.find_spec("bpy") is None:
        pytest.skip("the bpy module (pip install bpy==5.0.1) is not installed")
    return build_zip(tmp_path_factory.mktemp("extension_build"))


@pytest.fixture(scope="session")
def blender_extension(extension_zip, tmp_path_factory: pytest.TempPathFactory) -> InstalledExtension:
    """An isolated Blender user folder with the extension installed from the zip and enabled."""
    return install_extension(extension_zip, tmp_path_factory.mktemp("blender_user"))
