"""Pinhole cameras in the OpenCV convention, NeRF transforms.json I/O, view samplers and Blender camera math.

Conventions (DESIGN.md §3):
- Camera space is OpenCV: x right, y down, z forward. `world_to_camera` is a rigid 4x4 (float64).
- Pixel coordinates: the image covers [0, width] x [0, height], u to the right, v down, pixel (i, j) has its
  centre at (i + 0.5, j + 0.5); a centred principal point is (width / 2, height / 2). This is what Blender's
  viewplane, NeRF's transforms.json and gsplat use.
- transforms.json and Blender cameras look down -Z with +Y up (OpenGL): camera_to_world_opengl =
  camera_to_world_opencv @ diag(1, -1, -1, 1).

This module needs numpy only (no bpy, no torch).
"""

from __future__ import annotations

import json
import math
import operator
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from exgs_core.errors import CameraFormatError
from exgs_core.side_by_side import LARGE, run_side_by_side
from exgs_core.scene import quat_to_rotation, rotation_to_quat
from exgs_core.fileio import atomic_write
from exgs_core.validate import MAX_JSON_BYTES, JsonError, check_frame_count, check_image_size, parse_json

# Flips camera y and z: OpenCV camera axes <-> OpenGL/Blender camera axes (its own inverse).
FLIP_YZ = np.diag([1.0, -1.0, -1.0, 1.0])

_RIGID_TOLERANCE = 1e-5

_UP_AXES = {
    "+x": (1.0, 0.0, 0.0),
    "-x": (-1.0, 0.0, 0.0),
    "+y": (0.0, 1.0, 0.0),
    "-y": (0.0, -1.0, 0.0),
    "+z": (0.0, 0.0, 1.0),
    "-z": (0.0, 0.0, -1.0),
}


