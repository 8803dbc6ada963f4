"""Tests for exgs_core.camera: Camera, transforms.json, view samplers and the Blender camera math."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from exgs_core.camera import (
    Camera,
    blender_camera_to_camera,
    camera_to_blender,
    inside_out_cameras,
    look_at,
    orbit_cameras,
    read_transforms,
    robust_bounds,
    up_vector,
    write_transforms,
)
from exgs_core.errors import CameraFormatError
from tests.conftest import MESH2SPLAT_DIR, requires_data

AXES = ["+x", "-x", "+y", "-y", "+z", "-z"]


def read_splat_means(name: str) -> np.ndarray:
    """xyz of an antimatter15 .splat: 32-byte records starting with float32 x, y, z."""
    return np.fromfile(MESH2SPLAT_DIR / f"{name}.splat", dtype="<f4").reshape(-1, 8)[:, :3].copy()


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def random_pose(rng: np.random.Generator) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = random_rotation(rng)
    matrix[:3, 3] = rng.uniform(-10, 10, 3)
    return matrix


def translated(x: float, y: float, z: float) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, 3] = (x, y, z)
    return matrix


def sphere_points(center: np.ndarray, radius: float, count: int = 2000) -> np.ndarray:
    directions = np.random.default_rng(0).normal(size=(count, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return center + radius * directions


def box_cloud(seed: int = 0, count: int = 20000) -> np.ndarray:
    """Points filling the box [-1, 1] x [-2, 2] x [-0.5, 0.5], shifted to (3, -2, 5)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (count, 3)) * (1.0, 2.0, 0.5) + (3.0, -2.0, 5.0)


# --- Camera ----------------------------------------------------------------------------------------------


def test_camera_basics_on_a_hand_built_camera():
    # Camera at (1, 2, 3) with the world axes: world_to_camera = translation by -(1, 2, 3).
    cam = Camera(translated(-1, -2, -3), fx=500.0, fy=400.0, cx=320.0, cy=240.0, width=640, height=480)
    np.testing.assert_array_equal(cam.K, [[500, 0, 320], [0, 400, 240], [0, 0, 1]])
    np.testing.assert_allclose(cam.position, (1, 2, 3))
    np.testing.assert_allclose(cam.forward, (0, 0, 1))
    np.testing.assert_allclose(cam.up, (0, -1, 0))  # OpenCV: image up is camera -y
    np.testing.assert_allclose(cam.right, (1, 0, 0))
    np.testing.assert_allclose(cam.camera_to_world, translated(1, 2, 3))
    # (2, 1, 13) is 10 ahead, 1 right, 1 up: u = 320 + 500 * 1/10 = 370, v = 240 - 400 * 1/10 = 200.
    uv, depth = cam.project(np.array([[1, 2, 13], [2, 1, 13]]))
    np.testing.assert_allclose(uv, [[320, 240], [370, 200]])
    np.testing.assert_allclose(depth, [10, 10])
    assert cam.fov_x == pytest.approx(2 * math.atan(320 / 500))
    assert cam.fov_y == pytest.approx(2 * math.atan(240 / 400))


def test_camera_to_world_inverts_world_to_camera():
    rng = np.random.default_rng(1)
    for _ in range(10):
        cam = Camera(random_pose(rng), 300, 300, 100, 80, 200, 160)
        np.testing.assert_allclose(cam.camera_to_world @ cam.world_to_camera, np.eye(4), atol=1e-12)
        np.testing.assert_allclose(cam.camera_to_world[:3, 3], cam.position, atol=1e-12)
        np.testing.assert_allclose(cam.camera_to_world[:3, 2], cam.forward, atol=1e-12)
        assert np.linalg.norm(cam.forward) == pytest.approx(1.0)


def test_camera_is_frozen_and_copies_its_matrix():
    matrix = np.eye(4)
    cam = Camera(matrix, 100, 100, 50, 50, 100, 100)
    matrix[0, 3] = 7.0
    assert cam.world_to_camera[0, 3] == 0.0
    assert cam.world_to_camera.dtype == np.float64
    with pytest.raises(AttributeError):
        cam.fx = 3.0


def _scaled_rotation() -> np.ndarray:
    matrix = np.eye(4)
    matrix[0, 0] = 2.0
    return matrix


def _sheared() -> np.ndarray:
    matrix = np.eye(4)
    matrix[0, 1] = 0.3
    return matrix


def _nan_matrix() -> np.ndarray:
    matrix = np.eye(4)
    matrix[1, 3] = np.nan
    return matrix


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(width=0), "width must be positive"),
        (dict(height=-4), "height must be positive"),
        (dict(width=10.5), "width must be an integer"),
        (dict(fx=0.0), "fx must be a positive"),
        (dict(fy=-1.0), "fy must be a positive"),
        (dict(fy=float("inf")), "fy must be a positive"),
        (dict(cx=float("nan")), "cx must be finite"),
        (dict(world_to_camera=_nan_matrix()), "non-finite"),
        (dict(world_to_camera=np.eye(3)), "must be 4x4"),
        (dict(world_to_camera=_scaled_rotation()), "not orthonormal"),
        (dict(world_to_camera=_sheared()), "not orthonormal"),
        (dict(world_to_camera=np.diag([1.0, 1.0, -1.0, 1.0])), "mirrors"),
        (dict(world_to_camera=np.vstack([np.eye(4)[:3], [0, 0, 1, 1]])), "last row"),
    ],
)
def test_camera_validation(kwargs, message):
    args = dict(world_to_camera=np.eye(4), fx=100.0, fy=100.0, cx=50.0, cy=50.0, width=100, height=100)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        Camera(**args)


def test_camera_accepts_numpy_and_integral_float_sizes():
    cam = Camera(np.eye(4), np.float32(100), 100, 50, 50, np.int64(100), 80.0)
    assert (cam.width, cam.height) == (100, 80) and type(cam.width) is int and type(cam.fx) is float


