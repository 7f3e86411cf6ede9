#!/usr/bin/env bash
# The whole GPU check in one script, sized for 10 minutes on one H100/H200:
#
#   1. build     the CUDA extension for this GPU's architecture only (satkern.ops.cuda_jit)
#   2. cuda      tests/gpu/test_cuda_gpu.py    (every dtype, head dims 64/128, poisoned outputs)
#   3. triton    tests/gpu/test_triton_gpu.py  (every dtype, head dims 16..256, poisoned outputs)
#   4. sanitize  compute-sanitizer memcheck + racecheck + synccheck on one small CUDA case
#   5. bench_triton  benchmarks/bench_triton.py (B=8 H=12 D=64 T=1024, 4096 bf16: out+lse, + every statistic,
#                    renorm r=32 vs flex_attention and dense SDPA, eager)
#   6. bench_flex    benchmarks/bench_triton.py --modes composite (T=1024, 8192: satkern with every statistic vs
#                    SDPA flash, SDPA cuDNN, flex_attention + AuxRequest(lse, max_scores) and the FlexAttention
#                    composite of every statistic, both recipes, each checked against the float64 reference
#                    and satkern before it is timed; issue 22)
#   7. bench_cuda    benchmarks/bench_cuda.py (the issue shapes, cuda vs triton vs SDPA vs eager; its flex
#                    columns are left to step 6 here)
#   8. aot           python -m satkern.ops.triton.aot_check --json (registers/spills/barriers, for the record)
#
# Every step has its own time limit (seconds, below; SATKERN_GPU_SCALE=2 doubles them all) and a failing or
# timed-out step does not stop the others. Everything is written to benchmarks/results/gpu-<UTC date>.md and
# .json (device, driver, torch / triton / CUDA versions, commit, each step's status, seconds, log tail, and
# the benchmark tables), atomically, after every step (an interrupted run keeps the finished steps).
#
#   bash tests/gpu/run_all.sh              # on a GPU machine
#   bash tests/gpu/run_all.sh --dry-run    # anywhere: check the plan and the scripts it calls, run nothing
#   PYTHON=/path/to/python bash tests/gpu/run_all.sh
#
# Without a CUDA device (and no --dry-run) it says so and exits 0 having run nothing.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"
SCALE="${SATKERN_GPU_SCALE:-1}"
DRY=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "run_all.sh: unknown argument '$arg' (expected --dry-run or --help)" >&2; exit 2 ;;
  esac
done

STAMP="$(date -u +%Y%m%d-%H%M)"
OUT_DIR="${SATKERN_GPU_RESULTS:-$ROOT/benchmarks/results}"
WORK="$(mktemp -d /tmp/satkern_gpu_XXXX)"
trap 'rm -rf "$WORK"' EXIT

# name | limit (s) | command
STEPS=(
  "build|110|$PYTHON -c 'from satkern.ops.cuda_jit import build_cuda_extension as b; b(verbose=True); print(\"built\")'"
  "cuda|70|SATKERN_CUDA_JIT=1 $PYTHON -m pytest -q --maxfail=5 -p no:cacheprovider tests/gpu/test_cuda_gpu.py"
  "triton|100|$PYTHON -m pytest -q -p no:cacheprovider tests/gpu/test_triton_gpu.py -k 'not every_config and not autotuned_benchmark and not inductor'"
  "sanitize|45|SATKERN_CUDA_JIT=1 SATKERN_SANITIZE_CASES=1 PYTHON=$PYTHON bash tests/gpu/sanitize_cuda.sh"
  "bench_triton|80|$PYTHON benchmarks/bench_triton.py --quick --T 1024 4096 --modes out+lse all renorm32 --out-dir $WORK"
  "bench_flex|120|$PYTHON benchmarks/bench_triton.py --quick --T 1024 8192 --modes composite --tag composite --out-dir $WORK"
  "bench_cuda|45|SATKERN_CUDA_JIT=1 $PYTHON benchmarks/bench_cuda.py --shapes issue --reps 20 --warmup 5 --no-flex --out $WORK/cuda.md"
  "aot|30|$PYTHON -m satkern.ops.triton.aot_check --json --quick"
)

