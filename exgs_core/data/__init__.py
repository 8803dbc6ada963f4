"""Data shipped inside the package: the demo scene (`exgs demo`, File > Import > ExGS Demo Scene in Blender).

Found through importlib.resources, so it works from a checkout, an installed wheel or the Blender extension zip
alike. Importing this module is cheap (no numpy, torch or numba): Blender's own Python imports it.
"""

from __future__ import annotations

import contextlib
from importlib import resources
from pathlib import Path
from typing import Iterator

DEMO_SCENE = "playbot.sog"
DEMO_LICENSE = "playbot.txt"
DEMO_NAME = "playbot"
DEMO_GAUSSIANS = 31_000
DEMO_UP_AXIS = "-y"  # the file's up axis (a COLMAP-trained capture: -Y up)
DEMO_CREDIT = ('"PLAYBOT" by Stephane Agullo (https://sa3d.fr), CC-BY-4.0 '
               "(https://creativecommons.org/licenses/by/4.0/); LOD 3 of the PlayCanvas engine's example, "
               "unchanged (SOG v2)")


def _resource(name: str):
    found = resources.files(__name__).joinpath(name)
    if not found.is_file():
        raise FileNotFoundError(f"{name}: the demo scene is missing from this installation of exgs_core "
                                f"(expected inside the package {__name__})")
    return found


@contextlib.contextmanager
def demo_scene_path() -> Iterator[Path]:
    """The shipped demo scene as a file path, valid inside the `with` block (a temporary copy when the package
    is not on the file system, e.g. in a zip)."""
    with resources.as_file(_resource(DEMO_SCENE)) as path:
        yield Path(path)


def demo_scene_bytes() -> bytes:
    return _resource(DEMO_SCENE).read_bytes()


def demo_license_text() -> str:
    return _resource(DEMO_LICENSE).read_text(encoding="utf-8")
