"""Compile the triton backend's kernels ahead of time for a GPU architecture, without a GPU.

Catches what the interpreter cannot: code that does not lower (types, control flow), and shows the
register / spill / shared-memory cost of each specialization on the target (default sm_90, H100/H200).
Needs the triton CUDA backend (ptxas ships in the triton wheel), not a GPU::

    .venv/bin/python -m satkern.ops.triton.aot_check            # a representative set of variants
    .venv/bin/python -m satkern.ops.triton.aot_check --all      # every autotuning config too
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

_PTR = {"fp16": "*fp16", "bf16": "*bf16", "fp32": "*fp32"}


def _fwd_signature(dtype: str, bias: bool, head_mask: bool, labels: bool):
    from . import kernels

    names = kernels._attention_fwd_kernel.arg_names
    sig = {}
    for n in names:
        if n in ("Q", "K", "V", "Out"):
            sig[n] = _PTR[dtype]
        elif n == "Lengths":
            sig[n] = "*i64"
        elif n == "Bias":
            sig[n] = _PTR[dtype] if bias else "*fp32"
        elif n == "HeadMask":
            sig[n] = "*i8"
        elif n == "W":
            sig[n] = "*fp32"
        elif n in ("Lse", "Ent", "Dist", "MaxW", "LabelMass"):
            sig[n] = "*fp32"
        elif n == "qk_scale":
            sig[n] = "fp32"
        else:
            sig[n] = "i32"
    sig["T_BUCKET"] = "i32"
    return sig


def _col_signature(dtype: str, bias: bool):
    from . import kernels

    sig = {}
    for n in kernels._colmass_kernel.arg_names:
        if n in ("Q", "K"):
            sig[n] = _PTR[dtype]
        elif n == "Lengths":
            sig[n] = "*i64"
        elif n == "Bias":
            sig[n] = _PTR[dtype] if bias else "*fp32"
        elif n == "HeadMask":
            sig[n] = "*i8"
        elif n in ("Lse", "ColMass"):
            sig[n] = "*fp32"
        elif n == "qk_scale":
            sig[n] = "fp32"
        else:
            sig[n] = "i32"
    sig["T_BUCKET"] = "i32"
    return sig


def compile_variant(kind: str, *, dtype="bf16", D=64, block_m=128, block_n=64, num_warps=8, num_stages=3,
                    span_mode=0, bias=False, head_mask=False, entropy=False, distance=False, maxweight=False,
                    labels=0, arch=90):
    """Compile one specialization; returns a dict with registers, spills, shared memory and seconds."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from . import kernels
    from .launch import _next_pow2

    bd = max(16, _next_pow2(D))
    common = dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=bd, SPAN_MODE=span_mode, HAS_BIAS=bias,
                  HAS_HEAD_MASK=head_mask, EVEN_D=D == bd, DOT_PRECISION="ieee" if dtype == "fp32" else "tf32",
                  UPCAST_DOT=False)
    if kind == "fwd":
        fn = kernels._attention_fwd_kernel
        sig = _fwd_signature(dtype, bias, head_mask, labels > 0)
        consts = dict(common, BLOCK_L=max(16, _next_pow2(labels)), WANT_ENTROPY=entropy, WANT_DISTANCE=distance,
                      WANT_MAXWEIGHT=maxweight, WANT_LABELS=labels > 0, FUSED_SCALE=not bias)
    else:
        fn = kernels._colmass_kernel
        sig = _col_signature(dtype, bias)
        consts = common
    # what the JIT would specialize for contiguous [B,H,T,D] inputs with T a multiple of 16 (the benchmark
    # shapes): unit strides become constants, pointers / other strides / T carry "divisible by 16"
    consts = dict(consts)
    for n in fn.arg_names:
        if n.startswith("stride_") and n[-1] == "d" and n[-2] in "qkvo":
            consts[n] = 1
    for k in consts:
        sig[k] = "constexpr"
    div16 = [n for n in fn.arg_names if n not in consts and (sig[n].startswith("*") or n == "T" or (
        n.startswith("stride_") and n[-2:-1] in "qkvo" and n[-1] in "bht"))]
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in div16}
    src = ASTSource(fn, sig, constexprs=consts, attrs=attrs)
    t0 = time.time()
    cc = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                        options={"num_warps": num_warps, "num_stages": num_stages})
    regs, spills = _resource_usage(cc.asm.get("cubin"))
    return {"regs": regs, "spills": spills, "shared": getattr(cc.metadata, "shared", None),
                "seconds": round(time.time() - t0, 1)}


