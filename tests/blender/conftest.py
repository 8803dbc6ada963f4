"""Fixtures of the tests inside real Blender: one extension zip per session, installed into one user folder per
Blender of blender_runner.BLENDERS; every test that takes `blender_extension` runs once in each Blender.

Helpers to run scripts in Blender are in tests/blender/blender_runner.py (run_blender).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from tests.blender.blender_runner import (
    REPO_ROOT, InstalledExtension, blender_pythons, build_zip, describe_blender, install_extension,
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/blender/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.blender)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "blender_extension" in metafunc.fixturenames:
        pythons = blender_pythons()
        metafunc.parametrize("blender_python", pythons, ids=[_label(p) for p in pythons], scope="session",
                             indirect=True)


def _label(python) -> str:
    try:
        return "bpy" + describe_blender(python).label
    except AssertionError:
        return f"missing-{python.parents[1].name}"  # the fixture then fails with the fix


@pytest.fixture(scope="session")
def blender_python(request: pytest.FixtureRequest):
    return request.param


@pytest.fixture(scope="session")
def extension_zip(tmp_path_factory: pytest.TempPathFactory):
    """The extension zip, built and validated once per session (with the main venv's bpy builder)."""
    if importlib.util.find_spec("bpy") is None:
        pytest.skip("the bpy module is not installed in this venv: run the README's set-up command")
    return build_zip(tmp_path_factory.mktemp("extension_build"))


@pytest.fixture(scope="session")
def blender_user_dir(tmp_path_factory: pytest.TempPathFactory):
    """One Blender user folder for every Blender: the installed extension (and so the numba kernels its worker
    and in-process runtime compile and cache next to exgs_core) is shared between the runs."""
    return tmp_path_factory.mktemp("blender_user")


_installed: dict = {}


def _install_in_every_blender(extension_zip, blender_user_dir) -> None:
    """Install the zip in each Blender (oldest claimed, then current), all before the first test runs in any.

    Installing extracts the extension afresh into the shared folder, which drops the numba kernels cached next to
    its exgs_core. Installed per Blender on first use, the current Blender's install came after every 4.5 test
    and its worker compiled all kernels a second time (about 40 CPU seconds); installed up front, the 4.5
    in-process runtime and the 5.3 worker (both Python 3.11) compile them once and share them."""
    for python in blender_pythons():
        if python not in _installed:
            try:
                blender = describe_blender(python)
            except AssertionError:  # that Blender is missing: its own tests fail with the fix, the others run
                continue
            _installed[python] = install_extension(extension_zip, blender_user_dir, blender)
            _share_compiled_kernels(_installed[python].extension_dir / "exgs_core")


def _share_compiled_kernels(installed_core: Path) -> None:
    """Copy the numba kernels this test process compiled (beside the checkout's exgs_core sources) beside the
    installed extension's identical sources, and give those the checkout's modification times.

    numba keys its cache by the source file's modification time and size and by each kernel's bytecode, not by
    the file's path, so the 4.5 in-process runtime and the 5.3 worker (Python 3.11 and numba of the same venv)
    load these instead of compiling the same kernels again (about 40 CPU seconds per session). The compile is
    real and happens once, here or in the core tests; whatever is not in the copied cache a Blender compiles
    itself, as a user's does. warm_up() compiles what is missing (seconds when the checkout's cache is warm)."""
    import shutil

    from exgs_core.worker import warm_up

    warm_up()
    for package in ("render", "ugc"):
        source, target = REPO_ROOT / "exgs_core" / package, installed_core / package
        if not target.is_dir():
            return
        for py in source.glob("*.py"):
            installed = target / py.name
            if installed.is_file() and installed.read_bytes() == py.read_bytes():
                stat = py.stat()
                os.utime(installed, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        (target / "__pycache__").mkdir(exist_ok=True)
        for cached in (source / "__pycache__").glob("*.nb[ic]"):
            shutil.copy2(cached, target / "__pycache__" / cached.name)


@pytest.fixture(scope="session")
def blender_extension(blender_python, extension_zip, blender_user_dir) -> InstalledExtension:
    """The extension installed from the zip into the shared user folder by every Blender (once), and enabled: the
    one of this Blender."""
    _install_in_every_blender(extension_zip, blender_user_dir)
    if blender_python not in _installed:
        describe_blender(blender_python)  # raises the AssertionError naming the fix
    return _installed[blender_python]


@pytest.fixture(scope="session")
def lts_and_current(extension_zip, blender_user_dir) -> tuple[InstalledExtension, InstalledExtension]:
    """The extension installed in both Blenders (oldest claimed, then current), for tests that cross versions."""
    _install_in_every_blender(extension_zip, blender_user_dir)
    for python in blender_pythons():
        if python not in _installed:
            describe_blender(python)  # raises the AssertionError naming the fix
    lts, current = (_installed[python] for python in blender_pythons())
    return lts, current
