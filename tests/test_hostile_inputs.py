"""Hostile files and absurd requests, through the real CLI in a subprocess under a 4 GiB address-space limit
and a 120 s timeout: exit code 1, one line on stderr naming the file, no traceback, nothing left behind, the
input unchanged (issue 13). Every hostile input is built here, small, from the real scenes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import zstandard
from plyfile import PlyData, PlyElement

from exgs_core.io.exgs import scene_section_sizes, write_exgs
from tests.conftest import REPO_ROOT, SCENES_DIR, random_gaussians, requires_data
from tests.test_exgs_format import join_file, split_file

pytestmark = requires_data

FOX = SCENES_DIR / "mjw_fox.ply"  # 50,000 Gaussians, SH 0
PLANT = SCENES_DIR / "splats_plant.splat"  # 113,648 Gaussians
ADDRESS_SPACE = 4 << 30
TIMEOUT = 120


# --- running the CLI ----------------------------------------------------------------------------------------


def run_exgs(*args: str | Path, address_space: int = ADDRESS_SPACE, umask: int | None = None,
             file_size: int | None = None, env: dict | None = None, user: int | None = None,
             cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m exgs_core.cli ARGS` in a subprocess with resource limits; its result (text)."""

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
        if umask is not None:
            os.umask(umask)
        if file_size is not None:  # writes past it fail with EFBIG, as a full disk fails with ENOSPC
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
        if user is not None:
            os.setgroups([])
            os.setgid(user)
            os.setuid(user)

    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "exgs_core.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=TIMEOUT, preexec_fn=limits, env=full_env, cwd=cwd)


def error_line(result: subprocess.CompletedProcess, *fragments: str | Path) -> str:
    """The run failed with exit code 1 and one error line holding every fragment (warnings aside)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("exgs: warning:")]
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1 and lines[0].startswith("exgs: error: "), result.stderr
    for fragment in fragments:
        assert str(fragment) in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under `folder`: (sha256, mode)."""
    return {
        str(path.relative_to(folder)): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mode)
        for path in sorted(folder.rglob("*")) if path.is_file()
    }


class Unchanged:
    """`with Unchanged(folder):` the block leaves the folder exactly as it was (inputs intact, no outputs)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __enter__(self) -> None:
        self.before = snapshot(self.folder)

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            assert snapshot(self.folder) == self.before


# --- 1. decompression bombs ---------------------------------------------------------------------------------


def exgs_bomb(folder: Path, count: int = 10_000_000) -> Path:
    """A valid .exgs (all checksums right) whose zstd sections decode to `count` SH-3 Gaussians: 1 GB of
    zeros, then gigabytes of arrays. A random section it does not need, of a thousandth of that, made it
    pass the former 1024 x file size budget (and exhaust 4 GiB)."""
    small = folder / "small.exgs"
    write_exgs(random_gaussians(SCENES_DIR / "gs3d_lod1_tile_0_0.5x.ply", 300, 0), small, codec="zstd")
    version, header, records = split_file(small.read_bytes())
    small.unlink()
    parsed = json.loads(header)
    parsed["count"] = count
    sizes = scene_section_sizes(parsed)
    records = [[name, b"zstd", zstd_zeros(size), size] for name, size in sizes.items()]
    padding = np.random.default_rng(0).integers(0, 256, sum(sizes.values()) // 1000, dtype=np.uint8).tobytes()
    records.append(["padding", b"raw\0", padding, len(padding)])
    path = folder / "bomb.exgs"
    path.write_bytes(join_file(version, json.dumps(parsed).encode(), records))
    assert path.stat().st_size < 2_000_000
    return path


def zstd_zeros(size: int, chunk: int = 1 << 24) -> bytes:
    """A zstd frame of `size` zero bytes, made without holding them."""
    compressor = zstandard.ZstdCompressor(level=1).compressobj(size=size)
    zeros = bytes(chunk)
    parts = [compressor.compress(zeros[: min(chunk, size - start)]) for start in range(0, size, chunk)]
    return b"".join(parts) + compressor.flush()


def one_colour_webp(width: int, height: int) -> bytes:
    """A lossless WebP of one colour: 46 bytes at any size (the size is patched into the VP8L header)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGBA", (16, 16), (1, 2, 3, 255)).save(buffer, "WEBP", lossless=True, quality=0, method=0)
    data = bytearray(buffer.getvalue())
    bits = int.from_bytes(data[21:25], "little") & ~((1 << 28) - 1)
    data[21:25] = (bits | (width - 1) | ((height - 1) << 14)).to_bytes(4, "little")
    return bytes(data)