# --- the camera --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Camera:
    """A pinhole camera: rigid world_to_camera (OpenCV axes), intrinsics in pixels, image size.

    Fields cannot be reassigned; the matrix is the camera's own copy (left writable because torch warns on
    read-only arrays), treat it as read-only. Compare cameras with `isclose`.
    """

    world_to_camera: np.ndarray
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        matrix = np.array(self.world_to_camera, dtype=np.float64)
        problem = rigid_problem(matrix)
        if problem:
            raise ValueError(f"Camera.world_to_camera {problem}")
        object.__setattr__(self, "world_to_camera", matrix)
        for name in ("fx", "fy"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"Camera.{name} must be a positive finite focal length in pixels, got {value}")
            object.__setattr__(self, name, value)
        for name in ("cx", "cy"):
            value = float(getattr(self, name))
            if not math.isfinite(value):
                raise ValueError(f"Camera.{name} must be finite, got {value}")
            object.__setattr__(self, name, value)
        for name in ("width", "height"):
            object.__setattr__(self, name, _positive_int(f"Camera.{name}", getattr(self, name)))

    # --- derived quantities ----------------------------------------------------------------------------
    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def rotation(self) -> np.ndarray:
        """World-to-camera rotation (3x3); its rows are the camera's right, down and forward axes in world."""
        return self.world_to_camera[:3, :3].copy()

    @property
    def camera_to_world(self) -> np.ndarray:
        return rigid_inverse(self.world_to_camera)

    @property
    def position(self) -> np.ndarray:
        rotation, translation = self.world_to_camera[:3, :3], self.world_to_camera[:3, 3]
        return -rotation.T @ translation

    @property
    def forward(self) -> np.ndarray:
        """Unit viewing direction in world coordinates (camera +z)."""
        return self.world_to_camera[2, :3].copy()

    @property
    def up(self) -> np.ndarray:
        """Unit world direction that appears as image up (camera -y)."""
        return -self.world_to_camera[1, :3]

    @property
    def right(self) -> np.ndarray:
        """Unit world direction that appears as image right (camera +x)."""
        return self.world_to_camera[0, :3].copy()

    @property
    def fov_x(self) -> float:
        """Horizontal field of view in radians (for a centred principal point)."""
        return 2.0 * math.atan(0.5 * self.width / self.fx)

    @property
    def fov_y(self) -> float:
        """Vertical field of view in radians (for a centred principal point)."""
        return 2.0 * math.atan(0.5 * self.height / self.fy)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (N, 2) and depths (N,) of world points (N, 3); depth <= 0 is behind the camera."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        local = points @ self.world_to_camera[:3, :3].T + self.world_to_camera[:3, 3]
        depth = local[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = self.fx * local[:, 0] / depth + self.cx
            v = self.fy * local[:, 1] / depth + self.cy
        return np.stack([u, v], axis=1), depth

    # --- variants --------------------------------------------------------------------------------------
    def resized(self, width: int, height: int) -> "Camera":
        """The same view rendered at another resolution: intrinsics scaled per axis by the size ratio."""
        width = _positive_int("width", width)
        height = _positive_int("height", height)
        sx, sy = width / self.width, height / self.height
        return Camera(self.world_to_camera, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, width, height)

    def scaled(self, factor: float) -> "Camera":
        """resized() to width * factor x height * factor, rounded half up (at least 1 pixel)."""
        factor = float(factor)
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"scale factor must be positive and finite, got {factor}")
        width = max(1, math.floor(self.width * factor + 0.5))
        height = max(1, math.floor(self.height * factor + 0.5))
        return self.resized(width, height)

    def with_pose(self, world_to_camera: np.ndarray) -> "Camera":
        return Camera(world_to_camera, self.fx, self.fy, self.cx, self.cy, self.width, self.height)

    def isclose(self, other: "Camera", atol: float = 1e-9) -> bool:
        """Same image size, and matrix and intrinsics equal to within `atol`."""
        return (
            self.width == other.width
            and self.height == other.height
            and np.allclose(self.world_to_camera, other.world_to_camera, rtol=0.0, atol=atol)
            and np.allclose(
                [self.fx, self.fy, self.cx, self.cy], [other.fx, other.fy, other.cx, other.cy], rtol=0.0, atol=atol
            )
        )


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def rigid_problem(matrix: np.ndarray, tolerance: float = _RIGID_TOLERANCE) -> str | None:
    """Why `matrix` is not a rigid 4x4 transform (rotation + translation), or None if it is one."""
    if matrix.shape != (4, 4):
        return f"must be 4x4, got shape {matrix.shape}"
    if not np.all(np.isfinite(matrix)):
        return "has non-finite entries"
    if not np.allclose(matrix[3], (0.0, 0.0, 0.0, 1.0), atol=tolerance):
        return f"must have last row (0, 0, 0, 1), got {matrix[3].tolist()}"
    rotation = matrix[:3, :3]
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=tolerance):
        return "has a rotation part that is not orthonormal (scale or shear)"
    if np.linalg.det(rotation) < 0:
        return "has a rotation part that mirrors (determinant -1)"
    return None