def test_scaled_and_resized_keep_the_same_view():
    rng = np.random.default_rng(2)
    cam = Camera(random_pose(rng), 600.0, 610.0, 330.0, 250.0, 640, 480)
    points = cam.camera_to_world[:3, :3] @ np.array([0.3, -0.2, 5.0]) + cam.position
    uv, _ = cam.project(points[None])
    half = cam.scaled(0.5)
    assert (half.width, half.height) == (320, 240)
    assert (cam.resized(641, 481).scaled(0.5).width, cam.resized(641, 481).scaled(0.5).height) == (321, 241)
    assert (half.fx, half.fy, half.cx, half.cy) == (300.0, 305.0, 165.0, 125.0)
    np.testing.assert_allclose(half.project(points[None])[0], uv * 0.5)
    # Non-uniform resize: x scales by 100/640, y by 300/480.
    other = cam.resized(100, 300)
    np.testing.assert_allclose(other.project(points[None])[0], uv * (100 / 640, 300 / 480))
    np.testing.assert_array_equal(other.world_to_camera, cam.world_to_camera)
    assert cam.scaled(2).isclose(Camera(cam.world_to_camera, 1200, 1220, 660, 500, 1280, 960))
    with pytest.raises(ValueError):
        cam.scaled(0)
    with pytest.raises(ValueError):
        cam.resized(0, 10)


def test_isclose():
    cam = Camera(np.eye(4), 100, 100, 50, 50, 100, 100)
    assert cam.isclose(Camera(translated(1e-10, 0, 0), 100, 100, 50, 50, 100, 100))
    assert not cam.isclose(Camera(translated(1e-6, 0, 0), 100, 100, 50, 50, 100, 100))
    assert not cam.isclose(Camera(np.eye(4), 100, 100, 50, 50, 100, 101))
    assert not cam.isclose(Camera(np.eye(4), 100, 100 + 1e-6, 50, 50, 100, 100))


def test_look_at_and_up_vector():
    # Camera at (0, -5, 0) looking at the origin with +z up: it looks along +y, right is +x.
    cam = Camera(look_at((0, -5, 0), (0, 0, 0), up_vector("+z")), 100, 100, 50, 50, 100, 100)
    np.testing.assert_allclose(cam.forward, (0, 1, 0), atol=1e-15)
    np.testing.assert_allclose(cam.right, (1, 0, 0), atol=1e-15)
    np.testing.assert_allclose(cam.up, (0, 0, 1), atol=1e-15)
    np.testing.assert_allclose(cam.position, (0, -5, 0), atol=1e-15)
    for name in AXES:
        vector = up_vector(name)
        assert np.count_nonzero(vector) == 1 and vector.sum() == (1 if name[0] == "+" else -1)
    np.testing.assert_allclose(up_vector((0, 0, 2)), (0, 0, 1))
    with pytest.raises(ValueError, match="up must be"):
        up_vector("up")
    with pytest.raises(ValueError):
        look_at((0, 0, 0), (0, 0, 1), (0, 0, 1))


# --- transforms.json -------------------------------------------------------------------------------------


def write_json(path: Path, document) -> Path:
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return path


# Blender/OpenGL camera at (0, -4, 0) looking at the origin (+y) with world +z up: camera x = (1, 0, 0),
# camera y (up) = (0, 0, 1), camera z (backwards) = (0, -1, 0), as the columns of the rotation.
C2W_GL = [[1, 0, 0, 0], [0, 0, -1, -4], [0, 1, 0, 0], [0, 0, 0, 1]]


def test_read_nerf_synthetic_style_file(tmp_path):
    angle = 0.6911112070083618
    path = write_json(
        tmp_path / "transforms.json",
        {"camera_angle_x": angle, "w": 800, "h": 800, "frames": [{"file_path": "./r_0", "transform_matrix": C2W_GL}]},
    )
    (cam,) = read_transforms(path)
    # fx = 0.5 * 800 / tan(0.3455556035) = 400 / 0.36006 = 1111.1110311...
    assert cam.fx == pytest.approx(1111.1110311937682, rel=1e-12)
    assert cam.fy == cam.fx and (cam.cx, cam.cy) == (400.0, 400.0) and (cam.width, cam.height) == (800, 800)
    np.testing.assert_allclose(cam.position, (0, -4, 0), atol=1e-12)
    np.testing.assert_allclose(cam.forward, (0, 1, 0), atol=1e-12)
    np.testing.assert_allclose(cam.up, (0, 0, 1), atol=1e-12)
    # The origin is 4 ahead: the principal point; world +x goes right, world +z goes up (smaller v).
    uv, depth = cam.project(np.array([[0, 0, 0], [1, 0, 0], [0, 0, 1]]))
    np.testing.assert_allclose(depth, 4.0)
    np.testing.assert_allclose(uv, [[400, 400], [400 + cam.fx / 4, 400], [400, 400 - cam.fx / 4]])


def test_read_per_frame_keys_override_top_level(tmp_path):
    document = {
        "fl_x": 500.0,
        "w": 640,
        "h": 480,
        "cx": 300.0,
        "frames": [
            {"transform_matrix": C2W_GL},
            {"transform_matrix": C2W_GL, "fl_x": 700.0, "fl_y": 720.0, "w": 1280, "cx": 600.5, "cy": 200.0},
            {"transform_matrix": C2W_GL, "camera_angle_x": math.pi / 2, "camera_angle_y": math.pi / 3},
            {"transform_matrix": [row for row in C2W_GL[:3]]},  # 3x4 is accepted
        ],
    }
    cams = read_transforms(write_json(tmp_path / "t.json", document))
    assert len(cams) == 4
    a, b, c, d = cams
    # Frame 0: top level only; fy defaults to fx, cy to the centre.
    assert (a.fx, a.fy, a.cx, a.cy, a.width, a.height) == (500.0, 500.0, 300.0, 240.0, 640, 480)
    # Frame 1: its own focal, width and principal point.
    assert (b.fx, b.fy, b.cx, b.cy, b.width, b.height) == (700.0, 720.0, 600.5, 200.0, 1280, 480)
    # Frame 2: its angles beat the top-level fl_x. fx = 320 / tan(45 deg) = 320; fy = 240 / tan(30 deg) = 415.69.
    assert c.fx == pytest.approx(320.0) and c.fy == pytest.approx(240 / math.tan(math.pi / 6))
    assert d.isclose(a)


