"""How much work one compress does: check renders, merges and container encodes, counted by wrapping the
functions that do them (issue 23, part 3: the target's level search taken from the method's references).

    python docs/experiments/compress_work_counts.py scene.ply [ratio]

Run it from two checkouts to compare them: it imports exgs_core from the current folder. Prints the file's
bytes (equal bytes mean the same choices), the counts and the CPU seconds.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path.cwd()))

import exgs_core.io.exgs as container  # noqa: E402
import exgs_core.render.rasterize  # noqa: E402
import exgs_core.ugc.merge as merge  # noqa: E402
from exgs_core.io import read_scene  # noqa: E402
from exgs_core.ugc.compress import Target, compress, scoring_cameras  # noqa: E402

rasterize_module = sys.modules["exgs_core.render.rasterize"]  # (the package exports a function of that name)
COUNTS: dict[str, int] = {}


def count_calls(owner: object, name: str) -> None:
    original = getattr(owner, name)

    def counted(*args, **kwargs):
        COUNTS[name] = COUNTS.get(name, 0) + 1
        return original(*args, **kwargs)

    setattr(owner, name, counted)


def main() -> None:
    count_calls(rasterize_module, "rasterize")  # one per rendered view
    count_calls(merge.Merger, "merge")
    count_calls(container, "encode_container")
    path = Path(sys.argv[1])
    ratio = float(sys.argv[2]) if len(sys.argv) > 2 else 100.0
    scene = read_scene(path)
    start = time.process_time()
    result = compress(scene, Target("ratio", ratio), scoring_cameras(scene))
    print(f"{path.name} {ratio:g}x: {len(result.data):,} bytes, {COUNTS}, {time.process_time() - start:.1f} s CPU")


if __name__ == "__main__":
    main()
