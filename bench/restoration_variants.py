"""Equal-bytes variants of the fitted restoration (docs/results.md, "Equal-bytes variants"), measured like
bench/restoration.py (same test views, seeds and scores, its `test_psnrs`) but with the compressions cached per
scene and ratio: one plain file, one candidate per reserved size, then `_fit_and_choose` per variant (what
compress_restored does).

    python bench/restoration_variants.py fox,playbot 100,300 A,C OUT.jsonl

The rows of docs/figures/restoration_variants.jsonl marked "d7d243b" were measured at that commit, which
trained on crops without padding (and H with a dilation argument that was not kept); at later commits the
same letters train on padded crops, as the default does.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from exgs_core.io import read_scene  # noqa: E402
from exgs_core.painter import fit  # noqa: E402
from exgs_core.ugc import restoration as ugc_restoration  # noqa: E402
from exgs_core.ugc.compress import CompressSettings, Target, compress, scoring_cameras  # noqa: E402
from exgs_core.ugc.significance import significance  # noqa: E402
from restoration import HELD_OUT, test_psnrs  # noqa: E402  (bench/restoration.py)

SCENES = {"fox": HELD_OUT[0], "playbot": HELD_OUT[1], **{path.stem: path for path in HELD_OUT[2:]}}
# name: (channels, dtype, steps, distance range of the fitting and validation views)
CONFIGS = {"A": (8, "float16", 2500, (0.45, 1.3)), "B": (8, "float16", 2500, (0.35, 1.1)),
           "C": (8, "int8", 2500, (0.35, 1.1)), "D": (12, "int8", 2500, (0.35, 1.1)),
           "I": (8, "float16", 4000, (0.45, 1.3)), "P": (8, "int8", 2500, (0.45, 1.3))}


def main(scenes: list[str], ratios: list[float], configs: list[str], out: Path) -> None:
    done = set()
    if out.is_file():
        done = {(r["scene"], r["ratio"], r["config"]) for r in map(json.loads, out.open())}
    settings = CompressSettings()
    for name in scenes:
        scene = read_scene(SCENES[name])
        cameras = scoring_cameras(scene)
        scores = None
        for ratio in ratios:
            todo = [config for config in configs if (name, ratio, config) not in done]
            if not todo:
                continue
            if scores is None:
                scores = significance(scene, cameras, settings.variant)
            target = Target("ratio", ratio)
            budget = target.size_in_bytes(len(scene))
            base = compress(scene, target, cameras, settings, None, scores)
            candidates = {}  # reserved bytes -> the compression to the budget less them
            for config in todo:
                channels, dtype, steps, distance_range = CONFIGS[config]
                reserve = ugc_restoration.section_reserve(channels, dtype)
                if reserve not in candidates:
                    candidates[reserve] = compress(scene, Target("size", budget - reserve), cameras,
                                                   base.scene_settings or settings, None, scores)
                variant = ugc_restoration.RestorationSettings("fit", steps, channels=channels, dtype=dtype)
                row = measure_variant(scene, base, candidates[reserve], budget, cameras, target, variant,
                                      distance_range)
                row = {"scene": name, "ratio": ratio, "config": config, "channels": channels, "dtype": dtype,
                       "steps": steps, "distance_range": distance_range, "reserve": reserve, "budget": budget,
                       "plain_bytes": len(base.data), **row}
                print(json.dumps(row), flush=True)
                with out.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")


def measure_variant(scene, base, candidate, budget: int, cameras, target: Target,
                    settings: ugc_restoration.RestorationSettings, distance_range: tuple[float, float]) -> dict:
    """Fit one variant (its fitting and validation views at `distance_range`) and score it on the test views."""
    default_range, fit.DISTANCE_RANGE = fit.DISTANCE_RANGE, distance_range
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        result = ugc_restoration._fit_and_choose(scene, base, candidate, budget, cameras, settings, target,
                                             lambda *args: None)
    finally:
        fit.DISTANCE_RANGE = default_range
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    raw_plain, raw_fitted, restored = test_psnrs(scene, base.scene, result.scene)
    gains = restored - raw_plain
    info = result.stats["restoration"]
    return {"bytes": len(result.data), "stored": info.get("stored"), "strength": info.get("strength"),
            "validated_gain_db": info.get("gain_db"), "validated_equal_bytes_gain_db": info.get("equal_bytes_gain_db"),
            "raw_plain_psnr": float(raw_plain.mean()), "raw_fitted_psnr": float(raw_fitted.mean()),
            "restored_psnr": float(restored.mean()), "gain_db": float(gains.mean()),
            "worst_view_gain_db": float(gains.min()), "fit_wall": round(wall, 1), "fit_cpu": round(cpu, 1),
            "opt_wall": info.get("optimisation_seconds"), "opt_cpu": info.get("optimisation_cpu_seconds"),
            "load": os.getloadavg()[0]}


if __name__ == "__main__":
    main(sys.argv[1].split(","), [float(r) for r in sys.argv[2].split(",")], sys.argv[3].split(","),
         Path(sys.argv[4]))
