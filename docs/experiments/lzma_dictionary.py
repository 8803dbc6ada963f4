"""lzma's writer dictionary on large sections (docs/results.md, "Scale" series 4): bytes and seconds of one
whole-file encode (encode_container, sections side by side on two threads) with the dictionary capped at
64 MiB (the reader's own, as before the cap), 4 MiB (LZMA_WRITER_DICT) and 2 MiB, in the same run.

    python docs/experiments/lzma_dictionary.py [--count 5167319]

The sections are those of `--count` Gaussians drawn at random from the SH-3 real tile scene tiled to 10M,
packed at quantisation level 5 and SH degree 0, as the 10M scale series' file (its sections are 15-20 MB).
Measured 2026-12-06, idle machine: 64 MiB 26,192,680 bytes in 57.0 s; 4 MiB 26,190,513 in 47.6 s;
2 MiB 26,219,027 in 39.8 s (an earlier run of the same sections: 64.2, 55.7 and 43.8 s).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import exgs_core.io.exgs as exgs_io  # noqa: E402
from exgs_core.io import read_scene  # noqa: E402
from exgs_core.synthetic import tile_scene  # noqa: E402
from exgs_core.ugc.compress import QUANTISATION_LEVELS  # noqa: E402
from exgs_core.ugc.pack import pack_scene  # noqa: E402

SOURCE_SCENE = REPO.parent / "shared" / "data" / "scenes" / "gs3d_lod1_tile_0_0.5x.ply"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=5_167_319)
    args = parser.parse_args()
    scene = tile_scene(read_scene(SOURCE_SCENE), 10_000_000)
    keep = np.sort(np.random.default_rng(0).choice(len(scene), args.count, replace=False))
    _, sections = pack_scene(scene.subset(keep), sh_degree=0, settings=QUANTISATION_LEVELS[5])
    del scene
    print("sections (MB):", {name: round(len(data) / 1e6, 1) for name, data in sections.items()})
    for dictionary in (1 << 26, 1 << 22, 1 << 21):
        exgs_io.LZMA_WRITER_DICT = dictionary
        start = time.perf_counter()
        size = len(exgs_io.encode_container({}, sections))
        print(f"dictionary {dictionary >> 20:2d} MiB: {size:,} bytes, {time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main()
