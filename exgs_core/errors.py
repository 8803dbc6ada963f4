"""Errors the user can act on: each names the file and what is wrong with it."""

from __future__ import annotations

import os


class ExgsError(Exception):
    """Base class for every error exgs reports to the user as one clear line."""


class SceneFormatError(ExgsError):
    """A scene file is unreadable, truncated, inconsistent or of an unknown format."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"{where}{problem}")


class NotGaussianPlyError(SceneFormatError):
    """A .ply file that holds a mesh or a point cloud (positions, maybe colours and faces), not Gaussians."""


class CameraFormatError(SceneFormatError):
    """A camera file (transforms.json) is unreadable or inconsistent."""
