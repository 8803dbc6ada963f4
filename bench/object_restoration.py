"""Cost of restoring each object only where it shows, against the one-object path, in the same run.

Two real objects side by side (koala: 4,000 Gaussians compressed to 100x with a real fitted restoration; spot:
2,000 uncompressed Gaussians; tests/fitted_data.py) in one frame:
  render: plain render vs render with one coverage channel per corrected object (the same compositing pass),
  restore: restore(frame, one strength) vs restore_objects(frame, coverage, per object) with the fitted module.
Prints the median seconds of each and the ratio, and how much the correction shifts the empty background.

    PYTHONPATH=$PWD python bench/object_restoration.py [--width 1024] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def median_seconds(run, repeats: int) -> float:
    run()  # warm-up (numba, torch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from exgs_core.camera import blender_camera_to_camera
    from exgs_core.io.exgs import decode_exgs
    from exgs_core.painter.fit import scene_restorer
    from exgs_core.painter.restore import restore, restore_objects
    from exgs_core.render import render
    from exgs_core.scene import GaussianScene
    from tests.conftest import MESH2SPLAT_DIR, random_gaussians
    from tests.fitted_data import MINUS_Y_UP, WIDE_CAMERA, fitted_koala, moved, side_by_side

    data = fitted_koala()
    koala = decode_exgs(data).transformed(MINUS_Y_UP)
    spot = random_gaussians(MESH2SPLAT_DIR / "spot.splat", 2000, seed=1).transformed(MINUS_Y_UP)
    offset_k, offset_s, matrix = side_by_side(koala, spot)
    koala, spot = moved(koala, offset_k), moved(spot, offset_s)
    both = GaussianScene.concatenate([koala, spot])
    settings = dict(WIDE_CAMERA, resolution_x=args.width, resolution_y=args.width // 2)
    camera = blender_camera_to_camera(**settings, matrix_world=matrix)
    module, strength = scene_restorer(decode_exgs(data), device="cpu")
    background = (0.2, 0.3, 0.4)

    plain = median_seconds(lambda: render(both, camera, background=background), args.repeats)
    grouped = median_seconds(lambda: render(both, camera, background=background, groups=[(0, len(koala))]),
                             args.repeats)
    frame = render(both, camera, background=background, groups=[(0, len(koala))])
    raw, alpha, coverage = frame.rgb.numpy(), frame.alpha.numpy(), frame.coverage.numpy()
    whole = median_seconds(lambda: restore(raw, alpha, module, strength), args.repeats)
    per_object = median_seconds(lambda: restore_objects(raw, alpha, coverage, [(module, strength)]), args.repeats)
    print(f"frame {camera.width}x{camera.height}, {len(both)} Gaussians, {args.threads} thread(s), "
          f"median of {args.repeats}")
    print(f"render     plain {plain:.3f} s   with coverage {grouped:.3f} s   ratio {grouped / plain:.2f}")
    print(f"restore    whole {whole:.3f} s   per object    {per_object:.3f} s   ratio {per_object / whole:.2f}")
    # How much the correction shifts empty background (alpha = 0): the koala alone, and in the two-object frame.
    alone = render(koala, camera, background=background)
    empty = alone.alpha.numpy() == 0
    shift = np.abs(restore(alone.rgb.numpy(), alone.alpha.numpy(), module, strength) - alone.rgb.numpy())
    mixed = np.abs(restore_objects(raw, alpha, coverage, [(module, strength)]) - raw)
    print(f"empty background shift: koala alone {shift[empty].mean():.4f}, two objects {mixed[alpha == 0].mean():.4f} "
          f"(the koala's frame share {coverage.sum() / alpha.sum():.2f})")


if __name__ == "__main__":
    main()
