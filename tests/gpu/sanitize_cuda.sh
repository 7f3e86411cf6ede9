#!/usr/bin/env bash
# compute-sanitizer memcheck and racecheck on the CUDA kernels, a few small shapes
# (needs a GPU, the CUDA kernels built into satkern._C, and compute-sanitizer from
# the CUDA toolkit). Exit status 0 only when every run reports 0 errors.
#
#   bash tests/gpu/sanitize_cuda.sh            # memcheck + racecheck + synccheck
#   PYTHON=/path/python bash tests/gpu/sanitize_cuda.sh
#   SATKERN_CUDA_JIT=1 bash ...                # build the kernels with cuda_jit first
#   SATKERN_SANITIZE_CASES=1 bash ...          # only the first case (tests/gpu/run_all.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
SAN="${COMPUTE_SANITIZER:-$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)}"
if [ ! -x "$SAN" ]; then echo "sanitize_cuda.sh: compute-sanitizer not found (set COMPUTE_SANITIZER)" >&2; exit 2; fi

WORKLOAD=$(mktemp /tmp/satkern_sanitize_XXXX.py)
trap 'rm -f "$WORKLOAD"' EXIT
cat > "$WORKLOAD" <<'PY'
import os, torch, satkern
if os.environ.get("SATKERN_CUDA_JIT") == "1":
    from satkern.ops.cuda_jit import build_cuda_extension
    build_cuda_extension()
from satkern.ops.cuda import cuda_kernels_error
assert torch.cuda.is_available(), "no CUDA device"
assert not cuda_kernels_error(), cuda_kernels_error()
ALL = satkern.STAT_NAMES
g = torch.Generator(device="cuda").manual_seed(0)
def r(*s, dtype=torch.float16):
    return torch.randn(*s, device="cuda", generator=g).to(dtype)
cases = [
    # (B, H, T, D, dtype, kwargs): odd T (partial tiles), padding, empty utterance, bias with -inf,
    # both span modes, head mask, label weights, every dtype and head dim
    (2, 2, 67, 64, torch.float16, dict(lengths=torch.tensor([67, 30]))),
    (2, 2, 130, 128, torch.bfloat16, dict(lengths=torch.tensor([0, 129]), span=5, span_mode="renorm")),
    (1, 3, 97, 64, torch.float32, dict(span=4, head_mask=torch.tensor([True, False, True]))),
    (2, 1, 65, 128, torch.float32, dict(label_weights=torch.rand(2, 65, 7, device="cuda"))),
    (1, 2, 80, 64, torch.bfloat16, dict(bias=torch.where(torch.rand(80, 80, device="cuda") > 0.95,
                                                         float("-inf"), 0.0))),
]
cases = cases[:int(os.environ.get("SATKERN_SANITIZE_CASES", len(cases)))]  # run_all.sh: the first only
for B, H, T, D, dt, kw in cases:
    q, k, v = r(B, H, T, D, dtype=dt), r(B, H, T, D, dtype=dt), r(B, H, T, D, dtype=dt)
    for stats in (ALL, ()):
        res = satkern.attention(q, k, v, stats=stats, backend="cuda", **kw)
torch.cuda.synchronize()
print("sanitize workload: done", len(cases), "cases")
PY

status=0
for tool in memcheck racecheck synccheck; do
  extra=()
  [ "$tool" = memcheck ] && extra=(--leak-check no --check-api-memory-access yes)
  echo "== compute-sanitizer --tool $tool"
  if ! "$SAN" --tool "$tool" "${extra[@]}" --error-exitcode 99 \
        "$PYTHON" "$WORKLOAD"; then
    echo "!! $tool reported errors" >&2
    status=1
  fi
done
exit $status