def sog_bomb(folder: Path, side: int = 8192) -> Path:
    """A SOG folder of 8192x8192 one-colour images (~300 bytes) declaring 67M Gaussians."""
    sog = folder / "bomb_sog"
    sog.mkdir()
    image = one_colour_webp(side, side)
    names = ["means_l.webp", "means_u.webp", "quats.webp", "scales.webp", "sh0.webp"]
    for name in names:
        (sog / name).write_bytes(image)
    codebook = np.linspace(-5, 5, 256).tolist()
    meta = {
        "version": 2, "count": side * side,
        "means": {"mins": [-1, -1, -1], "maxs": [1, 1, 1], "files": names[:2]},
        "scales": {"codebook": codebook, "files": ["scales.webp"]},
        "quats": {"files": ["quats.webp"]},
        "sh0": {"codebook": codebook, "files": ["sh0.webp"]},
    }
    (sog / "meta.json").write_text(json.dumps(meta))
    return sog


def test_exgs_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    bomb = exgs_bomb(tmp_path)
    with Unchanged(tmp_path):
        error_line(run_exgs("info", bomb), bomb, "implausibly many")
        error_line(run_exgs("decompress", bomb, "-o", tmp_path / "out.ply"), bomb, "implausibly many")


@pytest.mark.parametrize("packaging", ["folder", "zip"])
def test_sog_decompression_bomb_is_refused_before_decoding(tmp_path: Path, packaging: str) -> None:
    bomb = sog_bomb(tmp_path)
    if packaging == "zip":
        with zipfile.ZipFile(tmp_path / "bomb.sog", "w", zipfile.ZIP_DEFLATED) as archive:
            for file in bomb.iterdir():
                archive.write(file, file.name)
        shutil.rmtree(bomb)
        bomb = tmp_path / "bomb.sog"
    with Unchanged(tmp_path):
        error_line(run_exgs("convert", bomb, tmp_path / "out.splat"), bomb, "decompression bomb")


# --- 2. non-finite values -----------------------------------------------------------------------------------


def fox_ply_with(folder: Path, name: str, column: str, rows: list[int], value: float) -> Path:
    data = PlyData.read(str(FOX))["vertex"].data[:1000].copy()
    data[column][rows] = value
    path = folder / name
    PlyData([PlyElement.describe(data, "vertex")]).write(str(path))
    return path


@pytest.mark.parametrize(
    "column, value, attribute",
    [("scale_0", np.nan, "scales"), ("opacity", np.nan, "opacities"), ("f_dc_1", np.inf, "colours"),
     ("rot_2", -np.inf, "rotations")],
)
def test_non_finite_values_are_refused_naming_the_attribute(tmp_path: Path, column, value, attribute) -> None:
    source = fox_ply_with(tmp_path, "bad.ply", column, [3, 700], value)
    with Unchanged(tmp_path):
        error_line(run_exgs("convert", source, tmp_path / "out.splat"), source, f"2 Gaussians have NaN or infinite "
                   f"{attribute}", "index 3", "--filter-nan")


def test_filter_nan_drops_the_rows_and_writes_a_readable_file(tmp_path: Path) -> None:
    source = fox_ply_with(tmp_path, "bad.ply", "scale_1", [3, 5, 8], np.nan)
    out = tmp_path / "out.splat"
    result = run_exgs("convert", source, out, "--filter-nan")
    assert result.returncode == 0, result.stderr
    assert "dropped 3 Gaussians" in result.stderr
    info = run_exgs("info", out, "--json")
    assert json.loads(info.stdout)["gaussians"] == 997


