"""Bytes and CPU seconds of lzma filter settings on the sections of an .exgs file (issue 23, part 3: is there a
faster lzma setting that costs no bytes?). Each setting codes every section with a 4 MiB dictionary, as the
writer does (io.exgs.LZMA_WRITER_DICT).

    python docs/experiments/lzma_settings.py file.exgs
"""

from __future__ import annotations

import lzma
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from exgs_core.io.exgs import LZMA_WRITER_DICT, decode_container  # noqa: E402

EXTREME = 9 | lzma.PRESET_EXTREME
SETTINGS = {
    "9e (the writer's)": dict(preset=EXTREME),
    "9e pb0": dict(preset=EXTREME, pb=0),
    "9e pb0 lc4": dict(preset=EXTREME, pb=0, lc=4),
    "9 pb0": dict(preset=9, pb=0),
    "9e pb0 nice_len 64": dict(preset=EXTREME, pb=0, nice_len=64),
    "9e pb0 nice_len 32": dict(preset=EXTREME, pb=0, nice_len=32),
    "9 pb0 nice_len 32 depth 24": dict(preset=9, pb=0, nice_len=32, depth=24),
}


def coded_bytes(payload: bytes, options: dict) -> int:
    filters = [{"id": lzma.FILTER_LZMA2, "dict_size": LZMA_WRITER_DICT, **options}]
    return len(lzma.compress(payload, format=lzma.FORMAT_RAW, filters=filters))


def main() -> None:
    _, sections = decode_container(Path(sys.argv[1]).read_bytes())
    for name, options in SETTINGS.items():
        start = time.process_time()
        total = sum(coded_bytes(payload, options) for payload in sections.values())
        print(f"{name:28s} {total:>12,} bytes {time.process_time() - start:7.2f} s CPU", flush=True)


if __name__ == "__main__":
    main()