def test_frames_keep_file_order(tmp_path):
    frames = [{"transform_matrix": (translated(0, 0, float(i))).tolist()} for i in (5, 1, 3)]
    cams = read_transforms(write_json(tmp_path / "t.json", {"fl_x": 10, "w": 4, "h": 4, "frames": frames}))
    assert [float(cam.position[2]) for cam in cams] == [5.0, 1.0, 3.0]


def test_missing_size_needs_default_size(tmp_path):
    path = write_json(tmp_path / "t.json", {"fl_x": 100, "frames": [{"transform_matrix": C2W_GL}]})
    with pytest.raises(CameraFormatError, match=r"t\.json: frame 0: image size 'w and h' is missing"):
        read_transforms(path)
    (cam,) = read_transforms(path, default_size=(320, 200))
    assert (cam.width, cam.height, cam.cx, cam.cy) == (320, 200, 160.0, 100.0)
    # Only h missing: the default supplies h, the file's w wins.
    path = write_json(tmp_path / "u.json", {"fl_x": 100, "w": 50, "frames": [{"transform_matrix": C2W_GL}]})
    with pytest.raises(CameraFormatError, match="'h' is missing"):
        read_transforms(path)
    (cam,) = read_transforms(path, default_size=(320, 200))
    assert (cam.width, cam.height) == (50, 200)


GOOD_FRAME = {"transform_matrix": C2W_GL}


@pytest.mark.parametrize(
    "document, message",
    [
        ("{not json", "is not valid JSON: .* line 1"),
        ("[1, 2]", "expected a JSON object"),
        ({"fl_x": 1, "w": 1, "h": 1}, "has no 'frames' list"),
        ({"fl_x": 1, "w": 1, "h": 1, "frames": []}, "'frames' is empty"),
        ({"w": 8, "h": 8, "frames": [{"fl_x": 1, **GOOD_FRAME}, GOOD_FRAME]}, "frame 1: no focal length"),
        ({"fl_x": 1, "w": 8, "h": 8, "frames": [GOOD_FRAME, {}]}, "frame 1: 'transform_matrix' is missing"),
        ({"fl_x": 1, "w": 8, "h": 8, "frames": [GOOD_FRAME, 3]}, "frame 1 is not a JSON object"),
        (
            {"fl_x": 1, "w": 8, "h": 8, "frames": [GOOD_FRAME, {"transform_matrix": np.eye(3).tolist()}]},
            r"frame 1: 'transform_matrix' must be 4x4, got shape \(3, 3\)",
        ),
        (
            {"fl_x": 1, "w": 8, "h": 8, "frames": [GOOD_FRAME, {"transform_matrix": [[1, 2], [3]]}]},
            "frame 1: 'transform_matrix' is not a matrix of numbers",
        ),
        (
            '{"fl_x": 1, "w": 8, "h": 8, "frames": [{"transform_matrix": [[NaN, 0, 0, 0], [0, 1, 0, 0],'
            " [0, 0, 1, 0], [0, 0, 0, 1]]}]}",
            "frame 0: 'transform_matrix' has non-finite entries",
        ),
        (
            {"fl_x": 1, "w": 8, "h": 8, "frames": [GOOD_FRAME, {"transform_matrix": np.diag([2.0, 2, 2, 1]).tolist()}]},
            "frame 1: 'transform_matrix' .*not orthonormal",
        ),
        ({"fl_x": 1, "w": -8, "h": 8, "frames": [GOOD_FRAME]}, "frame 0: 'w' must be a positive whole number"),
        ({"fl_x": 1, "w": 8.5, "h": 8, "frames": [GOOD_FRAME]}, "frame 0: 'w' must be a positive whole number"),
        ({"fl_x": "big", "w": 8, "h": 8, "frames": [GOOD_FRAME]}, "frame 0: 'fl_x' must be a finite number"),
        ({"fl_x": -3, "w": 8, "h": 8, "frames": [GOOD_FRAME]}, "frame 0: 'fl_x' must be positive"),
        ({"camera_angle_x": 4, "w": 8, "h": 8, "frames": [GOOD_FRAME]}, r"frame 0: 'camera_angle_x' must be in"),
    ],
)
def test_read_errors_name_the_file_and_frame(tmp_path, document, message):
    path = write_json(tmp_path / "bad_transforms.json", document)
    with pytest.raises(CameraFormatError, match=message) as info:
        read_transforms(path)
    assert str(info.value).startswith(str(path) + ": ")


def test_read_missing_file(tmp_path):
    with pytest.raises(CameraFormatError, match="nope.json: cannot be read"):
        read_transforms(tmp_path / "nope.json")


def test_round_trip_with_shared_intrinsics(tmp_path):
    cams = orbit_cameras(box_cloud(), 7, 320, 200, up="-y", fov_deg=60)
    path = tmp_path / "out" / "transforms.json"
    write_transforms(cams, path)
    document = json.loads(path.read_text())
    assert {"fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x"} <= set(document)
    assert document["w"] == 320 and document["h"] == 200
    assert [frame["file_path"] for frame in document["frames"]] == [f"frame_{i:05d}" for i in range(7)]
    assert all(set(frame) == {"file_path", "transform_matrix"} for frame in document["frames"])
    back = read_transforms(path)
    assert len(back) == len(cams) and all(a.isclose(b, atol=1e-9) for a, b in zip(cams, back))
    # The file is in the OpenGL convention: the third column of transform_matrix points backwards.
    np.testing.assert_allclose(np.array(document["frames"][0]["transform_matrix"])[:3, 2], -cams[0].forward)
    # Nothing but the result is left in the folder (atomic write cleans up its temporary file).
    assert sorted(p.name for p in path.parent.iterdir()) == ["transforms.json"]