def _resource_usage(cubin):
    """(registers, spill bytes) from ``cuobjdump -res-usage`` of the cubin (triton ships cuobjdump)."""
    import re
    import subprocess
    import tempfile

    if not cubin:
        return None, None
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        try:
            text = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True, timeout=60).stdout
        except OSError:
            return None, None
    regs = re.search(r"REG:(\d+)", text)
    stack = re.search(r"STACK:(\d+)", text)
    # STACK holds the spill slots (LOCAL is user local memory); either > 0 means registers ran out
    spill = sum(int(x) for x in re.findall(r"(?:STACK|LOCAL):(\d+)", text))
    return (int(regs.group(1)) if regs else None), (spill if (regs or stack) else None)


def _quick_variants():
    """One pass-1 kernel with every feature on, one plain, and one pass-2 kernel (CI: do they lower?)."""
    yield "fwd", dict(dtype="bf16", D=64, block_m=128, block_n=64, num_warps=8, num_stages=3, span_mode=0)
    yield "fwd", dict(dtype="fp16", D=80, block_m=64, block_n=64, num_warps=4, num_stages=3, span_mode=1,
                      entropy=True, distance=True, maxweight=True, labels=5, bias=True, head_mask=True)
    yield "col", dict(dtype="bf16", D=64, block_m=64, block_n=64, num_warps=4, num_stages=3, span_mode=2,
                      bias=True, head_mask=True)


def _variants(every_config: bool):
    from .launch import _COL_CONFIGS, _FWD_CONFIGS

    fwd_cfgs = _FWD_CONFIGS if every_config else _FWD_CONFIGS[:1] + _FWD_CONFIGS[-1:]
    col_cfgs = _COL_CONFIGS if every_config else _COL_CONFIGS[:1]
    stat_sets = [dict(), dict(entropy=True, distance=True, maxweight=True),
                 dict(entropy=True, distance=True, maxweight=True, labels=40, bias=True, head_mask=True)]
    for (bm, bn, w, s), st, dt, D, sm in itertools.product(fwd_cfgs, stat_sets, ["bf16"], [64, 128], [0]):
        yield "fwd", dict(dtype=dt, D=D, block_m=bm, block_n=bn, num_warps=w, num_stages=s, span_mode=sm, **st)
    for dt, D, sm in [("fp16", 80, 0), ("fp32", 64, 0), ("bf16", 64, 1), ("bf16", 64, 2), ("bf16", 96, 2),
                      ("bf16", 32, 0)]:
        bm, bn, w, s = _FWD_CONFIGS[0]
        yield "fwd", dict(dtype=dt, D=D, block_m=bm, block_n=bn, num_warps=w, num_stages=s, span_mode=sm,
                          entropy=True, distance=True, maxweight=True)
    for (bm, bn, w, s), D, sm in itertools.product(col_cfgs, [64, 128], [0, 2]):
        yield "col", dict(dtype="bf16", D=D, block_m=bm, block_n=bn, num_warps=w, num_stages=s, span_mode=sm,
                          bias=sm == 2, head_mask=sm == 2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--all", action="store_true", help="every autotuning config, not a representative set")
    ap.add_argument("--quick", action="store_true", help="three variants only (CI)")
    ap.add_argument("--arch", type=int, default=90, help="CUDA compute capability x10 (default 90: H100/H200)")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET"):
        print("unset TRITON_INTERPRET: the interpreter does not compile", file=sys.stderr)
        return 2
    bad = 0
    for kind, kw in (_quick_variants() if args.quick else _variants(args.all)):
        try:
            r = compile_variant(kind, arch=args.arch, **kw)
            flag = "  SPILLS" if r["spills"] else ""
            print(f"{kind} {kw}: regs {r['regs']} spills {r['spills']} shared {r['shared']} ({r['seconds']}s){flag}")
        except Exception as e:  # report every failing variant, not just the first
            bad += 1
            print(f"{kind} {kw}: FAILED {type(e).__name__}: {str(e)[:2000]}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