def test_infinite_ranges_in_an_exgs_header_are_refused(tmp_path: Path) -> None:
    small = tmp_path / "small.exgs"
    write_exgs(random_gaussians(FOX, 300, 0), small)
    version, header, records = split_file(small.read_bytes())
    for entry, key, attribute in (("log_scales", "max", "scales"), ("sh_dc", "step", "colours")):
        parsed = json.loads(header)
        quant = parsed["quantisation"][entry]
        quant[key] = [1e308] * 3 if isinstance(quant[key], list) else 1e308
        bad = tmp_path / f"huge_{entry}.exgs"
        bad.write_bytes(join_file(version, json.dumps(parsed).encode(), records))
        with Unchanged(tmp_path):
            error_line(run_exgs("decompress", bad, "-o", tmp_path / "out.ply"), bad, f"infinite {attribute}")


# --- 3. absurd cameras --------------------------------------------------------------------------------------


def transforms(path: Path, frames: int = 1, **intrinsics) -> Path:
    pose = np.eye(4)
    pose[2, 3] = 4.0
    document = {"fl_x": 500.0, "w": 64, "h": 64, **intrinsics,
                "frames": [{"transform_matrix": pose.tolist()}] * frames}
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize(
    "intrinsics, frames, fragment",
    [({"w": 16384, "h": 100000}, 1, "exceeds 16384 pixels per side"),
     ({"w": 1e30, "h": 1e30}, 1, "exceeds 16384 pixels per side"),
     ({"w": 16384, "h": 16384}, 1, "EXGS_MAX_IMAGE_PIXELS"),
     ({"w": 64.5}, 1, "positive whole number"),
     ({}, 10_001, "10001 frames exceed the limit of 10000")],
)
def test_absurd_cameras_are_refused(tmp_path: Path, intrinsics: dict, frames: int, fragment: str) -> None:
    cameras = transforms(tmp_path / "transforms.json", frames, **intrinsics)
    with Unchanged(tmp_path):
        error_line(run_exgs("render", FOX, "--cameras", cameras, "-o", tmp_path / "frames"), cameras, fragment)


def test_camera_limits_have_an_override(tmp_path: Path) -> None:
    cameras = transforms(tmp_path / "transforms.json", 3)
    error_line(run_exgs("render", FOX, "--cameras", cameras, "-o", tmp_path / "frames",
                        env={"EXGS_MAX_FRAMES": "2"}), cameras, "3 frames exceed the limit of 2")


@pytest.mark.parametrize("views", ["100000000", "-3"])
def test_absurd_view_counts_are_refused(tmp_path: Path, views: str) -> None:
    out = tmp_path / "orbit.json"
    with Unchanged(tmp_path):
        error_line(run_exgs("cameras", FOX, "--orbit", views, "-o", out), out)


def test_memory_error_is_one_line(tmp_path: Path) -> None:
    """A request within the limits that the memory limit cannot hold: one line naming the scene."""
    cameras = transforms(tmp_path / "transforms.json", w=8192, h=8192, fl_x=8000.0)
    with Unchanged(tmp_path):
        error_line(run_exgs("render", FOX, "--cameras", cameras, "-o", tmp_path / "frames", address_space=2 << 30),
                   FOX, "not enough memory")


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback(tmp_path: Path, where: str) -> None:
    args = ["compress", str(FOX), "-o", str(tmp_path / "out.ply"), "--keep", "0.5"]
    result = run_exgs(*(["--debug", *args] if where == "before" else [*args, "--debug"]))
    assert result.returncode == 1 and "Traceback" in result.stderr and "ExgsError" in result.stderr


# --- 4. painter weights -------------------------------------------------------------------------------------