def test_round_trip_with_per_frame_intrinsics(tmp_path):
    rng = np.random.default_rng(3)
    cams = [
        Camera(random_pose(rng), *rng.uniform(100, 2000, 2), *rng.uniform(-50, 500, 2), *rng.integers(1, 4000, 2))
        for _ in range(6)
    ]
    path = tmp_path / "transforms.json"
    write_transforms(cams, path, file_paths=[f"images/{i}.png" for i in range(6)])
    document = json.loads(path.read_text())
    assert "fl_x" not in document and all("fl_x" in frame and "w" in frame for frame in document["frames"])
    assert document["frames"][2]["file_path"] == "images/2.png"
    back = read_transforms(path)
    assert all(a.isclose(b, atol=1e-9) for a, b in zip(cams, back))
    # An existing file is replaced.
    write_transforms(cams[:2], path)
    assert len(read_transforms(path)) == 2
    with pytest.raises(ValueError):
        write_transforms([], path)
    with pytest.raises(ValueError):
        write_transforms(cams, path, file_paths=["a"])


def test_written_camera_angle_x_matches_focal(tmp_path):
    cam = Camera(np.eye(4), 400.0, 400.0, 400.0, 300.0, 800, 600)
    path = tmp_path / "t.json"
    write_transforms([cam], path)
    document = json.loads(path.read_text())
    # A reader that only knows camera_angle_x gets the same focal: 400 / tan(angle / 2) = 400.
    assert 0.5 * 800 / math.tan(document["camera_angle_x"] / 2) == pytest.approx(400.0)
    del document["fl_x"], document["fl_y"]
    assert read_transforms(write_json(tmp_path / "angle_only.json", document))[0].isclose(cam, atol=1e-9)


# --- robust bounds ---------------------------------------------------------------------------------------