def rigid_inverse(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (exact transpose of the rotation, no general matrix inverse)."""
    rotation, translation = matrix[:3, :3], matrix[:3, 3]
    inverse = np.eye(4)
    inverse[:3, :3] = rotation.T
    inverse[:3, 3] = -rotation.T @ translation
    return inverse


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """world_to_camera (OpenCV) of a camera at `eye` looking at `target`, with `up` appearing as image up."""
    eye = np.asarray(eye, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - eye
    norm = np.linalg.norm(forward)
    if norm == 0:
        raise ValueError("look_at: eye and target coincide")
    forward /= norm
    right = np.cross(forward, np.asarray(up, dtype=np.float64))
    norm = np.linalg.norm(right)
    if norm < 1e-9:
        raise ValueError("look_at: the viewing direction is parallel to the up vector")
    right /= norm
    down = np.cross(forward, right)
    matrix = np.eye(4)
    matrix[:3, :3] = np.stack([right, down, forward])
    matrix[:3, 3] = -matrix[:3, :3] @ eye
    return matrix


def up_vector(up: str | Sequence[float]) -> np.ndarray:
    """Unit world up vector from "+x", "-x", "+y", "-y", "+z", "-z" or any non-zero 3-vector."""
    if isinstance(up, str):
        key = up.strip().lower()
        if key in ("x", "y", "z"):
            key = "+" + key
        if key not in _UP_AXES:
            raise ValueError(f"up must be one of {', '.join(_UP_AXES)}, got {up!r}")
        return np.array(_UP_AXES[key])
    vector = np.asarray(up, dtype=np.float64).reshape(-1)
    norm = np.linalg.norm(vector) if vector.shape == (3,) else 0.0
    if not (np.isfinite(norm) and norm > 0):
        raise ValueError(f"up must be an axis name or a non-zero 3-vector, got {up!r}")
    return vector / norm


def focal_from_fov(fov_deg: float, size: float) -> float:
    """Focal length in pixels for a field of view (degrees) spanning `size` pixels."""
    if not 0 < fov_deg < 180:
        raise ValueError(f"field of view must be in (0, 180) degrees, got {fov_deg}")
    return 0.5 * size / math.tan(math.radians(fov_deg) / 2.0)


# --- transforms.json -------------------------------------------------------------------------------------


def read_transforms(
    path: str | os.PathLike, default_size: tuple[int, int] | None = None
) -> list[Camera]:
    """Cameras of a NeRF/nerfstudio transforms.json, in file order.

    Intrinsics: fl_x/fl_y or camera_angle_x/camera_angle_y (fl_* wins at the same level), cx/cy (default: image
    centre), w/h; each may sit at the top level or in a frame, and a frame's own keys override the top level.
    A missing fy (or fx) equals the other one. Without w/h the image size is `default_size` (width, height) or
    an error. transform_matrix is camera-to-world in the OpenGL/Blender convention (4x4, or 3x4).
    Distortion coefficients (k1, p1, ...) are ignored: Camera is an ideal pinhole.
    """
    data = _load_json(path)
    if not isinstance(data, dict):
        raise CameraFormatError(path, f"expected a JSON object at the top level, got {type(data).__name__}")
    frames = data.get("frames")
    if not isinstance(frames, list):
        raise CameraFormatError(path, "has no 'frames' list")
    if not frames:
        raise CameraFormatError(path, "'frames' is empty: no cameras")
    check_frame_count(len(frames), lambda problem: CameraFormatError(path, problem))
    return [_frame_camera(path, index, data, frame, default_size) for index, frame in enumerate(frames)]


def write_transforms(
    cameras: Sequence[Camera], path: str | os.PathLike, file_paths: Sequence[str] | None = None
) -> None:
    """Write cameras as transforms.json (atomically). Shared intrinsics go to the top level, else per frame.

    Each frame gets file_path (`file_paths[i]`, default "frame_00000", ...) and transform_matrix
    (camera-to-world, OpenGL/Blender axes). fl_x, fl_y, cx, cy, w, h and camera_angle_x are written.
    """
    cameras = list(cameras)
    if not cameras:
        raise ValueError("write_transforms needs at least one camera")
    if file_paths is not None and len(file_paths) != len(cameras):
        raise ValueError(f"{len(file_paths)} file paths for {len(cameras)} cameras")
    intrinsics = [_intrinsics_dict(camera) for camera in cameras]
    shared = all(entry == intrinsics[0] for entry in intrinsics)
    document: dict[str, Any] = dict(intrinsics[0]) if shared else {}
    frames = []
    for index, camera in enumerate(cameras):
        frame: dict[str, Any] = {
            "file_path": file_paths[index] if file_paths is not None else f"frame_{index:05d}",
            "transform_matrix": (camera.camera_to_world @ FLIP_YZ).tolist(),
        }
        if not shared:
            frame.update(intrinsics[index])
        frames.append(frame)
    document["frames"] = frames
    with atomic_write(path, "w") as handle:
        json.dump(document, handle, indent=2)
        handle.write("\n")


def _intrinsics_dict(camera: Camera) -> dict[str, Any]:
    return {
        "camera_angle_x": camera.fov_x,
        "fl_x": camera.fx,
        "fl_y": camera.fy,
        "cx": camera.cx,
        "cy": camera.cy,
        "w": camera.width,
        "h": camera.height,
    }


def _load_json(path: str | os.PathLike) -> Any:
    try:
        if os.path.getsize(path) > MAX_JSON_BYTES:
            raise CameraFormatError(path, f"is larger than {MAX_JSON_BYTES} bytes: not a camera file")
        data = Path(path).read_bytes()
    except OSError as error:
        raise CameraFormatError(path, f"cannot be read: {error.strerror or error}") from None
    try:
        return parse_json(data, allow_constants=True)
    except JsonError as error:
        raise CameraFormatError(path, f"is not valid JSON: {error}") from None


def _frame_camera(
    path: str | os.PathLike, index: int, top: dict, frame: Any, default_size: tuple[int, int] | None
) -> Camera:
    where = f"frame {index}"
    if not isinstance(frame, dict):
        raise CameraFormatError(path, f"{where} is not a JSON object")
    width, height = _frame_size(path, where, top, frame, default_size)
    fx, fy = _frame_focal(path, where, top, frame, width, height)
    cx = _number(path, where, "cx", _pick("cx", frame, top), default=width / 2.0)
    cy = _number(path, where, "cy", _pick("cy", frame, top), default=height / 2.0)
    world_to_camera = _frame_pose(path, where, frame)
    return Camera(world_to_camera, fx, fy, cx, cy, width, height)


def _pick(key: str, frame: dict, top: dict) -> Any:
    return frame[key] if key in frame else top.get(key)


def _number(path: str | os.PathLike, where: str, key: str, value: Any, default: float | None = None) -> float:
    if value is None:
        if default is None:
            raise CameraFormatError(path, f"{where}: '{key}' is missing")
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CameraFormatError(path, f"{where}: '{key}' must be a finite number, got {value!r}")
    return float(value)


def _frame_size(
    path: str | os.PathLike, where: str, top: dict, frame: dict, default_size: tuple[int, int] | None
) -> tuple[int, int]:
    raw_w, raw_h = _pick("w", frame, top), _pick("h", frame, top)
    if raw_w is None or raw_h is None:
        if default_size is None:
            missing = " and ".join(key for key, raw in (("w", raw_w), ("h", raw_h)) if raw is None)
            raise CameraFormatError(
                path, f"{where}: image size '{missing}' is missing (give w/h in the file, or a default size)"
            )
        raw_w = default_size[0] if raw_w is None else raw_w
        raw_h = default_size[1] if raw_h is None else raw_h
    size = []
    for key, raw in (("w", raw_w), ("h", raw_h)):
        value = _number(path, where, key, raw)
        if not (value > 0 and value.is_integer()):
            raise CameraFormatError(path, f"{where}: '{key}' must be a positive whole number of pixels, got {raw!r}")
        size.append(int(value))
    check_image_size(size[0], size[1], lambda problem: CameraFormatError(path, f"{where}: {problem}"))
    return size[0], size[1]


def _frame_focal(
    path: str | os.PathLike, where: str, top: dict, frame: dict, width: int, height: int
) -> tuple[float, float]:
    fx = _focal(path, where, ("fl_x", "camera_angle_x"), (frame, top), width)
    fy = _focal(path, where, ("fl_y", "camera_angle_y"), (frame, top), height)
    focal_x = fx if fx is not None else fy
    focal_y = fy if fy is not None else fx
    if focal_x is None or focal_y is None:
        raise CameraFormatError(path, f"{where}: no focal length (need fl_x/fl_y or camera_angle_x/camera_angle_y)")
    return focal_x, focal_y


def _focal(
    path: str | os.PathLike, where: str, keys: tuple[str, str], levels: tuple[dict, dict], size: int
) -> float | None:
    focal_key, angle_key = keys
    for level in levels:
        if focal_key in level:
            focal = _number(path, where, focal_key, level[focal_key])
            if focal <= 0:
                raise CameraFormatError(path, f"{where}: '{focal_key}' must be positive, got {focal}")
            return focal
        if angle_key in level:
            angle = _number(path, where, angle_key, level[angle_key])
            if not 0 < angle < math.pi:
                raise CameraFormatError(path, f"{where}: '{angle_key}' must be in (0, pi) radians, got {angle}")
            return 0.5 * size / math.tan(0.5 * angle)
    return None


def _frame_pose(path: str | os.PathLike, where: str, frame: dict) -> np.ndarray:
    if "transform_matrix" not in frame:
        raise CameraFormatError(path, f"{where}: 'transform_matrix' is missing")
    raw = frame["transform_matrix"]
    try:
        matrix = np.array(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise CameraFormatError(path, f"{where}: 'transform_matrix' is not a matrix of numbers") from None
    if matrix.shape == (3, 4):
        matrix = np.vstack([matrix, (0.0, 0.0, 0.0, 1.0)])
    if matrix.shape != (4, 4):
        raise CameraFormatError(path, f"{where}: 'transform_matrix' must be 4x4, got shape {matrix.shape}")
    problem = rigid_problem(matrix)
    if problem:
        raise CameraFormatError(path, f"{where}: 'transform_matrix' {problem}")
    return rigid_inverse(matrix @ FLIP_YZ)


# --- view samplers ---------------------------------------------------------------------------------------


def robust_bounds(
    means: np.ndarray,
    opacities: np.ndarray | None = None,
    low_percentile: float = 2.0,
    high_percentile: float = 98.0,
) -> tuple[np.ndarray, float]:
    """(center, radius) of the box between per-axis percentiles of the points: the sphere around that box.

    Far-away floaters (a few percent of the points) do not move it. With `opacities` (activated, in [0, 1], not
    logits) the percentiles are opacity-weighted, so faint Gaussians count less. Non-finite points are ignored.
    """
    # In the points' own dtype (float32 scenes: no (N, 3) float64 copies of millions of means); widened to
    # float64 one axis at a time below, which gives the same order and values.
    points = np.asarray(means).reshape(-1, 3)
    if not np.issubdtype(points.dtype, np.floating):
        points = points.astype(np.float64)
    keep = np.all(np.isfinite(points), axis=1)
    weights = None
    if opacities is not None:
        weights = np.asarray(opacities, dtype=np.float64).reshape(-1)
        if weights.shape[0] != points.shape[0]:
            raise ValueError(f"{weights.shape[0]} opacities for {points.shape[0]} points")
        keep &= np.isfinite(weights) & (weights > 0)
        weights = weights[keep]
    points = points[keep]
    if points.shape[0] == 0:
        raise ValueError("robust_bounds: no finite points (with positive opacity)")
    if not 0 <= low_percentile < high_percentile <= 100:
        raise ValueError(f"need 0 <= low < high <= 100, got {low_percentile}, {high_percentile}")
    if weights is None:
        low, high = np.percentile(points.astype(np.float64), [low_percentile, high_percentile], axis=0)
    else:
        low, high = _weighted_percentiles(points, weights, (low_percentile, high_percentile))
    center = 0.5 * (low + high)
    radius = 0.5 * float(np.linalg.norm(high - low))
    # A single point (or a flat cluster of identical points) still needs a usable sphere.
    radius = max(radius, 1e-6 * max(1.0, float(np.abs(center).max())))
    return center, radius


def _weighted_percentiles(points: np.ndarray, weights: np.ndarray, percentiles: Sequence[float]) -> np.ndarray:
    """Per-axis weighted percentiles (rows: percentiles), interpolating between weight-midpoints of the samples."""
    def on_axis(axis: int) -> np.ndarray:
        column = points[:, axis].astype(np.float64)
        order = np.argsort(column, kind="stable")
        values, w = column[order], weights[order]
        del column
        cumulative = np.cumsum(w)
        positions = (cumulative - 0.5 * w) / cumulative[-1]
        return np.interp(np.asarray(percentiles) / 100.0, positions, values)

    # The axes side by side on large scenes: a stable sort of each (1.3 s at 10M points; numpy releases the GIL)
    axes = run_side_by_side({axis: (lambda axis=axis: on_axis(axis)) for axis in range(points.shape[1])},
                            len(points) >= LARGE)
    return np.stack([axes[axis] for axis in range(points.shape[1])], axis=1)


def _horizontal_basis(up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors spanning the plane perpendicular to `up`, (a, b) with a x b = up (counter-clockwise)."""
    helper = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    a = helper - up * float(helper @ up)
    a /= np.linalg.norm(a)
    b = np.cross(up, a)
    return a, b


def _direction(azimuth: float, elevation: float, up: np.ndarray, basis: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    a, b = basis
    horizontal = math.cos(azimuth) * a + math.sin(azimuth) * b
    return math.cos(elevation) * horizontal + math.sin(elevation) * up


def _square_pixel_intrinsics(fov_deg: float, width: int, height: int) -> tuple[float, float, float]:
    """(f, cx, cy) with `fov_deg` across the larger image side (as Blender's AUTO sensor fit)."""
    focal = focal_from_fov(fov_deg, max(width, height))
    return focal, width / 2.0, height / 2.0


def fit_distance(radius: float, focal: float, width: int, height: int) -> float:
    """Distance at which a sphere of `radius` just fits the narrower field of view of a centred camera."""
    half_angle = math.atan(0.5 * min(width, height) / focal)
    return radius / math.sin(half_angle)


def orbit_cameras(
    means: np.ndarray,
    n: int,
    width: int,
    height: int,
    up: str | Sequence[float] = "+z",
    fov_deg: float = 50.0,
    elevation_deg: float = 25.0,
    distance: float | None = None,
    opacities: np.ndarray | None = None,
    *,
    rng: np.random.Generator | None = None,
    azimuth_jitter: float = 0.5,
    elevation_jitter_deg: float = 15.0,
    distance_jitter: float = 0.3,
    fov_jitter_deg: float = 15.0,
    target_jitter: float = 0.15,
    start_azimuth_deg: float = 0.0,
) -> list[Camera]:
    """`n` cameras on a circle around the scene, evenly spaced in azimuth, looking at the robust center.

    `fov_deg` spans the larger image side (square pixels, centred principal point). `elevation_deg` > 0 puts
    the cameras above the center (along `up`). `distance=None` places them so that the robust bounding sphere
    just fits the narrower field of view. `up` appears as image up in every view (no roll).

    With `rng`, each view is jittered (deterministic for a seeded generator): azimuth by up to
    `azimuth_jitter` of the spacing, elevation by up to `elevation_jitter_deg`, the field of view by up to
    `fov_jitter_deg`, the distance by a factor in [1/(1+distance_jitter), 1+distance_jitter] (log-uniform)
    and the look-at target by up to `target_jitter` * radius per axis.
    """
    n = _positive_int("n", n)
    if not -90 < elevation_deg < 90:
        raise ValueError(f"elevation_deg must be in (-90, 90), got {elevation_deg}")
    if distance is not None and not (math.isfinite(distance) and distance > 0):
        raise ValueError(f"distance must be positive, got {distance}")
    up_dir = up_vector(up)
    basis = _horizontal_basis(up_dir)
    center, radius = robust_bounds(means, opacities)
    step = 2.0 * math.pi / n
    cameras = []
    for k in range(n):
        azimuth = math.radians(start_azimuth_deg) + k * step
        elevation, fov, scale, target = elevation_deg, fov_deg, 1.0, center
        if rng is not None:
            azimuth += rng.uniform(-1.0, 1.0) * azimuth_jitter * step
            elevation = float(np.clip(elevation + rng.uniform(-1.0, 1.0) * elevation_jitter_deg, -80.0, 80.0))
            fov = float(np.clip(fov + rng.uniform(-1.0, 1.0) * fov_jitter_deg, 5.0, 150.0))
            scale = math.exp(rng.uniform(-1.0, 1.0) * math.log1p(distance_jitter))
            target = center + rng.uniform(-1.0, 1.0, 3) * target_jitter * radius
        focal, cx, cy = _square_pixel_intrinsics(fov, width, height)
        dist = (distance if distance is not None else fit_distance(radius, focal, width, height)) * scale
        eye = target + dist * _direction(azimuth, math.radians(elevation), up_dir, basis)
        cameras.append(Camera(look_at(eye, target, up_dir), focal, focal, cx, cy, width, height))
    return cameras


def inside_out_cameras(
    means: np.ndarray | None,
    n: int,
    width: int,
    height: int,
    up: str | Sequence[float] = "+z",
    fov_deg: float = 90.0,
    position: Sequence[float] | None = None,
    pitches_deg: Sequence[float] = (0.0,),
    opacities: np.ndarray | None = None,
) -> list[Camera]:
    """Cameras for rooms: at `position` (default: the robust center), looking outward.

    For each pitch in `pitches_deg` (degrees above the horizon, |pitch| < 90), `n` yaw angles evenly spaced
    over 360 degrees; the list holds n * len(pitches_deg) cameras, pitch-major. `fov_deg` spans the larger
    image side. `means` is used only to find the default position (it may be None when `position` is given).
    """
    n = _positive_int("n", n)
    if not pitches_deg:
        raise ValueError("pitches_deg must hold at least one pitch")
    up_dir = up_vector(up)
    basis = _horizontal_basis(up_dir)
    if position is None:
        if means is None:
            raise ValueError("inside_out_cameras needs means or a position")
        eye, _ = robust_bounds(means, opacities)
    else:
        eye = np.asarray(position, dtype=np.float64).reshape(3)
    focal, cx, cy = _square_pixel_intrinsics(fov_deg, width, height)
    cameras = []
    for pitch in pitches_deg:
        if not -90 < pitch < 90:
            raise ValueError(f"pitch must be in (-90, 90) degrees, got {pitch}")
        for k in range(n):
            direction = _direction(2.0 * math.pi * k / n, math.radians(pitch), up_dir, basis)
            cameras.append(Camera(look_at(eye, eye + direction, up_dir), focal, focal, cx, cy, width, height))
    return cameras


def views_between(cameras: Sequence[Camera]) -> list[Camera]:
    """A view halfway between each consecutive pair of cameras (position and rotation), e.g. user shots."""
    out = []
    for a, b in zip(cameras[:-1], cameras[1:]):
        qa, qb = rotation_to_quat(a.rotation), rotation_to_quat(b.rotation)
        q = qa + (qb if float(np.dot(qa, qb)) >= 0 else -qb)
        rotation = quat_to_rotation((q / np.linalg.norm(q))[None])[0]
        position = 0.5 * (a.position + b.position)
        matrix = np.eye(4)
        matrix[:3, :3], matrix[:3, 3] = rotation, -rotation @ position
        out.append(a.with_pose(matrix))
    return out


def sphere_cameras(
    means: np.ndarray,
    n: int,
    width: int,
    height: int,
    fov_deg: float = 50.0,
    distance_factor: float = 1.0,
    opacities: np.ndarray | None = None,
) -> list[Camera]:
    """`n` cameras spread evenly over the whole sphere around the scene (Fibonacci lattice), looking at it.

    Needs no up axis, so it suits any scene whose orientation is unknown (significance scoring). Each camera
    is placed like orbit_cameras' (the robust sphere fits the view), times `distance_factor`.
    """
    n = _positive_int("n", n)
    center, radius = robust_bounds(means, opacities)
    focal, cx, cy = _square_pixel_intrinsics(fov_deg, width, height)
    distance = fit_distance(radius, focal, width, height) * distance_factor
    golden = math.pi * (3.0 - math.sqrt(5.0))
    cameras = []
    for k in range(n):
        z = 1.0 - 2.0 * (k + 0.5) / n
        ring = math.sqrt(max(0.0, 1.0 - z * z))
        direction = np.array([ring * math.cos(golden * k), ring * math.sin(golden * k), z])
        up = np.array([0.0, 0.0, 1.0]) if abs(z) < 0.9 else np.array([0.0, 1.0, 0.0])
        eye = center + distance * direction
        cameras.append(Camera(look_at(eye, center, up), focal, focal, cx, cy, width, height))
    return cameras


# --- Blender camera math (no bpy) ------------------------------------------------------------------------

_SENSOR_FITS = ("AUTO", "HORIZONTAL", "VERTICAL")


def blender_render_size(resolution_x: int, resolution_y: int, resolution_percentage: float) -> tuple[int, int]:
    """Pixel size Blender renders at: resolution * percentage / 100, truncated (as Blender does)."""
    width = int(resolution_x * resolution_percentage // 100)
    height = int(resolution_y * resolution_percentage // 100)
    if width <= 0 or height <= 0:
        raise ValueError(
            f"render size {resolution_x}x{resolution_y} at {resolution_percentage}% is {width}x{height} pixels"
        )
    return width, height


def blender_camera_to_camera(
    lens_mm: float,
    sensor_width_mm: float,
    sensor_height_mm: float,
    sensor_fit: str,
    shift_x: float,
    shift_y: float,
    resolution_x: int,
    resolution_y: int,
    resolution_percentage: float,
    pixel_aspect_x: float,
    pixel_aspect_y: float,
    matrix_world: np.ndarray,
) -> Camera:
    """The Camera that a Blender perspective camera renders with (Blender's viewplane rules).

    - Image size: resolution * percentage / 100, truncated.
    - Fitted axis: HORIZONTAL or VERTICAL as given; AUTO picks horizontal when aspx * W >= aspy * H.
    - Sensor size: sensor_height for VERTICAL, sensor_width otherwise (AUTO applies the *width* to whichever
      axis is fitted, so a portrait AUTO camera uses sensor_width vertically).
    - viewfac (pixels spanned by the sensor): W for horizontal fit, H * aspy / aspx for vertical fit
      (aspect-corrected). fx = lens * viewfac / sensor; fy = fx * aspx / aspy.
    - Shift is in units of viewfac: cx = W / 2 - shift_x * viewfac; cy = H / 2 + shift_y * viewfac * aspx / aspy
      (+shift_y moves the view up, i.e. the principal point down in OpenCV pixels).
    - matrix_world (camera-to-world, -Z forward, +Y up) may carry scale: its axes are normalised, as Blender's
      renderer does; shear or mirroring is a ValueError.
    """
    fit = sensor_fit.upper()
    if fit not in _SENSOR_FITS:
        raise ValueError(f"sensor_fit must be one of {_SENSOR_FITS}, got {sensor_fit!r}")
    for name, value in (("lens_mm", lens_mm), ("sensor_width_mm", sensor_width_mm),
                        ("sensor_height_mm", sensor_height_mm), ("pixel_aspect_x", pixel_aspect_x),
                        ("pixel_aspect_y", pixel_aspect_y), ("resolution_percentage", resolution_percentage)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be positive, got {value}")
    width, height = blender_render_size(resolution_x, resolution_y, resolution_percentage)
    ycor = pixel_aspect_y / pixel_aspect_x
    sensor = sensor_height_mm if fit == "VERTICAL" else sensor_width_mm
    if fit == "AUTO":
        fit = "HORIZONTAL" if pixel_aspect_x * width >= pixel_aspect_y * height else "VERTICAL"
    viewfac = width if fit == "HORIZONTAL" else ycor * height
    fx = lens_mm * viewfac / sensor
    fy = fx / ycor
    cx = 0.5 * width - shift_x * viewfac
    cy = 0.5 * height + shift_y * viewfac / ycor
    return Camera(blender_matrix_to_world_to_camera(matrix_world), fx, fy, cx, cy, width, height)


def blender_matrix_to_world_to_camera(matrix_world: np.ndarray) -> np.ndarray:
    """OpenCV world_to_camera of a Blender camera's matrix_world (axes normalised: scale is ignored)."""
    matrix = np.array(matrix_world, dtype=np.float64)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise ValueError(f"matrix_world must be a finite 4x4 matrix, got shape {matrix.shape}")
    lengths = np.linalg.norm(matrix[:3, :3], axis=0)
    if np.any(lengths < 1e-12):
        raise ValueError("matrix_world has a zero-length axis (zero scale)")
    matrix[:3, :3] /= lengths
    problem = rigid_problem(matrix, tolerance=1e-4)
    if problem:
        raise ValueError(f"matrix_world (scale removed) {problem}")
    return rigid_inverse(matrix @ FLIP_YZ)


def camera_to_blender(camera: Camera, sensor_width_mm: float = 36.0) -> dict[str, Any]:
    """Blender camera settings reproducing `camera`: the keyword arguments of blender_camera_to_camera.

    Uses sensor_fit HORIZONTAL with the given sensor width, 100% resolution, and a pixel aspect (>= 1 on one
    axis, as Blender requires) for fx != fy. sensor_height_mm is the height matching the image's aspect.
    """
    # fx / fy = aspy / aspx; Blender's pixel aspect values are >= 1.
    ratio = camera.fx / camera.fy
    aspect_x, aspect_y = (1.0, ratio) if ratio >= 1.0 else (1.0 / ratio, 1.0)
    ycor = aspect_y / aspect_x
    width, height = camera.width, camera.height
    return {
        "lens_mm": camera.fx * sensor_width_mm / width,
        "sensor_width_mm": sensor_width_mm,
        "sensor_height_mm": sensor_width_mm * height * ycor / width,
        "sensor_fit": "HORIZONTAL",
        "shift_x": (0.5 * width - camera.cx) / width,
        "shift_y": (camera.cy - 0.5 * height) * ycor / width,
        "resolution_x": width,
        "resolution_y": height,
        "resolution_percentage": 100,
        "pixel_aspect_x": aspect_x,
        "pixel_aspect_y": aspect_y,
        "matrix_world": camera.camera_to_world @ FLIP_YZ,
    }
