"""Compile the triton backend's kernels ahead of time for a GPU architecture, without a GPU.

Catches what the interpreter cannot: code that does not lower (types, control flow), and shows the
register / spill / shared-memory cost of each specialization on the target (default sm_90, H100/H200).
Needs the triton CUDA backend (ptxas ships in the triton wheel), not a GPU::

    .venv/bin/python -m satkern.ops.triton.aot_check            # the default set, one line per variant
    .venv/bin/python -m satkern.ops.triton.aot_check --json     # the same as a JSON list (one object each)
    .venv/bin/python -m satkern.ops.triton.aot_check --all      # every autotuning config of every variant

The default set holds every autotuning config (that the autotuner's pruning keeps for T = 4096) of the
D = 64 variants (bf16 and fp16; out+lse only and with entropy + distance + maxweight; the colmass pass),
plus a representative set of other head dims, span modes, bias / head mask / labels.

Each JSON object: ``kernel`` ("fwd" pass 1, "colmass" pass 2), ``dtype``, ``head_dim``, ``block_m``,
``block_n``, ``num_warps``, ``num_stages``, ``span_mode`` (0 none, 1 zero, 2 renorm), ``stats`` (names),
``labels`` (L, 0 = none), ``bias``, ``head_mask``, ``registers`` (per thread), ``spills`` (bytes of stack /
local memory per thread; 0 = none), ``shared_bytes``, ``barriers_per_iteration`` (``BAR.SYNC`` /
``BAR.RED`` / ``BAR.ARV`` instructions inside a key-block (pass 1) or query-block (pass 2) loop of the
SASS, the largest over the kernel's loops), ``inner_loop_instructions`` (SASS instructions in the longest
loop body), ``loops`` (per loop in address order: instructions, barriers), ``seconds`` (compile time) and,
for a variant that did not compile, ``error``. Loops are found in ``cuobjdump -sass`` output as backward
branches (``BRA`` to a lower address).
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

_PTR = {"fp16": "*fp16", "bf16": "*bf16", "fp32": "*fp32"}


def _signature(fn, dtype: str, bias: bool, data: tuple, fp32: tuple):
    """The argument types of kernel ``fn`` as the launcher calls it: ``data`` pointers in the input dtype,
    ``fp32`` pointers float32, lengths int64, the head mask int8, the bias in the input dtype (a float32
    placeholder when absent), ``qk_scale`` float, every other argument int32."""
    sig = {}
    for n in fn.arg_names:
        if n in data:
            sig[n] = _PTR[dtype]
        elif n == "Lengths":
            sig[n] = "*i64"
        elif n == "Bias":
            sig[n] = _PTR[dtype] if bias else "*fp32"
        elif n == "HeadMask":
            sig[n] = "*i8"
        elif n in fp32:
            sig[n] = "*fp32"
        elif n == "qk_scale":
            sig[n] = "fp32"
        else:
            sig[n] = "i32"
    sig["T_BUCKET"] = "i32"
    return sig


def _fwd_signature(dtype: str, bias: bool, head_mask: bool, labels: bool):
    from . import kernels

    return _signature(kernels._attention_fwd_kernel, dtype, bias, ("Q", "K", "V", "Out"),
                      ("W", "Lse", "Ent", "Dist", "MaxW", "LabelMass"))


def _col_signature(dtype: str, bias: bool):
    from . import kernels

    return _signature(kernels._colmass_kernel, dtype, bias, ("Q", "K"), ("Lse", "ColMass"))


def compile_variant(kind: str, *, dtype="bf16", D=64, block_m=128, block_n=64, num_warps=8, num_stages=3, maxnreg=None,
                    span_mode=0, bias=False, head_mask=False, entropy=False, distance=False, maxweight=False,
                    labels=0, arch=90):
    """Compile one specialization; returns a dict with registers, spills, shared memory and seconds."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from . import kernels
    from .launch import _block_d, _next_pow2

    bd = _block_d(D)
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
                        options=dict({"num_warps": num_warps, "num_stages": num_stages},
                                     **({} if maxnreg is None else {"maxnreg": maxnreg})))
    seconds = round(time.time() - t0, 1)
    cubin = cc.asm.get("cubin")
    regs, spills = _resource_usage(cubin)
    loops = sass_loops(_sass(cubin)) if cubin else []
    return {"regs": regs, "spills": spills, "shared": getattr(cc.metadata, "shared", None), "seconds": seconds,
            "loops": loops}


