"""Our CPU rasteriser against gsplat's pure-PyTorch references and a brute-force compositor, on real scenes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gsplat.cuda._torch_impl import (
    _fully_fused_projection,
    _isect_offset_encode,
    _isect_tiles,
    _quat_scale_to_covar_preci,
    _spherical_harmonics,
)

from exgs_core.camera import Camera, orbit_cameras
from exgs_core.io import read_scene
from exgs_core.render import render, render_views
from exgs_core.render.projection import covariances, intersect_tiles, project
from exgs_core.render.rasterize import rasterize, scene_tensors, view_colors
from exgs_core.scene import GaussianScene
from exgs_core.sh import evaluate_sh, sh_basis
from tests.conftest import real_scene_paths, requires_data
from tests.reference_render import reference_render

SCENES = real_scene_paths()
SCENE_IDS = [p.parent.name if p.name == "meta.json" else p.name for p in SCENES]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def views(scene: GaussianScene, n: int, width: int = 96, height: int = 72) -> list[Camera]:
    """Orbit views with the scene's up axis guessed from the thinnest extent (only matters for variety)."""
    return orbit_cameras(scene.means, n, width, height, up="+z", opacities=scene.opacities())


@pytest.fixture(scope="module")
def scenes() -> dict[str, GaussianScene]:
    return {name: read_scene(path) for name, path in zip(SCENE_IDS, SCENES)}


@requires_data
@pytest.mark.parametrize("name", SCENE_IDS)
def test_render_matches_brute_force_reference(scenes, name):
    scene = scenes[name]
    # Several views per scene; the 100k-Gaussian objects at a smaller size to keep the oracle quick.
    cameras = views(scene, 3) if len(scene) < 60_000 else views(scene, 2, 72, 54)
    for camera in cameras:
        ours = render(scene, camera, background=(0.2, 0.3, 0.4), backend="torch")
        ref_rgb, ref_alpha, ref_depth = reference_render(scene, camera, background=(0.2, 0.3, 0.4))
        assert ref_alpha.mean() > 0.02, "the view must actually see the scene"
        assert psnr(ours.rgb, ref_rgb) >= 45.0
        assert psnr(ours.alpha, ref_alpha) >= 45.0
        covered = ref_alpha > 0.5
        rel = (ours.depth[covered] - ref_depth[covered]).abs() / ref_depth[covered]
        assert float(rel.max()) < 1e-3


