"""Packing a GaussianScene into byte planes: error bounds per attribute, order, SH drop, odd values, render PSNR."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from exgs_core.scene import GaussianScene, quat_to_rotation
from exgs_core.sh import SH_C0
from exgs_core.ugc.pack import (
    COLOR_BASIS,
    PackSettings,
    check_pack_header,
    contract,
    expand,
    expected_section_sizes,
    morton_codes,
    morton_decode,
    pack_scene,
    packing_order,
    unpack_scene,
)
from tests.conftest import SCENES_DIR, requires_data

SCENES = {
    "gs3d": "gs3d_lod1_tile_0_0.5x.ply",  # SH 3, unnormalised quaternions, log-scales below -20
    "fox": "mjw_fox.ply",  # +inf opacities
    "playbot": "pcengine_playbot_3_0.inria.ply",  # SH 2
    "plant": "splats_plant.splat",
}


@pytest.fixture(scope="module")
def scenes() -> dict[str, GaussianScene]:
    if not SCENES_DIR.is_dir():
        pytest.skip(f"real data folder {SCENES_DIR} is absent")
    from exgs_core.io import read_scene

    return {key: read_scene(SCENES_DIR / name) for key, name in SCENES.items()}


def round_trip(scene: GaussianScene, settings: PackSettings | None = None, sh_degree: int | None = None):
    """(header, unpacked scene, the original permuted into the unpacked order)."""
    header, sections = pack_scene(scene, sh_degree=sh_degree, settings=settings)
    assert {name: len(data) for name, data in sections.items()} == expected_section_sizes(header)
    order = packing_order(scene, settings)
    return header, unpack_scene(header, sections), scene.subset(order)


def synthetic(count: int = 500, degree: int = 1, seed: int = 0) -> GaussianScene:
    rng = np.random.default_rng(seed)
    return GaussianScene(
        rng.normal(size=(count, 3)),
        rng.normal(size=(count, 4)),
        rng.uniform(-6, -2, (count, 3)),
        rng.normal(size=count),
        rng.normal(scale=0.5, size=(count, (degree + 1) ** 2, 3)),
    )


# --- per-attribute error bounds on real scenes ---------------------------------------------------------------


@requires_data
@pytest.mark.parametrize("key", list(SCENES))
def test_positions_within_half_a_grid_step(scenes, key):
    scene = scenes[key]
    header, back, original = round_trip(scene)
    entry = header["quantisation"]["means"]
    step = (np.array(entry["max"]) - np.array(entry["min"])) / ((1 << entry["bits"]) - 1)
    center, radius = np.array(entry["center"]), np.array(entry["radius"])
    # beyond the core box, contract() stretches the grid by |x - center| / radius
    stretch = np.maximum(1.0, np.abs(original.means - center) / np.maximum(radius, 1e-30))
    bound = 0.5 * step * stretch * 1.001 + 1e-6 * np.abs(original.means) + 1e-7
    assert np.all(np.abs(back.means - original.means) <= bound)


@requires_data
@pytest.mark.parametrize("key", list(SCENES))
def test_rotations_within_smallest_three_step(scenes, key):
    scene = scenes[key]
    settings = PackSettings()
    _, back, original = round_trip(scene, settings)
    step = 2.0 / math.sqrt(2.0) / ((1 << settings.rotation_bits) - 2)
    unit = original.unit_quats().astype(np.float64)
    decoded = back.quats.astype(np.float64)
    assert np.allclose(np.linalg.norm(decoded, axis=1), 1.0, atol=1e-6)
    # three components within step/2; the dropped (largest, >= 1/2) one moves by at most 3 step/2
    distance = np.minimum(np.linalg.norm(decoded - unit, axis=1), np.linalg.norm(decoded + unit, axis=1))
    assert distance.max() <= 0.5 * step * math.sqrt(3 + 9) * 1.01
    # rotation matrices are quadratic in q: entries move by at most 4 |dq| (|q| = 1)
    rotation_error = np.abs(quat_to_rotation(decoded) - quat_to_rotation(unit)).max()
    assert rotation_error <= 4.0 * 0.5 * step * math.sqrt(12) * 1.01


@requires_data
@pytest.mark.parametrize("key", list(SCENES))
def test_scales_opacity_and_colours_within_their_steps(scenes, key):
    scene = scenes[key]
    settings = PackSettings()
    header, back, original = round_trip(scene, settings)
    quant = header["quantisation"]

    lo, hi = np.array(quant["log_scales"]["min"]), np.array(quant["log_scales"]["max"])
    step = (hi - lo) / ((1 << settings.scale_bits) - 1)
    expected = np.clip(original.log_scales.astype(np.float64), lo, hi)
    assert np.all(np.abs(back.log_scales - expected) <= 0.5 * step + 1e-5)
    assert np.all(np.isfinite(back.log_scales))

    opacity_error = np.abs(back.opacities().astype(np.float64) - original.opacities())
    assert opacity_error.max() <= 0.5 / ((1 << settings.opacity_bits) - 1) + 1e-6

    dc = original.sh[:, 0, :].astype(np.float64)
    if header["sh_degree"] == 0:
        dc = np.maximum(dc, -0.5 / SH_C0)  # below black renders as black
    step = quant["sh_dc"]["step"]
    # orthonormal basis: each basis value within step/2, so each RGB value within step/2 * sum |basis column|
    bound = 0.5 * step * np.abs(COLOR_BASIS).sum(axis=0) + 1e-5
    assert np.all(np.abs(back.sh[:, 0, :] - dc) <= bound)
    rms = np.sqrt(np.mean((back.sh[:, 0, :] - dc) ** 2))
    assert rms <= step / math.sqrt(12) * 1.1 + 1e-6


@requires_data
def test_sh_rest_within_step_and_clipped_outliers(scenes):
    scene = scenes["playbot"]
    settings = PackSettings()
    header, back, original = round_trip(scene, settings)
    entry = header["quantisation"]["sh_rest"]
    assert len(entry["bits"]) == 2
    for band, (bits, absmax) in enumerate(zip(entry["bits"], entry["absmax"]), start=1):
        columns = slice(band * band, (band + 1) ** 2)
        expected = np.clip(original.sh[:, columns, :].astype(np.float64), -absmax, absmax)
        step = 2.0 * absmax / ((1 << bits) - 1)
        bound = 0.5 * step * np.abs(COLOR_BASIS).sum(axis=0) + 1e-5
        assert np.all(np.abs(back.sh[:, columns, :] - expected) <= bound)
        inside = np.abs(original.sh[:, columns, :]) <= absmax
        assert inside.mean() >= settings.sh_percentile / 100.0 - 1e-3


# --- order, counts, SH degree --------------------------------------------------------------------------------


@requires_data
def test_morton_order_is_a_permutation_and_loses_nothing(scenes):
    scene = scenes["plant"]
    header, back, _ = round_trip(scene)
    order = packing_order(scene)
    assert len(back) == len(scene) == header["count"]
    assert np.array_equal(np.sort(order), np.arange(len(scene)))
    # the multiset of grid cells is the same before and after
    entry = header["quantisation"]["means"]

    def cells(means):
        y = contract(means.astype(np.float64), entry["center"], entry["radius"])
        q = np.rint((y - entry["min"]) / (np.array(entry["max"]) - entry["min"]) * ((1 << entry["bits"]) - 1))
        return np.sort(morton_codes(q.astype(np.int64)))

    assert np.array_equal(cells(scene.means), cells(back.means))
    # and the stored order is the Morton order: codes never decrease
    codes = morton_codes(np.rint((contract(back.means.astype(np.float64), entry["center"], entry["radius"])
                                  - entry["min"]) / (np.array(entry["max"]) - entry["min"])
                                 * ((1 << entry["bits"]) - 1)).astype(np.int64))
    assert np.all(np.diff(codes.astype(np.int64)) >= 0)


def test_morton_codes_round_trip():
    rng = np.random.default_rng(0)
    q = rng.integers(0, 1 << 16, size=(1000, 3)).astype(np.uint16)
    assert np.array_equal(morton_decode(morton_codes(q)), q)
    assert morton_codes(np.array([[1, 0, 0]]))[0] == 4 and morton_codes(np.array([[0, 0, 1]]))[0] == 1


def test_input_order_when_morton_is_off():
    scene = synthetic()
    settings = PackSettings(morton=False)
    assert np.array_equal(packing_order(scene, settings), np.arange(len(scene)))
    header, back, _ = round_trip(scene, settings)
    assert header["order"] == "input"
    assert np.abs(back.means - scene.means).max() < 1e-3


@requires_data
def test_sh_degree_drop_keeps_dc_and_removes_the_rest(scenes):
    scene = scenes["gs3d"]
    for degree in (0, 1, 2):
        header, back, original = round_trip(scene, sh_degree=degree)
        assert header["sh_degree"] == degree == back.sh_degree
        assert ("sh_rest" in header["quantisation"]) == (degree > 0)
        dc = original.sh[:, 0, :].astype(np.float64)
        if degree == 0:
            dc = np.maximum(dc, -0.5 / SH_C0)
        step = header["quantisation"]["sh_dc"]["step"]
        assert np.abs(back.sh[:, 0, :] - dc).max() <= 0.5 * step * np.abs(COLOR_BASIS).sum(axis=0).max() + 1e-5
    header, back, _ = round_trip(scenes["fox"], sh_degree=3)  # above the scene's degree: capped, nothing padded
    assert header["sh_degree"] == 0 and back.sh_degree == 0
    with pytest.raises(ValueError, match="sh_degree"):
        pack_scene(scene, sh_degree=-1)


def test_degree_zero_drops_smaller_file():
    scene = synthetic(degree=3)
    full = sum(len(v) for v in pack_scene(scene)[1].values())
    dc_only = sum(len(v) for v in pack_scene(scene, sh_degree=0)[1].values())
    assert dc_only < full / 3


# --- odd values ----------------------------------------------------------------------------------------------


@requires_data
def test_infinite_opacity_and_tiny_scales_survive(scenes):
    fox, gs3d = scenes["fox"], scenes["gs3d"]
    assert np.isposinf(fox.opacity_logits).any() and (gs3d.log_scales < -20).any()
    _, back, original = round_trip(fox)
    infinite = np.isposinf(original.opacity_logits)
    assert np.all(np.isfinite(back.opacity_logits))
    assert np.all(back.opacities()[infinite] >= 1.0 - 1e-6)
    header, back, original = round_trip(gs3d)
    tiny = original.log_scales < -20
    lo = np.array(header["quantisation"]["log_scales"]["min"])
    assert np.all(np.isfinite(back.log_scales))
    assert np.all(back.log_scales[tiny] <= np.broadcast_to(lo, back.log_scales.shape)[tiny] + 1e-4)
    assert np.all(lo >= np.median(gs3d.log_scales) - PackSettings().scale_floor - 1e-6)


def test_odd_scenes_round_trip():
    one = synthetic(count=1)
    _, back, _ = round_trip(one)
    assert np.allclose(back.means, one.means, atol=1e-6)
    same = GaussianScene(
        np.ones((10, 3)), np.zeros((10, 4)), np.full((10, 3), -np.inf), np.full(10, -np.inf), np.zeros((10, 1, 3))
    )
    _, back, _ = round_trip(same)
    assert np.array_equal(back.means, same.means)
    assert np.allclose(back.unit_quats(), [1, 0, 0, 0])  # a zero quaternion is the identity
    assert np.all(np.isfinite(back.log_scales)) and np.all(np.isfinite(back.opacity_logits))
    assert back.opacities().max() < 1e-5


def test_far_floaters_keep_the_core_precise():
    rng = np.random.default_rng(1)
    core = synthetic(count=2000, degree=0)
    far = core.subset(np.arange(20))
    far.means = far.means * 1e4
    scene = GaussianScene.concatenate([core, far])
    errors = []
    for settings in (PackSettings(), PackSettings(core_percentile=0.0, core_margin=1e9)):
        _, back, original = round_trip(scene, settings)
        in_core = np.abs(original.means).max(axis=1) < 5
        errors.append(np.abs(back.means - original.means)[in_core].max())
    # floaters at 1e4 cost the core box about 3 bits; the plain bounding box spends the grid on empty space
    assert errors[0] < 3e-3 and errors[1] > 100 * errors[0]
    y = rng.normal(size=(100, 3)) * 100
    assert np.allclose(expand(contract(y, [1, 2, 3], [1, 0, 5]), [1, 2, 3], [1, 0, 5]), y)


def test_rejects_what_cannot_be_packed():
    scene = synthetic()
    with pytest.raises(ValueError, match="empty"):
        pack_scene(scene.subset(np.zeros(len(scene), bool)))
    scene.means[3, 1] = np.nan
    with pytest.raises(ValueError, match="means"):
        pack_scene(scene)
    scene = synthetic()
    scene.log_scales[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pack_scene(scene)


def test_pack_settings_validate_and_round_trip():
    settings = PackSettings(position_bits=12, sh_bits=(6, 5, 4))
    assert PackSettings.from_dict(settings.to_dict()) == settings
    assert PackSettings.from_dict({"color_bits": 7, "unknown": 1}).color_bits == 7
    bad_settings = [
        {"position_bits": 0}, {"rotation_bits": 1}, {"rotation_bits": 17}, {"color_bits": 16}, {"sh_bits": (5, 4)},
        {"scale_bits": 7.5}, {"sh_percentile": 10.0}, {"core_percentile": 60.0}, {"scale_floor": -1.0},
    ]
    for bad in bad_settings:
        with pytest.raises(ValueError):
            dataclasses.replace(settings, **bad)


@pytest.mark.parametrize("bits", [1, 8, 9, 16])
def test_bit_widths_round_trip(bits):
    scene = synthetic(count=300, degree=3)
    settings = PackSettings(position_bits=bits, rotation_bits=max(bits, 2), scale_bits=bits, opacity_bits=bits,
                            color_bits=min(bits, 15), sh_bits=(min(bits, 15),) * 3)
    header, back, original = round_trip(scene, settings)
    assert back.sh.shape == original.sh.shape
    if bits == 16:
        assert np.abs(back.means - original.means).max() < 1e-3
        assert np.abs(back.opacities() - original.opacities()).max() < 1e-4


def test_unpack_checks_sections():
    scene = synthetic()
    header, sections = pack_scene(scene)
    check_pack_header(header)
    with pytest.raises(ValueError, match="scales"):
        unpack_scene(header, {**sections, "scales": sections["scales"][:-1]})
    with pytest.raises(ValueError, match="count"):
        unpack_scene({**header, "count": 0}, sections)


# --- render quality ------------------------------------------------------------------------------------------


@requires_data
@pytest.mark.parametrize("key", ["gs3d", "fox", "playbot"])
def test_render_psnr_of_unpacked_scene(scenes, key):
    from exgs_core.camera import orbit_cameras
    from exgs_core.render import render

    scene = scenes[key]
    _, back, _ = round_trip(scene)
    cameras = orbit_cameras(scene.means, 2, 128, 128, up="+z", opacities=scene.opacities())
    values = []
    for camera in cameras:
        reference = render(scene, camera, backend="torch").rgb.clamp(0, 1)
        packed = render(back, camera, backend="torch").rgb.clamp(0, 1)
        values.append(-10.0 * math.log10(max(float(((packed - reference) ** 2).mean()), 1e-12)))
    assert np.mean(values) >= 38.0, values