def _cuobjdump():
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def _sass(cubin) -> str:
    """``cuobjdump -sass`` of a cubin ('' when the tool is missing)."""
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        try:
            return subprocess.run([_cuobjdump(), "-sass", f.name], capture_output=True, text=True,
                                  timeout=120).stdout
        except OSError:
            return ""


_SASS_LINE = None


def sass_loops(sass: str):
    """The loops of one kernel's SASS: [{"start", "end", "instructions", "barriers"}], in address order.

    A loop is a backward branch ``BRA <target>`` at address ``a`` with ``target <= a``; its body is the
    instructions at addresses [target, a]. Barriers are ``BAR.*`` instructions (``BAR.SYNC``, ``BAR.RED``,
    ``BAR.ARV``) in the body, CTA-wide synchronizations that every iteration pays. A self-loop ``BRA``
    onto itself (the padding after ``EXIT``) is not a loop.
    """
    import re

    global _SASS_LINE
    if _SASS_LINE is None:
        _SASS_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?);")
    instrs = []
    for line in sass.splitlines():
        m = _SASS_LINE.search(line)
        if m:
            instrs.append((int(m.group(1), 16), m.group(2).strip()))
    loops = []
    for addr, text in instrs:
        m = re.search(r"\bBRA(?:\.[A-Z.]+)?\s+(?:`\()?0x([0-9a-f]+)", text)
        if not m:
            continue
        target = int(m.group(1), 16)
        if target >= addr:
            continue
        body = [t for a, t in instrs if target <= a <= addr]
        barriers = sum(1 for t in body if re.match(r"(@!?U?P\w+\s+)?BAR\.", t))
        loops.append({"start": target, "end": addr, "instructions": len(body), "barriers": barriers})
    loops.sort(key=lambda l: l["start"])
    return loops


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


_STAT_SETS = {"none": dict(), "edm": dict(entropy=True, distance=True, maxweight=True)}


def _kept_configs(kind: str, dtype: str, D: int, labels: int = 0):
    """The autotuning configs the launcher's pruning keeps for this variant at T = 4096."""
    import triton

    from .launch import _COL_CONFIGS, _FWD_CONFIGS, _block_d, _prune_col, _prune_fwd

    table = _FWD_CONFIGS if kind == "fwd" else _COL_CONFIGS
    configs = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s) for bm, bn, w, s in table]
    prec = "ieee" if dtype == "fp32" else "tf32"
    bd = _block_d(D)
    if kind == "fwd":
        kept = _prune_fwd(configs, {"T_BUCKET": 4096}, BLOCK_D=bd, WANT_LABELS=labels > 0, DOT_PRECISION=prec)
    else:
        kept = _prune_col(configs, {"T_BUCKET": 4096}, BLOCK_D=bd, DOT_PRECISION=prec)
    return [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) for c in kept]