@pytest.fixture
def weights_copy(tmp_path: Path) -> Path:
    shipped = REPO_ROOT / "exgs_core" / "painter" / "default_weights"
    if not (shipped / "model_index.json").is_file():
        pytest.skip("no default painter weights installed")
    folder = tmp_path / "weights"
    shutil.copytree(shipped, folder, ignore=shutil.ignore_patterns("*.md"))
    return folder


def edit_config(path: Path, **changes) -> None:
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_painter_config_asking_for_a_million_channels(weights_copy: Path, tmp_path: Path) -> None:
    config = weights_copy / "unet" / "config.json"
    edit_config(config, block_out_channels=[1_000_000, 1_000_000, 1_000_000])
    cameras = transforms(tmp_path / "transforms.json")
    with Unchanged(tmp_path):
        error_line(run_exgs("restore", FOX, "--cameras", cameras, "-o", tmp_path / "out", "--weights", weights_copy),
                   config, "block_out_channels", "1000000")


@pytest.mark.parametrize("problem", ["nan", "upsampling", "duplicate"])
def test_painter_weights_are_validated_on_load(weights_copy: Path, tmp_path: Path, problem: str,
                                               capsys: pytest.CaptureFixture) -> None:
    from safetensors.torch import load_file, save_file

    from exgs_core.cli import main

    vae = weights_copy / "vae"
    if problem == "nan":
        named = vae / "diffusion_pytorch_model.safetensors"
        tensors = load_file(named)
        key = sorted(tensors)[0]
        tensors[key].fill_(float("nan"))
        save_file(tensors, named)
        fragment = "NaN or infinite"
    elif problem == "upsampling":
        named = vae / "config.json"
        edit_config(named, upsampling_scaling_factor=1024)
        fragment = "upsampling_scaling_factor"
    else:
        named = vae / "config.json"
        named.write_text(named.read_text().replace("{", '{"in_channels": 3, ', 1))
        fragment = "appears twice"
    cameras = transforms(tmp_path / "transforms.json")
    assert main(["restore", str(FOX), "--cameras", str(cameras), "-o", str(tmp_path / "out"),
                 "--weights", str(weights_copy)]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(named) in error and fragment in error, error
    assert not (tmp_path / "out").exists()


# --- 5. JSON schema -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, fragment",
    [(lambda meta: meta["shN"].update(bands=[3]), "shN.bands"),
     (lambda meta: meta.update(version=[2]), "version"),
     (lambda meta: meta.update(count="31000"), "'count'"),
     (lambda meta: meta["means"].update(mins=[[0], 0, 0]), "means.mins"),
     (lambda meta: meta["scales"].update(codebook=[1e308] * 256), "infinite scales")],
)
def test_sog_meta_json_schema(tmp_path: Path, change, fragment: str) -> None:
    sog = tmp_path / "sog"
    shutil.copytree(SCENES_DIR / "pcengine_playbot_3_0", sog)
    meta = json.loads((sog / "meta.json").read_text())
    change(meta)
    (sog / "meta.json").write_text(json.dumps(meta))
    with Unchanged(tmp_path):
        error_line(run_exgs("convert", sog, tmp_path / "out.ply"), sog, fragment)


@pytest.mark.parametrize(
    "text, fragment",
    [('{"w": 64, "w": 64, "frames": []}', "'w' appears twice"),
     ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
     ('{"frames": [{"transform_matrix": [[1, 0], 5]}], "fl_x": 5, "w": 8, "h": 8}', "not a matrix of numbers")],
)
def test_transforms_json_schema(tmp_path: Path, text: str, fragment: str) -> None:
    cameras = tmp_path / "transforms.json"
    cameras.write_text(text)
    with Unchanged(tmp_path):
        error_line(run_exgs("render", FOX, "--cameras", cameras, "-o", tmp_path / "frames"), cameras, fragment)


def test_exgs_header_with_a_duplicate_key(tmp_path: Path) -> None:
    small = tmp_path / "small.exgs"
    write_exgs(random_gaussians(FOX, 300, 0), small)
    version, header, records = split_file(small.read_bytes())
    small.write_bytes(join_file(version, header.replace(b"{", b'{"count": 1, ', 1), records))
    with Unchanged(tmp_path):
        error_line(run_exgs("info", small), small, "'count' appears twice")