total=0
for s in "${STEPS[@]}"; do
  IFS='|' read -r name limit cmd <<<"$s"
  total=$((total + limit * SCALE))
done

if [ "$DRY" = 1 ]; then
  echo "run_all.sh --dry-run: ${#STEPS[@]} steps, at most ${total}s in all; results -> $OUT_DIR/gpu-$STAMP.{md,json}"
  status=0
  for s in "${STEPS[@]}"; do
    IFS='|' read -r name limit cmd <<<"$s"
    echo "  [$name] limit $((limit * SCALE))s: $cmd"
  done
  # the scripts and modules the steps call must exist and parse
  for f in tests/gpu/test_cuda_gpu.py tests/gpu/test_triton_gpu.py benchmarks/bench_triton.py benchmarks/bench_cuda.py \
           benchmarks/flex_composite.py \
           tests/gpu/gpu_report.py satkern/ops/cuda_jit.py satkern/ops/triton/aot_check.py; do
    if [ ! -f "$f" ]; then echo "  MISSING $f" >&2; status=1; continue; fi
    "$PYTHON" -m py_compile "$f" || { echo "  does not compile: $f" >&2; status=1; }
  done
  bash -n tests/gpu/sanitize_cuda.sh || { echo "  sanitize_cuda.sh does not parse" >&2; status=1; }
  for b in benchmarks/bench_triton.py benchmarks/bench_cuda.py; do
    "$PYTHON" "$b" --help >/dev/null || { echo "  $b --help failed" >&2; status=1; }
  done
  # each benchmark step's own arguments, parsed by its script (--plan: print the plan, measure nothing)
  for s in "${STEPS[@]}"; do
    IFS='|' read -r name limit cmd <<<"$s"
    case "$name" in bench_*)
      bash -c "$cmd --plan" >"$WORK/plan-$name.log" 2>&1 \
        || { echo "  [$name] arguments refused: $(tail -n 1 "$WORK/plan-$name.log")" >&2; status=1; } ;;
    esac
  done
  "$PYTHON" tests/gpu/gpu_report.py --self-test "$WORK" || status=1
  [ "$status" = 0 ] && echo "run_all.sh --dry-run: ok (nothing run)"
  exit $status
fi

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "run_all.sh: no CUDA device visible to $PYTHON (torch.cuda.is_available() is False): SKIPPED, nothing run"
  exit 0
fi

mkdir -p "$OUT_DIR"
echo "run_all.sh: ${#STEPS[@]} steps, at most ${total}s; results -> $OUT_DIR/gpu-$STAMP.{md,json}"
"$PYTHON" tests/gpu/gpu_report.py --init "$WORK/state.json" || exit 1
rc=0
for s in "${STEPS[@]}"; do
  IFS='|' read -r name limit cmd <<<"$s"
  lim=$((limit * SCALE))
  echo "== [$name] (limit ${lim}s) $cmd"
  t0=$(date +%s.%N)
  timeout --kill-after=10 "$lim" bash -c "$cmd" >"$WORK/$name.log" 2>&1
  code=$?
  t1=$(date +%s.%N)
  tail -n 5 "$WORK/$name.log"
  [ "$code" = 0 ] || rc=1
  "$PYTHON" tests/gpu/gpu_report.py --step "$WORK/state.json" "$name" "$code" "$t0" "$t1" "$WORK/$name.log" "$cmd" \
    && "$PYTHON" tests/gpu/gpu_report.py --write "$WORK/state.json" "$WORK" "$OUT_DIR/gpu-$STAMP"
done
echo "run_all.sh: wrote $OUT_DIR/gpu-$STAMP.md and .json (exit $rc)"
exit $rc
