"""Wall time, CPU time and peak resident memory (VmHWM) of one `exgs` command, run in this process.

    python docs/experiments/measure_cli.py render /tmp/scene.ply --cameras cams.json -o frames/
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    start, cpu = time.perf_counter(), time.process_time()
    from exgs_core import cli

    code = cli.main(sys.argv[1:])
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = int(re.search(r"VmHWM:\s*(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024**2
    print(f"exgs {sys.argv[1]}: exit {code}, {wall:.1f} s wall, {cpu:.1f} s CPU, peak RSS {peak:.2f} GiB, "
          f"load {os.getloadavg()[0]:.2f}", file=sys.stderr)


if __name__ == "__main__":
    main()
