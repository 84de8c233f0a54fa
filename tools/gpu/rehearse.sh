#!/usr/bin/env bash
# Rehearse the device calls of docs/gpu.md here, as the device tool makes them: each call gets a
# fresh copy of the working tree (tracked and untracked-unignored files) in DEST, its carried
# .gpu/call<k> folder, and an empty OUT; ignored files left in DEST by earlier calls stay, as on
# a warm machine. PYTHON is the interpreter that stands for the machine's python3: a venv holding
# only what the GPU machine has.
#
#   tools/gpu/rehearse.sh CALLS_DIR DEST PYTHON [run.py options...]
#   e.g. tools/gpu/rehearse.sh .gpu-rehearsal /tmp/rehearsal/repo /tmp/venv/bin/python3 \
#        --preset tiny --models unet_modern baseline_mean --cores 1
set -euo pipefail
calls=$(realpath "$1")
dest=$2
python=$(realpath -s "$3")
shift 3
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
mkdir -p "$dest"
for call in "$calls"/call*/; do
    name=$(basename "$call")
    echo "=== device call: carry ['.gpu/$name']"
    # the working tree, as the device copies it (deleted files stay deleted there too)
    (cd "$repo" && git ls-files -z --cached --others --exclude-standard |
        python3 -c 'import os,sys; [sys.stdout.buffer.write(p+b"\0") for p in
            sys.stdin.buffer.read().split(b"\0") if p and os.path.isfile(p)]' |
        tar -cf - --null -T -) | tar -xf - -C "$dest"
    rm -rf "$dest/.gpu/$name" && mkdir -p "$dest/.gpu" && cp -r "$call" "$dest/.gpu/$name"
    out="$dest.out/$name" && rm -rf "$out" && mkdir -p "$out"
    start=$(date +%s)
    (cd "$dest" && PATH="$(dirname "$python"):$PATH" OUT="$out" PYTHONUNBUFFERED=1 \
        timeout 600 python3 tools/gpu/run.py --out "$out" "$@") || echo "call $name: exit $?"
    echo "=== $name: $(($(date +%s) - start)) s; back in $out:"
    ls -l "$out"
done
