"""Two checkouts' `exgs compress` of the same scenes and ratios, side by side: each file's hash, bytes, choices
and seconds, and for the files that differ, PSNR on bench/compress.py's held-out views (issue 23: whether a
faster search makes the same files, and what it costs where it does not).

    python docs/experiments/checkout_ab.py /path/to/checkout_a /path/to/checkout_b [--ratios 30,100,300]
        [--scenes scenes/mjw_fox.ply,mesh2splat/spot.splat]

Each checkout compresses in its own process (its exgs_core imported from its root); the comparison renders
with this checkout's renderer. Scenes are paths under ../shared/data.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
SCENES = ("scenes/mjw_fox.ply", "scenes/hairlod_donut_fused.ply", "scenes/pcengine_playbot_3_0.inria.ply",
          "scenes/splats_plant.splat", "mesh2splat/spot.splat", "mesh2splat/hammer.splat", "mesh2splat/boot.splat")
COMPRESS = """
import contextlib, io, json, sys, time
sys.path.insert(0, {root!r})
from exgs_core import cli
from exgs_core.io.exgs import read_exgs_header
for scene, ratio, out in {jobs!r}:
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["compress", scene, "-o", out, "--ratio", ratio, "--restoration", "none"])
    header = read_exgs_header(open(out, "rb").read())["compression"]
    print(json.dumps({{"out": out, "code": code, "seconds": time.perf_counter() - start,
                      "method": header["method"], "level": header["quantisation_level"],
                      "sh": header["sh_degree"], "kept": header["kept"]}}), flush=True)
"""


def compress_all(checkout: Path, jobs: list[tuple[str, str, str]]) -> list[dict]:
    result = subprocess.run([sys.executable, "-c", COMPRESS.format(root=str(checkout), jobs=jobs)],
                            capture_output=True, text=True, check=True)
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def held_out_psnr(scene_path: Path, files: list[Path]) -> list[float]:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    import numpy as np
    from compress import test_cameras

    from exgs_core.io import read_scene
    from exgs_core.metrics import psnr
    from exgs_core.render import render
    from exgs_core.ugc.compress import decompress

    scene = read_scene(scene_path)
    cameras = test_cameras(scene)
    references = [render(scene, c, backend="torch").rgb for c in cameras]
    scores = []
    for file in files:
        candidate = decompress(file.read_bytes())
        scores.append(float(np.mean([float(psnr(render(candidate, c, backend="torch").rgb, r))
                                     for c, r in zip(cameras, references)])))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkout_a", type=Path)
    parser.add_argument("checkout_b", type=Path)
    parser.add_argument("--ratios", default="30,100,300")
    parser.add_argument("--scenes", default=",".join(SCENES))
    args = parser.parse_args()
    scenes = [DATA / s for s in args.scenes.split(",")]
    ratios = args.ratios.split(",")
    with tempfile.TemporaryDirectory() as folder:
        runs = {}
        for tag, checkout in (("a", args.checkout_a), ("b", args.checkout_b)):
            jobs = [(str(s), r, f"{folder}/{tag}_{s.name}_{r}.exgs") for s in scenes for r in ratios]
            runs[tag] = compress_all(checkout.resolve(), jobs)
        print("| scene | ratio | A bytes | A choice | A s | B bytes | B choice | B s | same file | A dB | B dB |")
        print("|---|---:|---:|---|---:|---:|---|---:|---|---:|---:|")
        for index, (scene, ratio) in enumerate((s, r) for s in scenes for r in ratios):
            a, b = runs["a"][index], runs["b"][index]
            files = [Path(a["out"]), Path(b["out"])]
            same = hashlib.sha1(files[0].read_bytes()).digest() == hashlib.sha1(files[1].read_bytes()).digest()
            scores = ["", ""] if same else [f"{p:.3f}" for p in held_out_psnr(scene, files)]
            print(f"| {scene.name} | {ratio}x | {files[0].stat().st_size:,} | {a['method']} L{a['level']} "
                  f"sh{a['sh']} | {a['seconds']:.1f} | {files[1].stat().st_size:,} | {b['method']} L{b['level']} "
                  f"sh{b['sh']} | {b['seconds']:.1f} | {'yes' if same else 'no'} | {scores[0]} | {scores[1]} |",
                  flush=True)


if __name__ == "__main__":
    main()