@requires_data
@pytest.mark.parametrize("name", ["gs3d_lod1_tile_0_0.5x.ply", "mjw_fox.ply", "pcengine_playbot_3_0", "spot.splat"])
def test_projection_matches_gsplat_reference(scenes, name):
    scene = scenes[name]
    p = scene_tensors(scene)
    for camera in views(scene, 2, 320, 240):
        viewmat = torch.as_tensor(camera.world_to_camera, dtype=torch.float32)
        K = torch.as_tensor(camera.K, dtype=torch.float32)
        ref_covars, _ = _quat_scale_to_covar_preci(p["quats"], p["scales"], compute_preci=False)
        ours_covars = covariances(p["quats"], p["scales"])
        torch.testing.assert_close(ours_covars, ref_covars, rtol=1e-5, atol=1e-12)

        radii, means2d, depths, conics, _ = _fully_fused_projection(
            p["means"], ref_covars, viewmat[None], K[None], camera.width, camera.height
        )
        ours = project(p["means"], ours_covars, viewmat, K, camera.width, camera.height)
        valid = (radii[0] > 0).all(-1)
        assert torch.equal(ours.radii > 0, radii[0] > 0)
        assert (ours.radii[valid] - radii[0][valid]).abs().max() <= 1  # ceil() of float32 noise
        assert float((ours.radii[valid] != radii[0][valid]).float().mean()) < 1e-3
        torch.testing.assert_close(ours.means2d[valid], means2d[0][valid], rtol=1e-5, atol=1e-3)
        torch.testing.assert_close(ours.depths, depths[0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(ours.conics[valid], conics[0][valid], rtol=1e-4, atol=1e-6)


@requires_data
@pytest.mark.parametrize("name", ["gs3d_lod1_tile_0_0.5x.ply", "splats_plant.splat"])
def test_tile_intersections_match_gsplat_reference(scenes, name):
    scene = scenes[name]
    p = scene_tensors(scene)
    camera = views(scene, 1, 200, 150)[0]
    viewmat = torch.as_tensor(camera.world_to_camera, dtype=torch.float32)
    K = torch.as_tensor(camera.K, dtype=torch.float32)
    proj = project(p["means"], covariances(p["quats"], p["scales"]), viewmat, K, camera.width, camera.height)
    # gsplat's reference is a Python loop per Gaussian: compare on 1500 of them.
    pick = torch.nonzero((proj.radii > 0).all(-1)).squeeze(1)[:1500]
    means2d, radii, depths = proj.means2d[pick], proj.radii[pick], proj.depths[pick]
    tw, th = (camera.width + 15) // 16, (camera.height + 15) // 16

    _, ref_ids, ref_flatten = _isect_tiles(means2d[None], radii[None], depths[None], 16, tw, th)
    ref_offsets = _isect_offset_encode(ref_ids, 1, tw, th).flatten()
    ours = intersect_tiles(means2d, radii, depths, camera.width, camera.height)
    assert torch.equal(ours.isect_ids, ref_ids)
    # Equal keys (same tile, same depth) may come in either order from gsplat's unstable sort.
    def pairs(ids, flat):
        return sorted(zip(ids.tolist(), flat.tolist()))
    assert pairs(ours.isect_ids, ours.flatten_ids) == pairs(ref_ids, ref_flatten.long())
    assert torch.equal(ours.tile_offsets[:-1], ref_offsets.long())


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_matches_gsplat_reference(degree):
    gen = torch.Generator().manual_seed(degree)
    dirs = torch.nn.functional.normalize(torch.randn(500, 3, generator=gen), dim=-1)
    coeffs = torch.randn(500, 16, 3, generator=gen)
    ref = _spherical_harmonics(degree, dirs, coeffs)
    torch.testing.assert_close(evaluate_sh(coeffs, dirs, degree), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sh_basis(dirs.double().numpy(), degree), sh_basis(dirs.double(), degree).numpy())


@requires_data
def test_gradients_match_autograd_through_reference(scenes):
    full = scenes["hairlod_donut_fused.ply"]
    scene = full.subset(np.random.default_rng(0).choice(len(full), 6000, replace=False))
    camera = views(scene, 1, 64, 48)[0]
    p = scene_tensors(scene)
    colors = view_colors(p["means"], p["sh"], camera, scene.sh_degree)
    weights = torch.rand(48, 64, 3, generator=torch.Generator().manual_seed(1))
    alpha_weights = torch.rand(48, 64, generator=torch.Generator().manual_seed(2))

    def loss_and_grads(render_fn):
        opac = p["opacities"].clone().requires_grad_(True)
        col = colors.clone().requires_grad_(True)
        rgb, alpha = render_fn(opac, col)
        ((rgb * weights).sum() + (alpha * alpha_weights).sum()).backward()
        return opac.grad, col.grad

    def ours(opac, col):
        out = rasterize(p["means"], p["quats"], p["scales"], opac, col, camera, background=(0.3, 0.5, 0.7))
        return out.rgb, out.alpha

    def ref(opac, col):
        rgb, alpha, _ = reference_render(scene, camera, (0.3, 0.5, 0.7), opacities=opac, colors=col)
        return rgb, alpha

    ours_opac, ours_col = loss_and_grads(ours)
    ref_opac, ref_col = loss_and_grads(ref)
    assert ref_col.abs().sum() > 0 and ref_opac.abs().sum() > 0
    torch.testing.assert_close(ours_col, ref_col.float(), rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(ours_opac, ref_opac.float(), rtol=1e-3, atol=1e-3)


@requires_data
def test_rotated_scene_seen_from_rotated_camera_looks_the_same(scenes):
    """View-dependent colour must follow the object: rotation + scale + translation of an SH scene."""
    scene = scenes["pcengine_playbot_3_0"]  # SH degree 2 with real view-dependent colour
    assert np.abs(scene.sh[:, 1:]).mean() > 0.05
    camera = views(scene, 1, 160, 120)[0]
    angle = 0.9
    rotation = np.array([[1, 0, 0], [0, math.cos(angle), -math.sin(angle)], [0, math.sin(angle), math.cos(angle)]])
    rotation = rotation @ np.array([[math.cos(0.4), 0, math.sin(0.4)], [0, 1, 0], [-math.sin(0.4), 0, math.cos(0.4)]])
    transform = np.eye(4)
    transform[:3, :3] = 1.7 * rotation
    transform[:3, 3] = (0.5, -2.0, 3.0)
    moved = scene.transformed(transform)

    # Moving camera: world_to_camera' = world_to_camera * transform^-1, with the scale taken out of the camera.
    c2w = np.linalg.inv(camera.world_to_camera)
    new_c2w = np.eye(4)
    new_c2w[:3, :3] = rotation @ c2w[:3, :3]
    new_c2w[:3, 3] = transform[:3, :3] @ c2w[:3, 3] + transform[:3, 3]
    moved_camera = Camera(np.linalg.inv(new_c2w), camera.fx, camera.fy, camera.cx, camera.cy, camera.width,
                          camera.height)

    before = render(scene, camera, backend="torch")
    after = render(moved, moved_camera, backend="torch")
    assert before.alpha.mean() > 0.05
    assert psnr(after.rgb, before.rgb) > 40.0
    assert psnr(after.alpha, before.alpha) > 40.0

    # The same move without rotating the SH gives visibly different colours: the check above can fail.
    unrotated = GaussianScene(moved.means, moved.quats, moved.log_scales, moved.opacity_logits, scene.sh)
    wrong = render(unrotated, moved_camera, backend="torch")
    assert psnr(wrong.rgb, before.rgb) < psnr(after.rgb, before.rgb) - 5.0


def test_render_of_an_empty_view_is_background():
    scene = GaussianScene(
        means=np.array([[0.0, 0.0, -5.0]]), quats=np.array([[1.0, 0, 0, 0]]), log_scales=np.zeros((1, 3)),
        opacity_logits=np.array([3.0]), sh=np.zeros((1, 1, 3)),
    )
    camera = Camera(np.eye(4), 50.0, 50.0, 32.0, 24.0, 64, 48)  # looks down +z; the Gaussian is behind it
    out = render(scene, camera, background=(0.25, 0.5, 1.0), backend="torch")
    assert torch.all(out.alpha == 0)
    torch.testing.assert_close(out.rgb, torch.tensor([0.25, 0.5, 1.0]).expand(48, 64, 3))


@requires_data
@pytest.mark.parametrize("degree", [None, 0])
def test_render_views_gives_renders_pixels_exactly(scenes, degree):
    """Views of one scene rendered together share its covariances: the same bytes as one render() per view,
    over more than one chunk of Gaussians (300,000 of the fox's, tiled) and with SH or without."""
    from exgs_core.synthetic import tile_scene

    scene = tile_scene(scenes["mjw_fox.ply"], 300_000)
    scene = scene if degree is None else scene.with_sh_degree(degree)
    cameras = views(scene, 3)
    together = list(render_views(scene, cameras, background=(0.2, 0.3, 0.4), backend="torch"))
    assert len(together) == 3
    for camera, out in zip(cameras, together):
        alone = render(scene, camera, background=(0.2, 0.3, 0.4), backend="torch")
        assert float(alone.alpha.mean()) > 0.05
        for field in ("rgb", "alpha", "depth"):
            assert torch.equal(getattr(out, field), getattr(alone, field)), field


@requires_data
def test_a_1_5_million_gaussian_scene_renders_at_1080p_in_bounded_memory():
    """Run in a child process so its peak resident memory is its own."""
    import subprocess
    import sys

    from tests.conftest import SCENES_DIR

    code = f"""
import resource
from exgs_core.camera import orbit_cameras
from exgs_core.io import read_scene
from exgs_core.render import render
from exgs_core.synthetic import tile_scene
scene = tile_scene(read_scene({str(SCENES_DIR / "splats_plant.splat")!r}), 1_500_000)
camera = orbit_cameras(scene.means, 1, 1920, 1080, up="-y", opacities=scene.opacities())[0]
out = render(scene, camera, backend="torch")
print(len(scene), tuple(out.rgb.shape), float(out.alpha.mean()), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    count, *shape, coverage, peak_kib = result.stdout.replace("(", "").replace(")", "").replace(",", "").split()
    assert int(count) == 1_500_000 and [int(v) for v in shape] == [1080, 1920, 3]
    assert float(coverage) > 0.03
    assert int(peak_kib) / 1024**2 < 6.0  # GiB; about 2 GiB measured (bench/render.py)
