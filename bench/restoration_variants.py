"""Equal-bytes variants of the fitted restoration (docs/results.md, "Equal-bytes variants"), measured like
bench/restoration.py (same test views, seeds and scores) but with the compressions cached per scene and ratio:
one plain file, one candidate per reserved size, then `_fit_and_choose` per variant (what compress_restored does).

    python bench/restoration_variants.py fox,playbot 100,300 A,C OUT.jsonl

The rows of docs/figures/restoration_variants.jsonl marked "d7d243b" were measured at that commit, which
trained on crops without padding (and H with a dilation argument that was not kept); at later commits the
same letters train on padded crops, as the default does.
"""
import json, sys, time, os
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np
from exgs_core.io import read_scene
from exgs_core.painter import fit
from exgs_core.painter.restore import restore_batch
from exgs_core.ugc import restoration as R
from exgs_core.ugc.compress import CompressSettings, Target, scoring_cameras, compress
from exgs_core.ugc.significance import significance
from tests.conftest import MESH2SPLAT_DIR, SCENES_DIR
sys.path.insert(0, str(Path(__file__).resolve().parent))
from restoration import TEST_VIEWS, TEST_SEED  # noqa: E402

NAMES = {"fox": SCENES_DIR / "mjw_fox.ply", "playbot": SCENES_DIR / "pcengine_playbot_3_0.inria.ply",
         **{n: MESH2SPLAT_DIR / f"{n}.splat" for n in ("cat", "koala", "pizza", "spot", "tree")}}
# name: (channels, dtype, steps, distance range of the fitting and validation views)
CONFIGS = {"A": (8, "float16", 2500, (0.45, 1.3)), "B": (8, "float16", 2500, (0.35, 1.1)),
           "C": (8, "int8", 2500, (0.35, 1.1)), "D": (12, "int8", 2500, (0.35, 1.1)),
           "I": (8, "float16", 4000, (0.45, 1.3)), "P": (8, "int8", 2500, (0.45, 1.3))}

def main(scenes, ratios, configs, out):
    done = set()
    if Path(out).is_file():
        done = {(r["scene"], r["ratio"], r["config"]) for r in map(json.loads, open(out))}
    settings = CompressSettings()
    for name in scenes:
        scene = read_scene(NAMES[name]); cameras = scoring_cameras(scene)
        scores = None
        for ratio in ratios:
            todo = [c for c in configs if (name, ratio, c) not in done]
            if not todo:
                continue
            if scores is None:
                scores = significance(scene, cameras, settings.variant)
            target = Target("ratio", ratio); budget = target.size_in_bytes(len(scene))
            base = compress(scene, target, cameras, settings, None, scores)
            views = fit.jittered_views(scene, TEST_VIEWS, TEST_SEED, distance_range=(0.4, 1.0))
            bgs = fit.backgrounds_for(len(views), TEST_SEED)
            targets = fit.render_targets(scene, views, bgs)
            plain_in = fit.render_inputs(base.scene, views, bgs)
            raw_plain = np.array([fit.frame_psnr(x[:3], y) for x, y in zip(plain_in, targets)])
            candidates = {}
            for c in todo:
                ch, dt, steps, dr = CONFIGS[c]
                reserve = R.section_reserve(ch, dt)
                if reserve not in candidates:
                    candidates[reserve] = compress(scene, Target("size", budget - reserve), cameras, settings, None, scores)
                cand = candidates[reserve]
                default_range, fit.DISTANCE_RANGE = fit.DISTANCE_RANGE, dr
                t, tc = time.perf_counter(), time.process_time()
                res = R._fit_and_choose(scene, base, cand, budget, cameras,
                                        R.RestorationSettings("fit", steps, channels=ch, dtype=dt), target,
                                        lambda *a: None)
                fit.DISTANCE_RANGE = default_range
                wall, cpu = time.perf_counter() - t, time.process_time() - tc
                info = res.stats["restoration"]
                ins = fit.render_inputs(res.scene, views, bgs)
                restorer = fit.scene_restorer(res.scene, device="cpu")
                rest = []
                for x, y in zip(ins, targets):
                    out_ = x[None, :3][0] if restorer is None else restore_batch(x[None, :3], x[None, 3:], *restorer)[0]
                    rest.append(fit.frame_psnr(out_, y))
                gains = np.array(rest) - raw_plain
                row = {"scene": name, "ratio": ratio, "config": c, "channels": ch, "dtype": dt, "steps": steps, "raw_fitted_psnr": float(np.mean([fit.frame_psnr(x[:3], y) for x, y in zip(ins, targets)])),
                       "distance_range": dr, "reserve": reserve, "budget": budget, "plain_bytes": len(base.data),
                       "bytes": len(res.data), "stored": info.get("stored"), "strength": info.get("strength"),
                       "validated_gain_db": info.get("gain_db"), "validated_equal_bytes_gain_db": info.get("equal_bytes_gain_db"),
                       "raw_plain_psnr": float(raw_plain.mean()), "restored_psnr": float(np.mean(rest)),
                       "gain_db": float(gains.mean()), "worst_view_gain_db": float(gains.min()),
                       "fit_wall": round(wall, 1), "fit_cpu": round(cpu, 1),
                       "opt_wall": info.get("optimisation_seconds"), "opt_cpu": info.get("optimisation_cpu_seconds"),
                       "load": os.getloadavg()[0]}
                print(json.dumps(row), flush=True)
                with open(out, "a") as h:
                    h.write(json.dumps(row) + "\n")

if __name__ == "__main__":
    main(sys.argv[1].split(","), [float(r) for r in sys.argv[2].split(",")], sys.argv[3].split(","), sys.argv[4])
