"""Peak memory of restoring one big frame with the shipped GaussPainter weights: tiled (restore()'s default
above TILE_ABOVE pixels) against the whole frame at once. Each measurement runs in a fresh process and reports
its peak RSS (ru_maxrss) minus the RSS after loading the painter and building the frame.

    python bench/restore_memory.py [--size 4000] [--untiled] [--threads 2]

Issue 15: a 4000x4000 frame restored at once took 13.4 GB; tiled it must stay well under 3 GB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
from exgs_core.painter import restore as R
from exgs_core.painter.weights import default_weights_path, load_painter
size, tiled, threads = int(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
torch.set_num_threads(threads)
painter = load_painter(default_weights_path())
rng = np.random.default_rng(0)
rgb = rng.random((size, size, 3), dtype=np.float32)
alpha = np.ones((size, size), np.float32)
if not tiled:
    R.TILE_ABOVE = size * size  # the whole frame at once
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
out = R.restore(rgb, alpha, painter)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"size": size, "tiled": tiled, "seconds": seconds, "peak_gb": peak / 1e6,
                  "before_gb": before / 1e6, "shape": list(out.shape)}))
"""


def measure(size: int, tiled: bool, threads: int) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD, str(ROOT), str(size), "1" if tiled else "0", str(threads)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4000)
    parser.add_argument("--untiled", action="store_true", help="also measure the whole frame at once")
    parser.add_argument("--threads", type=int, default=2)
    options = parser.parse_args()
    for tiled in ([True, False] if options.untiled else [True]):
        result = measure(options.size, tiled, options.threads)
        print(f"{options.size}x{options.size} {'tiled' if tiled else 'whole frame'}: peak RSS "
              f"{result['peak_gb']:.2f} GB (frame and painter loaded: {result['before_gb']:.2f} GB), "
              f"{result['seconds']:.1f} s")


if __name__ == "__main__":
    main()
