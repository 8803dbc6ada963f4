"""Peak memory per stage of `exgs compress` (issue 23, part 3): runs the CLI in-process with a thread sampling
RSS every 20 ms, and wraps the main stages so each sample is labelled with the innermost stage running.

    python docs/experiments/scale_profile.py /tmp/scene.ply [extra compress args]

Prints, per stage: calls, wall seconds (outermost calls only), the peak RSS seen while it ran, and the process's
CPU seconds spent while it was the innermost stage running (sampled with the RSS).
"""

from __future__ import annotations

import functools
import os
import resource
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import psutil  # noqa: E402

STACK: list[str] = []
PEAKS: dict[str, float] = {}
SECONDS: dict[str, float] = {}
CALLS: dict[str, int] = {}
CPU: dict[str, float] = {}  # process CPU seconds by the innermost stage running
RUNNING = True


def sampler() -> None:
    process = psutil.Process()
    last_cpu = sum(process.cpu_times()[:2])
    while RUNNING:
        rss = process.memory_info().rss / 1024**3
        label = STACK[-1] if STACK else "(other)"
        PEAKS[label] = max(PEAKS.get(label, 0.0), rss)
        cpu = sum(process.cpu_times()[:2])  # user + system
        CPU[label] = CPU.get(label, 0.0) + cpu - last_cpu
        last_cpu = cpu
        time.sleep(0.02)


def wrap(owner, name: str, label: str) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapped(*args, **kwargs):
        STACK.append(label)
        CALLS[label] = CALLS.get(label, 0) + 1
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            STACK.pop()
            if label not in STACK:
                SECONDS[label] = SECONDS.get(label, 0.0) + time.perf_counter() - start

    setattr(owner, name, wrapped)


def main() -> None:
    global RUNNING
    import exgs_core.io as io
    import exgs_core.ugc.compress as compress
    import exgs_core.ugc.merge as merge
    from exgs_core import cli

    wrap(io, "read_scene", "read")
    wrap(compress, "significance", "significance")
    wrap(compress, "scoring_cameras", "scoring_cameras")
    wrap(compress, "_chosen_on_proxy", "proxy choices")
    wrap(compress, "decode_exgs", "decode")
    wrap(compress, "encode_exgs", "encode (lzma)")
    wrap(compress, "pack_scene", "pack")
    wrap(compress._Encoder, "_voxel_keep", "voxel sampling")
    wrap(compress._Encoder, "_grid", "voxel grid")
    wrap(compress._CheckViews, "error", "check renders")
    wrap(merge.Merger, "__init__", "merger init")
    wrap(merge.Merger, "owners", "merge partners")
    wrap(merge, "merge_groups", "moment matching")
    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    start, cpu = time.perf_counter(), time.process_time()
    code = cli.main(["compress", *sys.argv[1:]])
    RUNNING = False
    thread.join()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"exit {code}: {wall:.1f} s wall, {cpu:.1f} s CPU, peak RSS {peak:.2f} GiB, load {os.getloadavg()[0]:.2f}")
    for label in sorted(PEAKS, key=PEAKS.get, reverse=True):
        print(f"  {label:20s} peak {PEAKS[label]:6.2f} GiB  {SECONDS.get(label, 0.0):7.1f} s  "
              f"CPU {CPU.get(label, 0.0):7.1f} s  x{CALLS.get(label, 0)}")


if __name__ == "__main__":
    main()
