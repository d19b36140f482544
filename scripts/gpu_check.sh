#!/usr/bin/env bash
# One prepared command that proves and times the CUDA path (README "Performance": "The GPU check").
#
#   bash scripts/gpu_check.sh --prepare      # here, with network: the wheels the GPU box lacks -> .whl/ (ignored)
#   bash scripts/gpu_check.sh                # on the GPU box (installed package or a bare checkout + .whl/)
#   bash scripts/gpu_check.sh --cpu-smoke    # the same steps on the CPU with small configs (CI runs this)
#
# Steps, each under its own time limit so that a report always comes back (limits sum to 535 s: under 9 minutes
# on an H100, the install included):
#   install (offline, 30 s) -> env (15 s) -> CUDA tests (pytest -m cuda, VideoCrafter and Wan, 115 s)
#   -> VideoCrafter2 speed table (scripts/bench_gpu.py, 150 s) -> Wan2.1-1.3B table (bench_gpu.py --config wan:
#   plain FIFO bf16/fp16, --block columns, plan's peak and floor, host syncs, the UMT5 visit, the streamed decode;
#   170 s) -> plan check (scripts/plan_check.py: fifo-gen plan against the VideoCrafter bench, 15 s) -> toy (train
#   it if its weights are not shipped, else the quality table's plain and fast rows, 40 s)
#   -> $OUT/gpu_report.md and $OUT/gpu_report.json, whatever failed. The benches write their JSON after every
#   column, so a time limit loses only the columns not reached.
# $OUT defaults to outputs/gpu_check. Limits (seconds) can be changed: GPU_CHECK_TESTS_S, GPU_CHECK_BENCH_S,
# GPU_CHECK_WAN_S, GPU_CHECK_TOY_S. A user with a GPU and the package installed needs nothing but:
# bash scripts/gpu_check.sh
set -uo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$SELF")/.."
MODE=gpu
case "${1:-}" in
  --prepare) MODE=prepare ;;
  --cpu-smoke) MODE=smoke ;;
  --install) MODE=install ;;  # internal: the install step, run under its time limit
  "") ;;
  -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
  *) echo "usage: bash scripts/gpu_check.sh [--prepare | --cpu-smoke]" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3}
WHEELS=.whl
# What the GPU image lacks (its torch, numpy, timm, huggingface_hub, regex, safetensors, typer, rich, einops,
# imageio, transformers, tokenizers, accelerate and pytest are used as they are). Versions: the ones this project is
# tested with, except imageio-ffmpeg: 0.6.0 (29 MB) instead of 0.8 (68 MB), to stay inside the 64 MiB a device call
# carries (the tree is 25 MB, these wheels 38 MB). diffusers (6.4 MB): Wan's and AnimateDiff's modules.
NEEDED="omegaconf==2.4.0 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 imageio-ffmpeg==0.6.0 diffusers==0.42.1"

if [ "$MODE" = prepare ]; then
  mkdir -p "$WHEELS"
  # shellcheck disable=SC2086
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 --platform any -d "$WHEELS" $NEEDED || exit 1
  du -ch "$WHEELS"/*.whl | tail -n 1
  echo "carry $WHEELS with the device call (it is git-ignored); then run: bash scripts/gpu_check.sh"
  exit 0
fi

# -- install (offline): the carried wheels; the project itself is imported from this checkout ------------------
if [ "$MODE" = install ]; then
  if "$PY" -c "import fifo_longvid, omegaconf, open_clip, imageio_ffmpeg, diffusers" 2>/dev/null; then
    echo "fifo_longvid and its dependencies import as installed"; exit 0
  fi
  ls "$WHEELS"/*.whl >/dev/null 2>&1 || { echo "no $WHEELS/*.whl: run --prepare where pip works, carry $WHEELS"; exit 1; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu_check_site \
    "$WHEELS"/*.whl || exit 1
  echo "wheels installed in /tmp/gpu_check_site"
  exit 0
fi

OUT=${OUT:-outputs/gpu_check}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: > "$LOG"
export PYTHONUNBUFFERED=1
status() { echo "$1 $2" >> "$OUT/steps.txt"; echo "== $1: $2" | tee -a "$LOG"; }
: > "$OUT/steps.txt"

step() {  # step NAME SECONDS CMD...: run with a time limit, log it, record ok / failed (rc) / timed out
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s): $*" | tee -a "$LOG"
  local t0=$SECONDS rc
  timeout --signal=TERM --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG" "$OUT/$name.log" > /dev/null
  rc=${PIPESTATUS[0]}
  local took=$((SECONDS - t0))
  if [ "$rc" = 0 ]; then status "$name" "ok ${took}s"
  elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then status "$name" "timed-out ${took}s"
  else status "$name" "failed rc=$rc ${took}s"; fi
  return 0
}

step install 30 bash "$SELF" --install
export PYTHONPATH="/tmp/gpu_check_site:$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ "$MODE" = smoke ]; then
  DEVICE=cpu; BENCH_ARGS="--device cpu --config smoke --modes a,c,e"; TOY_ARGS="--smoke"
  TESTS="tests/test_cuda.py tests/test_cuda_wan.py"
else
  # the most telling columns first: a time limit cuts the last ones (reported "not reached")
  DEVICE=cuda; BENCH_ARGS="--device cuda --config videocrafter2 --quick --modes c,b,e,a,d,f"; TOY_ARGS=""
  TESTS="tests/test_cuda.py tests/test_cuda_wan.py tests/test_cuda_path.py"
fi
# Wan2.1-1.3B at full size on a GPU; the tiny Wan config on the CPU (the same steps, so none of it rots)
WAN_ARGS="--device $DEVICE --config wan --quick"

step env 15 "$PY" -c "
import torch, platform
print('torch', torch.__version__, '| python', platform.python_version(), '| cuda available', torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print('card', p.name, '| memory %.0f GiB' % (p.total_memory / 2**30), '| capability %d.%d' % (p.major, p.minor))
"
# shellcheck disable=SC2086
step cuda_tests "${GPU_CHECK_TESTS_S:-115}" "$PY" -m pytest -q -rs -p no:cacheprovider $TESTS \
  --junitxml "$OUT/cuda_tests.xml"
# shellcheck disable=SC2086
step bench "${GPU_CHECK_BENCH_S:-150}" "$PY" scripts/bench_gpu.py $BENCH_ARGS --json "$OUT/bench.json"
# shellcheck disable=SC2086
step wan_bench "${GPU_CHECK_WAN_S:-170}" "$PY" scripts/bench_gpu.py $WAN_ARGS --json "$OUT/wan_bench.json"
# plan-predicted against measured peak memory, measured s/frame against the plan's floor (README "Planning");
# the Wan table holds its own plan columns
step plan_check 15 "$PY" scripts/plan_check.py "$OUT/bench.json"
# shellcheck disable=SC2086
step toy "${GPU_CHECK_TOY_S:-40}" "$PY" scripts/gpu_toy.py --device "$DEVICE" --out "$OUT" $TOY_ARGS
"$PY" scripts/gpu_report.py "$OUT" || echo "report failed; raw logs are in $OUT" | tee -a "$LOG"
cat "$OUT/gpu_report.md" 2>/dev/null
# the report is always written; the exit status says whether every step passed (CI relies on it for the smoke)
if grep -qv " ok " "$OUT/steps.txt"; then echo "some steps did not pass: see $OUT/steps.txt"; exit 1; fi
exit 0
