#!/usr/bin/env bash
# Interop check against splat-transform (the PlayCanvas reference tool), when it is on PATH.
#
# For each scene, `exgs convert` writes every format splat-transform reads (.ply, .compressed.ply, .splat, .sog,
# SOG meta.json, .spz); splat-transform then decodes each file to .ply, and this script checks that it finds the
# same number of Gaussians and that its decode renders like ours (`exgs eval`, our read of the file as the
# reference; PSNR over orbit views). Formats splat-transform 3.7.0 cannot read (.glb, .gltf, .exgs) are listed
# as skipped. Exit status 1 if any count differs or any PSNR is below the threshold.
#
#   bench/interop.sh [SCENE ...]      default: four scenes from ../shared/data/scenes
#   MIN_PSNR=40 VIEWS=4 SIZE=256x256 OUT=/tmp/exgs-interop bench/interop.sh
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/../main/.venv/bin/python}"  # the shared venv; set PYTHON to use another
[ -x "$PYTHON" ] || PYTHON=python
MIN_PSNR="${MIN_PSNR:-40}"
VIEWS="${VIEWS:-4}"
SIZE="${SIZE:-256x256}"
OUT="${OUT:-$(mktemp -d /tmp/exgs-interop.XXXXXX)}"
SCENES_DIR="$ROOT/../shared/data/scenes"

if ! command -v splat-transform >/dev/null; then
    echo "splat-transform is not on PATH: nothing to check (npm install -g @playcanvas/splat-transform)"
    exit 0
fi
exgs() { PYTHONPATH="$ROOT" "$PYTHON" -m exgs_core.cli "$@"; }

if [ "$#" -eq 0 ]; then
    set -- "$SCENES_DIR/pcengine_playbot_3_0.inria.ply" "$SCENES_DIR/gs3d_lod1_tile_0_0.5x.ply" \
        "$SCENES_DIR/mjw_fox.ply" "$SCENES_DIR/splats_plant.splat"
fi

echo "splat-transform $(splat-transform --version 2>&1 | head -1); output in $OUT; machine load: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-34s %-16s %10s %10s %10s %8s\n' scene format bytes ours theirs "PSNR dB"
failed=0
for scene in "$@"; do
    name="$(basename "$scene")"; name="${name%.*}"; name="${name%.inria}"
    dir="$OUT/$name"; mkdir -p "$dir/sog_folder"
    exgs cameras "$scene" --orbit "$VIEWS" --size "$SIZE" -o "$dir/cameras.json" >/dev/null
    for target in out.ply out.compressed.ply out.splat out.sog sog_folder/meta.json out.spz out.glb out.gltf out.exgs; do
        file="$dir/$target"
        exgs convert "$scene" "$file" >/dev/null 2>"$dir/convert.log" || { echo "exgs convert failed: $scene -> $target"; cat "$dir/convert.log"; failed=1; continue; }
        ours="$(exgs info --json "$file" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["gaussians"])')"
        if [ "$target" = "sog_folder/meta.json" ]; then
            bytes="$(cat "$dir/sog_folder"/* | wc -c)"  # meta.json and its images
        else
            bytes="$(stat -c %s "$file")"
        fi
        case "$target" in
            *.glb|*.gltf|*.exgs)
                printf '%-34s %-16s %10s %10s %10s %8s\n' "$name" "$target" "$bytes" "$ours" "-" "skipped (splat-transform cannot read it)"
                continue;;
        esac
        decoded="$dir/$(echo "$target" | tr '/.' '__').st.ply"
        splat-transform -g cpu -q -w "$file" "$decoded"
        theirs="$(exgs info --json "$decoded" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["gaussians"])')"
        exgs eval "$file" "$decoded" --cameras "$dir/cameras.json" -o "$dir/eval_$(basename "$decoded" .ply)" \
            --no-restore --backend torch >/dev/null 2>&1
        psnr="$("$PYTHON" -c 'import json,sys; print("%.2f" % json.load(open(sys.argv[1]))["candidates"][0]["psnr"])' \
            "$dir/eval_$(basename "$decoded" .ply)/metrics.json")"
        verdict=""
        if [ "$ours" != "$theirs" ] || "$PYTHON" -c "import sys; sys.exit(float('$psnr') >= $MIN_PSNR)"; then
            verdict="  FAIL"; failed=1
        fi
        printf '%-34s %-16s %10s %10s %10s %8s%s\n' "$name" "$target" "$bytes" "$ours" "$theirs" "$psnr" "$verdict"
    done
done
[ "$failed" -eq 0 ] && echo "all readable outputs: same count, PSNR >= $MIN_PSNR dB" || echo "some checks FAILED"
exit "$failed"