def add_floaters(points: np.ndarray, fraction: float, distance: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    count = int(len(points) * fraction)
    directions = rng.normal(size=(count, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return np.concatenate([points, points.mean(axis=0) + distance * directions])


def naive_bounds(points: np.ndarray) -> tuple[np.ndarray, float]:
    low, high = points.min(axis=0), points.max(axis=0)
    return 0.5 * (low + high), 0.5 * float(np.linalg.norm(high - low))


def test_robust_bounds_of_a_box():
    points = box_cloud()
    center, radius = robust_bounds(points)
    # Percentiles 2..98 of a uniform box: 96% of each side; the half-diagonal of the box is sqrt(1+4+0.25)=2.291.
    np.testing.assert_allclose(center, (3, -2, 5), atol=0.03)
    assert radius == pytest.approx(0.96 * math.sqrt(5.25), rel=0.01)


def test_robust_bounds_ignore_far_floaters():
    points = box_cloud()
    center, radius = robust_bounds(points)
    naive_center, naive_radius = naive_bounds(points)
    noisy = add_floaters(points, 0.01, 1000.0 * naive_radius)
    noisy_center, noisy_radius = robust_bounds(noisy)
    bad_center, bad_radius = naive_bounds(noisy)
    assert np.linalg.norm(noisy_center - center) < 0.02 * radius
    assert abs(noisy_radius - radius) < 0.02 * radius
    # The naive box is ruined: its radius grows by about three orders of magnitude.
    assert bad_radius > 500 * naive_radius
    assert np.linalg.norm(bad_center - naive_center) > 10 * naive_radius


def test_opacity_weighting_ignores_faint_floaters():
    points = box_cloud()
    noisy = add_floaters(points, 0.10, 1000.0)  # 10%: too many for the plain percentiles
    opacities = np.concatenate([np.full(len(points), 0.9), np.full(len(noisy) - len(points), 1e-4)])
    center, radius = robust_bounds(points)
    weighted_center, weighted_radius = robust_bounds(noisy, opacities)
    assert np.linalg.norm(weighted_center - center) < 0.03 * radius
    assert abs(weighted_radius - radius) < 0.03 * radius
    assert robust_bounds(noisy)[1] > 100 * radius


def test_robust_bounds_edge_cases():
    center, radius = robust_bounds(np.array([[1.0, 2.0, 3.0]]))
    np.testing.assert_allclose(center, (1, 2, 3))
    assert 0 < radius < 1e-5
    with_nan = np.concatenate([box_cloud(), [[np.nan, 0, 0], [np.inf, 1, 1]]])
    np.testing.assert_allclose(robust_bounds(with_nan)[0], robust_bounds(box_cloud())[0])
    with pytest.raises(ValueError, match="no finite points"):
        robust_bounds(np.full((4, 3), np.nan))
    with pytest.raises(ValueError, match="opacities"):
        robust_bounds(box_cloud(), np.ones(3))


@requires_data
def test_robust_bounds_on_a_real_object():
    means = read_splat_means("bob")
    center, radius = robust_bounds(means)
    naive_center, naive_radius = naive_bounds(means)
    # A clean mesh-converted object: the robust sphere is a slightly trimmed version of the bounding box.
    assert 0.75 * naive_radius < radius <= naive_radius
    assert np.linalg.norm(center - naive_center) < 0.1 * naive_radius


# --- orbit cameras ---------------------------------------------------------------------------------------


def check_orbit(cams: list[Camera], center: np.ndarray, radius: float, up: np.ndarray, elevation_deg: float):
    for cam in cams:
        # Looks at the center: it projects to the principal point.
        uv, depth = cam.project(center[None])
        np.testing.assert_allclose(uv[0], (cam.cx, cam.cy), atol=1e-6)
        assert depth[0] > radius
        # The whole robust sphere is inside the image, and it touches the narrower side (fills the view).
        uv, depth = cam.project(sphere_points(center, radius))
        assert np.all(depth > 0)
        assert np.all((uv >= -1e-6) & (uv <= (cam.width + 1e-6, cam.height + 1e-6)))
        narrow = 0 if cam.width <= cam.height else 1
        extent = uv[:, narrow].max() - uv[:, narrow].min()
        assert extent > 0.9 * (cam.width, cam.height)[narrow]
        # World up is image up, without roll.
        assert float(cam.up @ up) > 0.5
        assert abs(float(cam.right @ up)) < 1e-12
        uv_up, _ = cam.project((center + 0.01 * radius * up)[None])
        assert uv_up[0, 1] < cam.cy and abs(uv_up[0, 0] - cam.cx) < 1e-6
        # Elevation above the horizon, seen from the center.
        offset = cam.position - center
        assert math.degrees(math.asin(offset @ up / np.linalg.norm(offset))) == pytest.approx(elevation_deg)


@pytest.mark.parametrize("up", AXES)
def test_orbit_cameras_for_every_up_axis(up):
    points = box_cloud()
    cams = orbit_cameras(points, 8, 160, 120, up=up, fov_deg=50, elevation_deg=20)
    center, radius = robust_bounds(points)
    up_dir = up_vector(up)
    assert len(cams) == 8
    check_orbit(cams, center, radius, up_dir, 20.0)
    # Distinct positions, at one distance, evenly spaced in azimuth (45 degrees apart).
    positions = np.array([cam.position for cam in cams])
    gaps = np.linalg.norm(positions[:, None] - positions[None], axis=-1)[~np.eye(8, dtype=bool)]
    assert gaps.min() > 0.5 * radius
    horizontal = (positions - center) - np.outer((positions - center) @ up_dir, up_dir)
    horizontal /= np.linalg.norm(horizontal, axis=1, keepdims=True)
    steps = [math.degrees(math.acos(np.clip(horizontal[k] @ horizontal[(k + 1) % 8], -1, 1))) for k in range(8)]
    np.testing.assert_allclose(steps, 45.0, atol=1e-9)
    # Counter-clockwise about up, consistently.
    assert all(float(np.cross(horizontal[k], horizontal[(k + 1) % 8]) @ up_dir) > 0 for k in range(8))


def test_orbit_fov_spans_the_larger_side_and_distance_fits_the_narrower():
    points = box_cloud()
    center, radius = robust_bounds(points)
    for width, height in ((200, 100), (100, 200)):
        cams = orbit_cameras(points, 3, width, height, fov_deg=60, elevation_deg=-10)
        cam = cams[0]
        # f = 0.5 * 200 / tan(30 deg) = 173.205 for both; the narrower half-angle is atan(50 / 173.205) = 16.1 deg.
        assert cam.fx == cam.fy == pytest.approx(173.20508075688772)
        assert np.linalg.norm(cam.position - center) == pytest.approx(radius / math.sin(math.atan(50 / 173.20508)))
        check_orbit(cams, center, radius, up_vector("+z"), -10.0)


def test_orbit_with_explicit_distance():
    points = box_cloud()
    center, _ = robust_bounds(points)
    cams = orbit_cameras(points, 4, 64, 64, distance=25.0, elevation_deg=0.0)
    np.testing.assert_allclose([np.linalg.norm(cam.position - center) for cam in cams], 25.0)
    np.testing.assert_allclose([cam.forward[2] for cam in cams], 0.0, atol=1e-12)  # level cameras
    with pytest.raises(ValueError, match="elevation"):
        orbit_cameras(points, 4, 64, 64, elevation_deg=90)


def test_orbit_jitter_is_seeded_and_bounded():
    points = box_cloud()
    center, radius = robust_bounds(points)
    plain = orbit_cameras(points, 12, 96, 64)
    first = orbit_cameras(points, 12, 96, 64, rng=np.random.default_rng(7))
    again = orbit_cameras(points, 12, 96, 64, rng=np.random.default_rng(7))
    other = orbit_cameras(points, 12, 96, 64, rng=np.random.default_rng(8))
    assert all(a.isclose(b, atol=0) for a, b in zip(first, again))
    assert not all(a.isclose(b, atol=1e-3) for a, b in zip(first, other))
    assert not any(a.isclose(b, atol=1e-3) for a, b in zip(first, plain))
    base_distance = np.linalg.norm(plain[0].position - center)
    focals = {cam.fx for cam in first}
    assert len(focals) == 12  # every view has its own focal length
    for cam in first:
        # fov within 50 +- 15 degrees across the larger side (96 px); distance factor within [1/1.3, 1.3]
        # of the fitted distance for that fov (the target moves by at most 0.15 * radius per axis).
        fov = math.degrees(2 * math.atan(48 / cam.fx))
        assert 35 - 1e-9 <= fov <= 65 + 1e-9
        fitted = radius / math.sin(math.atan(32 / cam.fx))
        distance = np.linalg.norm(cam.position - center)
        slack = 0.15 * math.sqrt(3) * radius
        assert fitted / 1.3 - slack <= distance <= fitted * 1.3 + slack
        # The center stays in view, and the image stays upright.
        uv, depth = cam.project(center[None])
        assert depth[0] > 0 and 0 <= uv[0, 0] <= 96 and 0 <= uv[0, 1] <= 64
        assert cam.up[2] > 0 and abs(cam.right[2]) < 1e-12
    assert np.ptp([np.linalg.norm(cam.position - center) for cam in first]) > 0.1 * base_distance


@requires_data
def test_orbit_on_a_real_object_with_minus_y_up():
    means = read_splat_means("bob")
    center, radius = robust_bounds(means)
    cams = orbit_cameras(means, 6, 128, 96, up="-y", fov_deg=45, elevation_deg=25)
    check_orbit(cams, center, radius, np.array([0.0, -1.0, 0.0]), 25.0)
    for cam in cams:
        uv, depth = cam.project(means)
        inside = (depth > 0) & np.all((uv >= 0) & (uv <= (cam.width, cam.height)), axis=1)
        assert inside.mean() > 0.99


# --- inside-out cameras ----------------------------------------------------------------------------------


def test_inside_out_cameras_cover_360_degrees():
    points = box_cloud()
    center, _ = robust_bounds(points)
    cams = inside_out_cameras(points, 6, 120, 90, up="+z", fov_deg=75)
    assert len(cams) == 6
    for cam in cams:
        np.testing.assert_allclose(cam.position, center, atol=1e-12)
        assert abs(cam.forward[2]) < 1e-12 and cam.up[2] > 0.999
    # Every horizontal direction lies inside the horizontal field of view of at least one camera.
    yaws = np.radians(np.arange(0, 360, 0.5))
    directions = np.stack([np.cos(yaws), np.sin(yaws), np.zeros_like(yaws)], axis=1)
    seen = np.zeros(len(yaws), dtype=bool)
    for cam in cams:
        uv, depth = cam.project(center + directions)
        seen |= (depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] <= cam.width)
    assert seen.all()
    # They look outwards: opposite cameras look in opposite directions.
    np.testing.assert_allclose(cams[0].forward, -cams[3].forward, atol=1e-12)


def test_inside_out_with_pitches_and_position():
    points = box_cloud()
    cams = inside_out_cameras(None, 4, 64, 64, up="-y", position=(1, 2, 3), pitches_deg=(-30, 30))
    assert len(cams) == 8
    np.testing.assert_allclose([cam.position for cam in cams], [[1, 2, 3]] * 8, atol=1e-12)
    # Pitch-major order: the first four look 30 degrees below the horizon (up is -y, so forward.y = +sin 30).
    np.testing.assert_allclose([cam.forward[1] for cam in cams], [0.5] * 4 + [-0.5] * 4, atol=1e-12)
    # Default fov 90 across 64 px: f = 32 / tan(45 deg) = 32.
    assert cams[0].fx == pytest.approx(32.0)
    with pytest.raises(ValueError, match="pitch"):
        inside_out_cameras(points, 4, 64, 64, pitches_deg=(90,))


# --- Blender camera math ---------------------------------------------------------------------------------

BLENDER_DEFAULTS = dict(
    lens_mm=50.0,
    sensor_width_mm=36.0,
    sensor_height_mm=24.0,
    sensor_fit="AUTO",
    shift_x=0.0,
    shift_y=0.0,
    resolution_x=1920,
    resolution_y=1080,
    resolution_percentage=100,
    pixel_aspect_x=1.0,
    pixel_aspect_y=1.0,
    matrix_world=np.eye(4),
)

# Each case: overrides of BLENDER_DEFAULTS -> expected (fx, fy, cx, cy, width, height), worked out by hand.
BLENDER_CASES = {
    # Landscape AUTO -> horizontal fit: fx = 50 mm * 1920 px / 36 mm = 2666.667; centred.
    "landscape_auto": (dict(), (2666.6666666666665, 2666.6666666666665, 960.0, 540.0, 1920, 1080)),
    # Portrait AUTO -> vertical fit, but AUTO still uses the sensor *width* (36) for it: fx = 50 * 1920 / 36.
    "portrait_auto": (
        dict(resolution_x=1080, resolution_y=1920),
        (2666.6666666666665, 2666.6666666666665, 540.0, 960.0, 1080, 1920),
    ),
    # VERTICAL on landscape: sensor height over the height: fx = 50 * 1080 / 24 = 2250.
    "landscape_vertical": (dict(sensor_fit="VERTICAL"), (2250.0, 2250.0, 960.0, 540.0, 1920, 1080)),
    # HORIZONTAL on portrait: sensor width over the width: fx = 50 * 1080 / 36 = 1500.
    "portrait_horizontal": (
        dict(sensor_fit="HORIZONTAL", resolution_x=1080, resolution_y=1920),
        (1500.0, 1500.0, 540.0, 960.0, 1080, 1920),
    ),
    # Shift in units of the fitted side (1920): cx = 960 - 0.1 * 1920 = 768; cy = 540 + (-0.2) * 1920 = 156.
    "landscape_shift": (
        dict(shift_x=0.1, shift_y=-0.2),
        (2666.6666666666665, 2666.6666666666665, 768.0, 156.0, 1920, 1080),
    ),
    # Portrait AUTO shift: the fitted side is the height (1920): cx = 540 - 0.1 * 1920 = 348; cy = 960 + 0.05 * 1920.
    "portrait_shift": (
        dict(resolution_x=1080, resolution_y=1920, shift_x=0.1, shift_y=0.05),
        (2666.6666666666665, 2666.6666666666665, 348.0, 1056.0, 1080, 1920),
    ),
    # HORIZONTAL on portrait with shift: the unit is the width (1080): cy = 960 + 0.1 * 1080 = 1068.
    "portrait_horizontal_shift": (
        dict(sensor_fit="HORIZONTAL", resolution_x=1080, resolution_y=1920, shift_y=0.1),
        (1500.0, 1500.0, 540.0, 1068.0, 1080, 1920),
    ),
    # 50%: 960 x 540 pixels, fx = 50 * 960 / 36 = 1333.333; shift 0.25 -> cx = 480 - 0.25 * 960 = 240.
    "half_resolution": (
        dict(resolution_percentage=50, shift_x=0.25),
        (1333.3333333333333, 1333.3333333333333, 240.0, 270.0, 960, 540),
    ),
    # 50% of an odd size truncates: 1921 x 1081 -> 960 x 540.
    "half_odd_resolution": (
        dict(resolution_x=1921, resolution_y=1081, resolution_percentage=50),
        (1333.3333333333333, 1333.3333333333333, 480.0, 270.0, 960, 540),
    ),
    # Pixel aspect 2:1 (wide pixels), AUTO: 2 * 1920 >= 1 * 1080 -> horizontal, viewfac = 1920,
    # fx = 2666.667, ycor = aspy / aspx = 0.5, fy = fx / ycor = 5333.333; cy = 540 + 0.1 * 1920 / 0.5 = 924.
    "wide_pixels": (
        dict(pixel_aspect_x=2.0, shift_y=0.1),
        (2666.6666666666665, 5333.333333333333, 960.0, 924.0, 1920, 1080),
    ),
    # Pixel aspect 1:2 (tall pixels) on 1000 x 800: 1 * 1000 < 2 * 800 -> AUTO fits vertically although the
    # image is landscape in pixels. ycor = 2, viewfac = 2 * 800 = 1600, fx = 50 * 1600 / 36 = 2222.222,
    # fy = fx / 2 = 1111.111; cx = 500 - 0.1 * 1600 = 340; cy = 400 + 0.1 * 1600 / 2 = 480.
    "tall_pixels_flip_auto": (
        dict(resolution_x=1000, resolution_y=800, pixel_aspect_y=2.0, shift_x=0.1, shift_y=0.1),
        (2222.222222222222, 1111.111111111111, 340.0, 480.0, 1000, 800),
    ),
    # Tall pixels, VERTICAL, 35 mm lens, 20 mm sensor height: viewfac = 2 * 800 = 1600,
    # fx = 35 * 1600 / 20 = 2800, fy = 1400.
    "tall_pixels_vertical": (
        dict(resolution_x=1000, resolution_y=800, pixel_aspect_y=2.0, sensor_fit="VERTICAL", lens_mm=35.0,
             sensor_height_mm=20.0),
        (2800.0, 1400.0, 500.0, 400.0, 1000, 800),
    ),
}


@pytest.mark.parametrize("name", list(BLENDER_CASES))
def test_blender_intrinsics_hand_computed(name):
    overrides, expected = BLENDER_CASES[name]
    cam = blender_camera_to_camera(**{**BLENDER_DEFAULTS, **overrides})
    assert (cam.fx, cam.fy, cam.cx, cam.cy, cam.width, cam.height) == pytest.approx(expected, rel=1e-12)
    assert isinstance(cam.width, int)


def test_blender_identity_matrix_looks_down_minus_z():
    cam = blender_camera_to_camera(**BLENDER_DEFAULTS)
    np.testing.assert_array_equal(cam.world_to_camera, np.diag([1.0, -1.0, -1.0, 1.0]))
    np.testing.assert_array_equal(cam.forward, (0, 0, -1))
    np.testing.assert_array_equal(cam.up, (0, 1, 0))
    # A point 10 down -Z and 1 up +Y lands above the centre: v = 540 - 2666.667 / 10.
    uv, depth = cam.project(np.array([[0.0, 1.0, -10.0]]))
    np.testing.assert_allclose(uv, [[960.0, 540.0 - 266.66666666666663]])
    assert depth[0] == 10.0


def blender_matrix(rng: np.random.Generator, scale=(1.0, 1.0, 1.0)) -> np.ndarray:
    matrix = random_pose(rng)
    matrix[:3, :3] = matrix[:3, :3] * np.asarray(scale)  # scales the camera's local axes (columns)
    return matrix


def test_blender_matrix_scale_is_ignored_and_shear_rejected():
    rng = np.random.default_rng(4)
    matrix = blender_matrix(rng)
    plain = blender_camera_to_camera(**{**BLENDER_DEFAULTS, "matrix_world": matrix})
    scaled_matrix = matrix.copy()
    scaled_matrix[:3, :3] *= (2.0, 0.5, 3.0)
    scaled = blender_camera_to_camera(**{**BLENDER_DEFAULTS, "matrix_world": scaled_matrix})
    assert scaled.isclose(plain, atol=1e-12)
    np.testing.assert_allclose(plain.position, matrix[:3, 3])
    np.testing.assert_allclose(plain.forward, -matrix[:3, 2])
    sheared = matrix @ np.array([[1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    with pytest.raises(ValueError, match="not orthonormal"):
        blender_camera_to_camera(**{**BLENDER_DEFAULTS, "matrix_world": sheared})
    with pytest.raises(ValueError, match="mirrors"):
        blender_camera_to_camera(**{**BLENDER_DEFAULTS, "matrix_world": np.diag([-1.0, 1.0, 1.0, 1.0])})
    with pytest.raises(ValueError, match="zero-length"):
        blender_camera_to_camera(**{**BLENDER_DEFAULTS, "matrix_world": np.diag([0.0, 1.0, 1.0, 1.0])})


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(sensor_fit="DIAGONAL"), "sensor_fit"),
        (dict(lens_mm=0.0), "lens_mm"),
        (dict(pixel_aspect_y=-1.0), "pixel_aspect_y"),
        (dict(resolution_x=1, resolution_percentage=50), "0x540 pixels"),
    ],
)
def test_blender_invalid_settings(overrides, message):
    with pytest.raises(ValueError, match=message):
        blender_camera_to_camera(**{**BLENDER_DEFAULTS, **overrides})


def test_camera_to_blender_round_trip():
    rng = np.random.default_rng(5)
    cams = [
        Camera(random_pose(rng), 900.0, 900.0, 320.0, 240.0, 640, 480),  # square pixels, centred
        Camera(random_pose(rng), 800.0, 1600.0, 100.0, 700.0, 640, 480),  # wide pixels, shifted
        Camera(random_pose(rng), 1500.0, 500.0, 300.0, 20.0, 480, 640),  # tall pixels, portrait
    ]
    for cam in cams:
        settings = camera_to_blender(cam, sensor_width_mm=36.0)
        assert min(settings["pixel_aspect_x"], settings["pixel_aspect_y"]) == 1.0
        back = blender_camera_to_camera(**settings)
        assert back.isclose(cam, atol=1e-9)
    # The square-pixel camera: lens = 900 * 36 / 640 = 50.625 mm, no shift.
    settings = camera_to_blender(cams[0])
    assert settings["lens_mm"] == pytest.approx(50.625)
    assert settings["shift_x"] == settings["shift_y"] == 0.0
    # Blender's own AUTO fit on the same lens, sensor and resolution gives the same camera.
    assert blender_camera_to_camera(**{**settings, "sensor_fit": "AUTO"}).isclose(cams[0], atol=1e-9)


# --- cross-check against real Blender (bpy) ----------------------------------------------------------------

BPY_CASES = [
    {**BLENDER_DEFAULTS, **overrides} for overrides, _ in BLENDER_CASES.values()
] + [
    dict(BLENDER_DEFAULTS, lens_mm=24.0, sensor_width_mm=23.5, sensor_height_mm=15.6, sensor_fit=fit,
         shift_x=sx, shift_y=sy, resolution_x=rx, resolution_y=ry, resolution_percentage=pct,
         pixel_aspect_x=ax, pixel_aspect_y=ay)
    for fit, sx, sy, rx, ry, pct, ax, ay in [
        ("AUTO", -0.3, 0.15, 640, 480, 75, 1.0, 1.0),
        ("AUTO", 0.2, -0.1, 480, 640, 33, 1.5, 1.0),
        ("VERTICAL", 0.05, 0.3, 800, 300, 100, 1.0, 3.0),
        ("HORIZONTAL", -0.2, -0.25, 300, 800, 150, 2.5, 1.0),
        ("AUTO", 0.0, 0.0, 1000, 999, 100, 1.0, 1.01),
    ]
]


@pytest.fixture(scope="module")
def bpy_camera():
    bpy = pytest.importorskip("bpy", reason="bpy (pip install bpy==5.0.1) is needed for the Blender cross-check")
    data = bpy.data.cameras.new("exgs_test_camera")
    obj = bpy.data.objects.new("exgs_test_camera", data)
    bpy.context.scene.collection.objects.link(obj)
    yield bpy, obj
    bpy.data.objects.remove(obj)
    bpy.data.cameras.remove(data)


def blender_pixels(bpy, obj, settings: dict, points: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Pixels (OpenCV: v down, image [0, W] x [0, H]) where Blender's own projection puts world points."""
    import mathutils

    data, render = obj.data, bpy.context.scene.render
    data.type = "PERSP"
    data.lens = settings["lens_mm"]
    data.sensor_width = settings["sensor_width_mm"]
    data.sensor_height = settings["sensor_height_mm"]
    data.sensor_fit = settings["sensor_fit"]
    data.shift_x, data.shift_y = settings["shift_x"], settings["shift_y"]
    render.resolution_x, render.resolution_y = settings["resolution_x"], settings["resolution_y"]
    render.resolution_percentage = settings["resolution_percentage"]
    render.pixel_aspect_x, render.pixel_aspect_y = settings["pixel_aspect_x"], settings["pixel_aspect_y"]
    obj.matrix_world = mathutils.Matrix(settings["matrix_world"].tolist())
    depsgraph = bpy.context.evaluated_depsgraph_get()
    depsgraph.update()
    # The size Blender renders at, checked against our truncation rule through the render settings themselves.
    width = render.resolution_x * render.resolution_percentage // 100
    height = render.resolution_y * render.resolution_percentage // 100
    projection = np.array(
        obj.calc_matrix_camera(depsgraph, x=width, y=height, scale_x=render.pixel_aspect_x,
                               scale_y=render.pixel_aspect_y)
    )
    view = np.array(obj.matrix_world.normalized().inverted())
    clip = np.c_[points, np.ones(len(points))] @ (projection @ view).T
    ndc = clip[:, :2] / clip[:, 3:4]
    return np.stack([(ndc[:, 0] + 1) / 2 * width, (1 - ndc[:, 1]) / 2 * height], axis=1), width, height


@pytest.mark.blender
def test_blender_math_matches_real_blender(bpy_camera):
    bpy, obj = bpy_camera
    rng = np.random.default_rng(6)
    for index, case in enumerate(BPY_CASES):
        settings = dict(case, matrix_world=blender_matrix(rng, scale=rng.uniform(0.5, 2.0, 3)))
        cam = blender_camera_to_camera(**settings)
        # World points in front of the camera, spread over (and beyond) the field of view.
        local = np.c_[rng.uniform(-1, 1, (50, 2)), np.ones(50)] * rng.uniform(1, 20, (50, 1))
        points = local @ cam.camera_to_world[:3, :3].T + cam.position
        expected, width, height = blender_pixels(bpy, obj, settings, points)
        assert (cam.width, cam.height) == (width, height), f"case {index}"
        ours, _ = cam.project(points)
        # Blender works in float32: allow a few millionths of the image size.
        np.testing.assert_allclose(ours, expected, atol=2e-5 * max(width, height), err_msg=f"case {index}")


@pytest.mark.blender
def test_blender_world_to_camera_view_agrees(bpy_camera):
    bpy, obj = bpy_camera
    from bpy_extras.object_utils import world_to_camera_view
    import mathutils

    rng = np.random.default_rng(9)
    for case in BPY_CASES:
        if case["resolution_percentage"] != 100:
            continue  # world_to_camera_view frames the full-size resolution
        settings = dict(case, matrix_world=blender_matrix(rng, scale=(1.5, 1.5, 1.5)))
        cam = blender_camera_to_camera(**settings)
        blender_pixels(bpy, obj, settings, np.zeros((1, 3)))  # applies the settings
        points = cam.position + rng.normal(size=(20, 3)) * 0.2 + 5 * cam.forward
        ours, _ = cam.project(points)
        scene = bpy.context.scene
        for point, (u, v) in zip(points, ours):
            x, y, _ = world_to_camera_view(scene, obj, mathutils.Vector(point.tolist()))
            assert (x * cam.width, (1 - y) * cam.height) == pytest.approx((u, v), abs=2e-5 * cam.width)


def test_sphere_cameras_cover_the_sphere_and_look_at_the_center():
    from exgs_core.camera import sphere_cameras

    rng = np.random.default_rng(3)
    points = rng.normal(size=(2000, 3)) * (1.0, 2.0, 0.5) + (5.0, -1.0, 2.0)
    cameras = sphere_cameras(points, 40, 64, 48)
    center, _ = robust_bounds(points)
    directions = np.array([c.position - center for c in cameras])
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    for camera in cameras:
        uv, depth = camera.project(center[None])
        assert depth[0] > 0 and np.allclose(uv[0], (32.0, 24.0), atol=1e-6)
    # Every direction on the sphere is within 40 degrees of some camera (40 views).
    probes = rng.normal(size=(500, 3))
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    nearest = np.max(probes @ directions.T, axis=1)
    assert np.degrees(np.arccos(nearest.min())) < 40.0
    # Both poles are covered, unlike an orbit at one elevation.
    assert directions[:, 2].max() > 0.9 and directions[:, 2].min() < -0.9
