#!/usr/bin/env bash
# Run several prompt files one after the other on this machine, each into its own output folder.
#
# Usage:
#   scripts/run_prompts.sh OUT_ROOT PROMPTS1.txt [PROMPTS2.csv ...] [-- fifo-gen batch options / key=value ...]
#   e.g. scripts/run_prompts.sh out/ animals.txt cities.csv -- --config tiny --num-frames 24
#
# Each file F goes to OUT_ROOT/<F without its extension>/ (with its manifest.jsonl). Re-running the same
# command skips what is complete. A file with failed items does not stop the loop; the exit code is
# non-zero if any file had failures. Environment: FIFO_GEN (default: fifo-gen).
# Resources: this machine, no scheduler; fifo-gen uses its GPU if it has one (CPU only: add --device cpu after --).
# Ctrl-C or SIGTERM stops the current file cleanly (its interrupted item keeps a partial video and its state) and
# the loop with exit code 130; the same command continues.

set -uo pipefail

if [ "$#" -lt 2 ]; then
    echo "usage: $0 OUT_ROOT PROMPTS... [-- options ...]" >&2
    exit 2
fi
OUT_ROOT=$1
shift
FILES=()
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
    FILES+=("$1")
    shift
done
if [ "${1:-}" = "--" ]; then
    shift
fi
FIFO_GEN=${FIFO_GEN:-fifo-gen}

status=0
for f in "${FILES[@]}"; do
    name=$(basename "$f")
    name=${name%.*}
    echo "== $f -> $OUT_ROOT/$name"
    $FIFO_GEN batch "$f" --out-dir "$OUT_ROOT/$name" "$@"
    rc=$?
    if [ "$rc" -eq 130 ]; then
        echo "interrupted" >&2
        exit 130
    fi
    if [ "$rc" -ne 0 ]; then
        echo "== $f: exit code $rc" >&2
        status=1
    fi
done
exit $status