# --- 6. wrong extension -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["out.ply", "out"])
def test_compress_refuses_an_output_that_is_not_exgs(tmp_path: Path, name: str) -> None:
    with Unchanged(tmp_path):
        error_line(run_exgs("compress", FOX, "-o", tmp_path / name, "--keep", "0.5"), tmp_path / name, ".exgs")


# --- 8, 9, 10. leftovers, permissions, failed writes --------------------------------------------------------


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_temporaries_of_a_killed_write_are_cleaned_by_the_next_run(tmp_path: Path) -> None:
    out = tmp_path / "out.ply"
    command = [sys.executable, "-m", "exgs_core.cli", "convert", str(PLANT), str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    for _ in range(5):  # kill -9 while the temporary file exists (the window is short: a few tries)
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while process.poll() is None and not temporaries(tmp_path):
            time.sleep(0.001)
        process.send_signal(signal.SIGKILL)
        process.wait()
        if temporaries(tmp_path):
            break
    else:  # never caught: leave one as a killed process would
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        from exgs_core.fileio import _tmp_prefix

        (tmp_path / f"{_tmp_prefix(out).replace(f'.{os.getpid()}.', f'.{dead.stdout.strip()}.')}x.tmp").write_bytes(b"x")
    assert temporaries(tmp_path)
    assert run_exgs("convert", FOX, out).returncode == 0
    assert temporaries(tmp_path) == []
    assert json.loads(run_exgs("info", out, "--json").stdout)["gaussians"] == 50_000


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_follow_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    out = tmp_path / "out.splat"
    assert run_exgs("convert", FOX, out, umask=umask).returncode == 0
    assert out.stat().st_mode & 0o777 == mode
    out.chmod(0o640)  # a file that is replaced keeps its mode
    assert run_exgs("convert", FOX, out, umask=umask).returncode == 0
    assert out.stat().st_mode & 0o777 == 0o640


def test_a_failed_write_names_the_target_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out.ply"
    out.write_bytes(b"the user's old file")
    with Unchanged(tmp_path):
        line = error_line(run_exgs("convert", FOX, out, file_size=64 << 10), out, "File too large")
    assert ".tmp" not in line


# --- 11. numba's cache for users who cannot write the package or their home ---------------------------------


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv to run as another user")
def test_numba_cache_falls_back_for_a_user_without_a_writable_home() -> None:
    """As `nobody` (home /nonexistent, the package folder read-only), the kernels import, compile and cache."""
    scratch = Path(tempfile.mkdtemp())
    scratch.chmod(0o777)
    try:
        code = ("import numba, exgs_core.render.cpu_kernels, exgs_core.ugc.sampling as s, numpy as np; "
                "s.voxel_keys(np.random.rand(100, 3), 0.1); print(numba.config.CACHE_DIR)")
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HOME": "/nonexistent", "TMPDIR": str(scratch)}
        env.pop("NUMBA_CACHE_DIR", None)
        env.pop("XDG_CACHE_HOME", None)
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        probe = f"import numba; open({str(REPO_ROOT / 'exgs_core' / '__init__.py')!r})"
        readable = subprocess.run([*nobody, sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                                  timeout=TIMEOUT, cwd=scratch)
        if readable.returncode != 0:  # e.g. a checkout under a mode-700 directory such as mktemp -d makes
            pytest.skip(f"the venv or the checkout is not readable by nobody: {readable.stderr.strip()[-200:]}")
        result = subprocess.run([*nobody, sys.executable, "-c", code], capture_output=True, text=True, env=env,
                                timeout=TIMEOUT, cwd=scratch)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == str(scratch / "exgs-numba-cache-65534")
        assert list((scratch / "exgs-numba-cache-65534").rglob("*.nbi")), "nothing was cached"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
