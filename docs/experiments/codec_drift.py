"""How the ratio of lzma (9e, the writer's coder) to the size estimates' fast zstd-3 drifts with the count kept.

The whole tiled scene is packed at each count given, with the settings the crop chooses for it at 100x fixed
(paper, level 6, SH 0, sampling (0.6, 1.0)), and each section is coded by both (scale_log.md, series 6):

    python docs/experiments/codec_drift.py big.ply 656000,826000
"""

import sys
from pathlib import Path

import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from exgs_core.io.exgs import compress as code_section  # noqa: E402
from exgs_core.io.ply import read_ply  # noqa: E402
from exgs_core.render.rasterize import torch_single_threaded  # noqa: E402
from exgs_core.ugc import compress as C  # noqa: E402
from exgs_core.ugc.pack import pack_scene  # noqa: E402
from exgs_core.ugc.significance import significance  # noqa: E402

CODERS = {
    "zstd3": lambda payload: len(zstandard.ZstdCompressor(level=3).compress(payload)),
    "lzma9e": lambda payload: len(code_section(payload, "lzma")),
}


def main() -> None:
    scene = read_ply(sys.argv[1])
    counts = [int(value) for value in sys.argv[2].split(",")]
    cameras = C.scoring_cameras(scene, 24)
    with torch_single_threaded():
        scores = significance(scene, cameras, C.DEFAULT_VARIANT)
    settings = C.CompressSettings(sh_degree=0, voxel_coverage=0.6, voxel_proportional=1.0, method="paper",
                                  quantisation_level=6)
    work = C._packable(scene, settings)
    encoder = C._Encoder(work, scores, settings, "paper", 0, C.Target("ratio", 100.0), C._CheckViews(work, []),
                         lambda stage, fraction: None)
    encoder.level = 6
    for count in counts:
        _, pruned = encoder.select(count)
        _, sections = pack_scene(pruned, sh_degree=0, settings=C.QUANTISATION_LEVELS[6])
        sizes = {name: {coder: code(bytes(section)) for coder, code in CODERS.items()}
                 for name, section in sections.items()}
        total = {coder: sum(size[coder] for size in sizes.values()) for coder in CODERS}
        print(count, "total", total, f"zstd3/lzma9e {total['zstd3'] / total['lzma9e']:.4f}")
        for name, size in sizes.items():
            print("   ", name, size, f"{size['zstd3'] / size['lzma9e']:.4f}")


if __name__ == "__main__":
    main()
