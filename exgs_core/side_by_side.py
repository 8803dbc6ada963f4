"""Independent jobs run side by side on a few threads: for work that releases the GIL (numpy's array loops,
lzma, zstd), where the results do not depend on which thread ran what. numpy only, no torch: the Blender side
imports it through the .exgs writer."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Hashable, TypeVar

# Two at most: each lzma coder holds up to ~700 MiB at a 64 MiB dictionary, so not one per core on a large
# machine; the machines this is measured on have two cores.
THREADS = min(2, os.cpu_count() or 1)
# Work over arrays of at least this many elements (Gaussians, points) is worth a thread; below, the jobs run in
# the caller's thread (a thread's start costs more than the work of a small scene).
LARGE = 200_000

Key = TypeVar("Key", bound=Hashable)
Result = TypeVar("Result")


def run_side_by_side(jobs: dict[Key, Callable[[], Result]], parallel: bool = True) -> dict[Key, Result]:
    """Each job's result under its key, in the jobs' order. The jobs start in that order (put the longest
    first) on THREADS threads, or one after the other in this thread when not `parallel` or THREADS is 1."""
    if not parallel or THREADS < 2 or len(jobs) < 2:
        return {key: job() for key, job in jobs.items()}
    with ThreadPoolExecutor(min(THREADS, len(jobs))) as pool:
        futures = {key: pool.submit(job) for key, job in jobs.items()}
        return {key: future.result() for key, future in futures.items()}