def _variants(every_config: bool):
    """The default set: every kept autotuning config of the D = 64 variants, plus one config (the first
    kept) of each other variant; ``every_config``: every kept config of every variant."""
    def cfgs(kind, dtype, D, labels=0, every=every_config):
        kept = _kept_configs(kind, dtype, D, labels)
        return kept if every else kept[:1]

    # D = 64, the benchmark shapes: every config
    for dt in ("bf16", "fp16"):
        for name, st in _STAT_SETS.items():
            for bm, bn, w, s in cfgs("fwd", dt, 64, every=True):
                yield "fwd", dict(dtype=dt, D=64, block_m=bm, block_n=bn, num_warps=w, num_stages=s, span_mode=0, **st)
        for bm, bn, w, s in cfgs("col", dt, 64, every=True):
            yield "col", dict(dtype=dt, D=64, block_m=bm, block_n=bn, num_warps=w, num_stages=s, span_mode=0)
    # other head dims, span modes, bias / head mask / labels
    edm = _STAT_SETS["edm"]
    full = dict(edm, labels=40, bias=True, head_mask=True)
    for dt, D, sm, st in [("bf16", 64, 1, edm), ("bf16", 64, 2, edm), ("bf16", 64, 0, full), ("bf16", 128, 0, edm),
                          ("bf16", 128, 0, _STAT_SETS["none"]), ("fp16", 80, 1, full), ("bf16", 96, 2, edm),
                          ("bf16", 32, 0, edm), ("bf16", 16, 0, edm), ("bf16", 48, 0, edm), ("bf16", 256, 0, edm),
                          ("fp32", 64, 0, edm)]:
        for bm, bn, w, s in cfgs("fwd", dt, D, st.get("labels", 0)):
            yield "fwd", dict(dtype=dt, D=D, block_m=bm, block_n=bn, num_warps=w, num_stages=s, span_mode=sm, **st)
    for dt, D, sm in [("bf16", 64, 2), ("bf16", 128, 0), ("bf16", 128, 2), ("bf16", 16, 0), ("bf16", 256, 0),
                      ("fp32", 64, 0)]:
        for bm, bn, w, s in cfgs("col", dt, D):
            yield "col", dict(dtype=dt, D=D, block_m=bm, block_n=bn, num_warps=w, num_stages=s, span_mode=sm,
                              bias=sm == 2, head_mask=sm == 2)


def record(kind: str, kw: dict, result: dict = None, error: str = None) -> dict:
    """One JSON object of ``--json`` (fields in the module docstring)."""
    stats = [n for n in ("entropy", "distance", "maxweight") if kw.get(n)]
    rec = {"kernel": "fwd" if kind == "fwd" else "colmass", "dtype": kw.get("dtype", "bf16"),
           "head_dim": kw.get("D", 64), "block_m": kw.get("block_m"), "block_n": kw.get("block_n"),
           "num_warps": kw.get("num_warps"), "num_stages": kw.get("num_stages"), "span_mode": kw.get("span_mode", 0),
           "stats": stats if kind == "fwd" else ["colmass"], "labels": int(kw.get("labels", 0)),
           "bias": bool(kw.get("bias", False)), "head_mask": bool(kw.get("head_mask", False))}
    if result is not None:
        loops = result.get("loops") or []
        rec.update(registers=result["regs"], spills=result["spills"], shared_bytes=result["shared"],
                   barriers_per_iteration=max((l["barriers"] for l in loops), default=None),
                   inner_loop_instructions=max((l["instructions"] for l in loops), default=None),
                   loops=[{"instructions": l["instructions"], "barriers": l["barriers"]} for l in loops],
                   seconds=result["seconds"])
    if error is not None:
        rec["error"] = error
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--all", action="store_true", help="every autotuning config of every variant")
    ap.add_argument("--quick", action="store_true", help="three variants only (CI)")
    ap.add_argument("--json", action="store_true", help="print one JSON list (one object per variant)")
    ap.add_argument("--arch", type=int, default=90, help="CUDA compute capability x10 (default 90: H100/H200)")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET"):
        print("aot_check: unset TRITON_INTERPRET: the interpreter does not compile", file=sys.stderr)
        return 2
    # Triton 3.9 warns that its default FP fusion will change; the kernels write their FMAs explicitly
    # (tl.fma), so fusion is kept on as today and the warning silenced.
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    bad = 0
    records = []
    for kind, kw in (_quick_variants() if args.quick else _variants(args.all)):
        try:
            r = compile_variant(kind, arch=args.arch, **kw)
            rec = record(kind, kw, r)
            if not args.json:
                flag = "  SPILLS" if r["spills"] else ""
                print(f"{kind} {kw}: regs {r['regs']} spills {r['spills']} shared {r['shared']} barriers/iter "
                      f"{rec['barriers_per_iteration']} loop instrs {rec['inner_loop_instructions']} "
                      f"({r['seconds']}s){flag}", flush=True)
        except Exception as e:  # report every failing variant, not just the first
            bad += 1
            rec = record(kind, kw, error=f"{type(e).__name__}: {str(e)[:2000]}")
            if not args.json:
                print(f"{kind} {kw}: FAILED {rec['error']}", flush=True)
        records.append(rec)
    if args.json:
        import json

        print(json.dumps(records, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
