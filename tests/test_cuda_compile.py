"""CI checks of the CUDA backend that need no GPU.

* nvcc compiles the device code (csrc/cuda/fused_attention.cuh through
  csrc/cuda/compile_check.cu, which explicitly instantiates every kernel template
  and host launcher: float32 / float16 / bfloat16 x head dim 64 / 128 x with and
  without row statistics, plus the colmass pass) for sm_80 and sm_90, with no torch
  headers, so a syntax or template error fails CI. One nvcc invocation per
  architecture (-O3 as in setup.py; about 10 s each on 2 cores). Skipped only when
  nvcc is not found.
* The kernel code runs on the CPU (csrc/cuda/host_emulation.cpp: one std::thread per CUDA thread,
  barriers for __syncthreads, warp shuffles through a buffer, a host model of the WMMA calls) and
  matches the float64 reference on every edge of the contract, with poisoned outputs. Needs g++
  (C++20) and the CUDA headers; about 2 minutes on 2 cores. SATKERN_EMU_FULL=1 runs every
  dtype x head dim x case (about 6-8 minutes).
* A float64 Python mirror of the block algorithm (tiny tiles) against the reference.
* With SATKERN_CHECK_BINDING=1: nvcc compiles the torch binding against this torch's headers.
* The Python parts import on a CPU-only machine: the backend is registered and says
  why it cannot run; the GPU-suite, benchmark and JIT modules import; the benchmark
  script's --help works.
"""
import os
import shutil
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")


def _nvcc():
    found = shutil.which("nvcc")
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
            return os.path.join(home, "bin", "nvcc")
    return None


NVCC = _nvcc()


@pytest.mark.skipif(NVCC is None, reason="nvcc not found (not on PATH, CUDA_HOME, CUDA_PATH or /usr/local/cuda)")
@pytest.mark.parametrize("arch", ["80", "90"])
def test_device_code_compiles(arch, tmp_path):
    cmd = [NVCC, "-std=c++17", "-O3", "--use_fast_math", "-DSATKERN_COMPILE_CHECK", f"-I{CSRC}",
           "-gencode", f"arch=compute_{arch},code=sm_{arch}", "-Werror", "all-warnings",
           "-c", os.path.join(CSRC, "cuda", "compile_check.cu"), "-o", str(tmp_path / f"check_sm{arch}.o")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"nvcc failed ({' '.join(cmd)}):\n{proc.stdout}\n{proc.stderr}"


@pytest.mark.skipif(NVCC is None, reason="nvcc not found")
@pytest.mark.skipif(os.environ.get("SATKERN_CHECK_BINDING") != "1",
                    reason="slow (about 1-2 min): set SATKERN_CHECK_BINDING=1 to compile the torch binding too")
def test_binding_compiles_against_torch_headers(tmp_path):
    """nvcc -c of csrc/cuda/attention_cuda.cu against this torch's headers, even a CPU torch.

    A CPU wheel ships ATen/c10 CUDA headers but not the generated c10/cuda/impl/cuda_cmake_macros.h;
    a one-line stand-in is written to tmp_path (it only defines C10_CUDA_BUILD_SHARED_LIBS).
    """
    import sysconfig

    from torch.utils.cpp_extension import include_paths

    stub = tmp_path / "c10" / "cuda" / "impl"
    stub.mkdir(parents=True)
    (stub / "cuda_cmake_macros.h").write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
    incs = [f"-I{CSRC}", f"-I{tmp_path}"] + [f"-I{p}" for p in include_paths()] + [
        f"-I{sysconfig.get_paths()['include']}"]
    cmd = [NVCC, "-std=c++17", "-O1", "--expt-relaxed-constexpr", *incs, "-DTORCH_EXTENSION_NAME=_C",
           f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
           "-gencode", "arch=compute_80,code=sm_80", "-c", os.path.join(CSRC, "cuda", "attention_cuda.cu"),
           "-o", str(tmp_path / "binding.o")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"nvcc failed ({' '.join(cmd)}):\n{proc.stdout}\n{proc.stderr[-5000:]}"


def test_compile_check_is_inert_without_its_macro():
    # setup.py and the JIT build glob/compile csrc/cuda/*.cu; compile_check.cu must add nothing there.
    src = open(os.path.join(CSRC, "cuda", "compile_check.cu")).read()
    body = src[src.index("#ifdef SATKERN_COMPILE_CHECK"):]
    assert body.rstrip().endswith("#endif  // SATKERN_COMPILE_CHECK")


def test_device_header_has_no_torch_includes():
    src = open(os.path.join(CSRC, "cuda", "fused_attention.cuh")).read()
    includes = [l for l in src.splitlines() if l.startswith("#include")]
    assert not [l for l in includes if "torch" in l or "ATen" in l or "c10" in l], includes


def test_head_dims_match_header():
    from satkern.ops.cuda import SUPPORTED_HEAD_DIMS

    src = open(os.path.join(CSRC, "cuda", "fused_attention.cuh")).read()
    line = next(l for l in src.splitlines() if "kSupportedHeadDims[]" in l)
    dims = tuple(int(x) for x in line.split("{")[1].split("}")[0].split(","))
    assert dims == SUPPORTED_HEAD_DIMS


def test_backend_registered_with_reasons():
    import satkern
    from satkern.ops import backends, validate

    assert "cuda" in backends()
    b = backends()["cuda"]
    x = torch.randn(1, 2, 5, 48)
    why = b.reasons(validate(x, x, x))
    if not torch.cuda.is_available():
        assert any("CUDA tensors" in w for w in why), why
    assert any("head dim 48" in w for w in why), why
    why64 = b.reasons(validate(*(torch.randn(1, 2, 5, 64, dtype=torch.float64) for _ in range(3))))
    assert any("unsupported dtype torch.float64" in w for w in why64), why64
    # auto never picks it for CPU tensors, and naming it says why
    if not torch.cuda.is_available():
        with pytest.raises(satkern.BackendUnavailable, match="backend 'cuda' cannot run this call"):
            satkern.attention(x, x, x, backend="cuda")


def test_jit_module_refuses_cpu_torch():
    from satkern.ops import cuda_jit

    assert all(os.path.exists(p) for p in cuda_jit.sources())
    assert not any(p.endswith("compile_check.cu") or os.sep + "cpu" + os.sep in p for p in cuda_jit.sources())
    if torch.version.cuda is None:
        with pytest.raises(RuntimeError, match="CPU build"):
            cuda_jit.build_cuda_extension()


def test_gpu_suite_and_bench_import():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_cuda.py"), "--help"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and "usage" in proc.stdout, proc.stdout + proc.stderr
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "--co", os.path.join(ROOT, "tests", "gpu",
                                                                                      "test_cuda_gpu.py")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode in (0, 5), proc.stdout + proc.stderr  # 5: everything skipped at collection


def test_sanitize_script_syntax():
    script = os.path.join(ROOT, "tests", "gpu", "sanitize_cuda.sh")
    proc = subprocess.run(["bash", "-n", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------------------------------------
# A float64 Python mirror of the two kernels' block algorithm (same tiles, key/query block ranges,
# band skipping, online rescaling of l / ent / dist / label_mass, finalization, colmass from the
# stored lse). It cannot check the CUDA translation, but it checks on CPU that the algorithm the
# kernels implement equals the reference, including every edge of the contract.
# ---------------------------------------------------------------------------------------------
def _kernel_mirror(call, BM, BN):
    import math

    q, k, v = (t.double() for t in (call.q, call.k, call.v))
    B, H, T, D = call.shape
    span = -1 if call.span is None else min(call.span, T)
    band_mask, band_zero = span >= 0 and call.span_mode == "renorm", span >= 0 and call.span_mode == "zero"
    W = None if call.label_weights is None else call.label_weights.double()
    L = 0 if W is None else W.shape[-1]
    nan, ninf = float("nan"), float("-inf")
    out = torch.full((B, H, T, D), 12345.0, dtype=torch.float64)  # poison: every element must be written
    stats = {n: torch.full((B, H, T), 12345.0, dtype=torch.float64) for n in ("lse", "entropy", "distance",
                                                                              "maxweight", "colmass")}
    lm_out = torch.full((B, H, T, L), 12345.0, dtype=torch.float64)
    for b in range(B):
        ln = max(0, min(T, int(call.lengths[b])))
        for h in range(H):
            kept = call.head_mask is None or bool(call.head_mask[b, h])
            # ---- pass 1
            for q0 in range(0, T, BM):
                rows = min(BM, T - q0)
                if not kept or q0 >= ln:
                    fill = 0.0 if kept else nan
                    out[b, h, q0:q0 + rows] = 0.0
                    for n in ("lse", "entropy", "distance", "maxweight"):
                        stats[n][b, h, q0:q0 + rows] = fill
                    lm_out[b, h, q0:q0 + rows] = fill
                    continue
                vr = min(rows, ln - q0)
                q_last = q0 + vr - 1
                m = torch.full((BM,), ninf, dtype=torch.float64)
                l, ent, dist = (torch.zeros(BM, dtype=torch.float64) for _ in range(3))
                acc = torch.zeros(BM, D, dtype=torch.float64)
                lm = torch.zeros(BM, L, dtype=torch.float64)
                k_begin, k_end = (max(0, q0 - span), min(ln, q_last + span + 1)) if band_mask else (0, ln)
                for kb in range(k_begin // BN, (k_end + BN - 1) // BN):
                    k0 = kb * BN
                    nk = min(BN, ln - k0)
                    need_pv = not band_zero or (k0 <= q_last + span and k0 + nk - 1 >= q0 - span)
                    S = q[b, h, q0:q0 + BM] @ k[b, h, k0:k0 + nk].T  # [<=BM, nk]
                    e_blk = torch.zeros(BM, BN, dtype=torch.float64)
                    p_blk = torch.zeros(BM, BN, dtype=torch.float64)
                    alpha = torch.zeros(BM, dtype=torch.float64)
                    for r in range(BM):
                        qi = q0 + r
                        sv = [ninf] * BN
                        for c in range(BN):
                            ki = k0 + c
                            ok = r < vr and c < nk and (not band_mask or abs(qi - ki) <= span)
                            if ok:
                                s = S[r, c].item() * call.scale
                                if call.bias is not None:
                                    s += call.bias[b, h, qi, ki].item()
                                sv[c] = s
                        mx = max(sv)
                        m_old = m[r].item()
                        m_new = max(m_old, mx)
                        m_use = 0.0 if m_new == ninf else m_new
                        a = 0.0 if m_old == ninf else math.exp(m_old - m_use)
                        lp = ep = dp = 0.0
                        for c in range(BN):
                            e = math.exp(sv[c] - m_use) if sv[c] != ninf else 0.0
                            lp += e
                            if e > 0:
                                ep += e * (sv[c] - m_use)
                            dp += e * abs(q0 + r - k0 - c)
                            e_blk[r, c] = e
                            p_blk[r, c] = e if (not band_zero or abs(q0 + r - k0 - c) <= span) else 0.0
                        l_old = l[r].item()
                        l[r] = a * l_old + lp
                        ent[r] = ep if m_old == ninf else a * (ent[r].item() + (m_old - m_use) * l_old) + ep
                        dist[r] = a * dist[r].item() + dp
                        m[r] = m_new
                        alpha[r] = a
                    pv = p_blk[:, :nk] @ v[b, h, k0:k0 + nk] if need_pv else 0.0
                    acc = acc * alpha[:, None] + pv
                    if L:
                        lm = lm * alpha[:, None] + e_blk[:, :nk] @ W[b, k0:k0 + nk]
                for r in range(rows):
                    qi = q0 + r
                    nonempty = r < vr and m[r].item() != ninf
                    out[b, h, qi] = acc[r] / l[r] if nonempty else 0.0
                    lm_out[b, h, qi] = lm[r] / l[r] if nonempty else 0.0
                    if r >= vr:
                        vals = (0.0, 0.0, 0.0, 0.0)
                    elif not nonempty:
                        vals = (ninf, 0.0, 0.0, 0.0)
                    else:
                        lr = l[r].item()
                        vals = (m[r].item() + math.log(lr), math.log(lr) - ent[r].item() / lr, dist[r].item() / lr,
                                1.0 / lr)
                    for n, val in zip(("lse", "entropy", "distance", "maxweight"), vals):
                        stats[n][b, h, qi] = val
            # ---- pass 2
            for k0 in range(0, T, BN):
                cols = min(BN, T - k0)
                if not kept or k0 >= ln:
                    stats["colmass"][b, h, k0:k0 + cols] = 0.0 if kept else nan
                    continue
                nk = min(cols, ln - k0)
                q_begin, q_end = (max(0, k0 - span), min(ln, k0 + nk - 1 + span + 1)) if band_mask else (0, ln)
                col = torch.zeros(BN, dtype=torch.float64)
                for qb in range(q_begin // BM, (q_end + BM - 1) // BM):
                    q0 = qb * BM
                    vr = min(BM, ln - q0)
                    S = q[b, h, q0:q0 + vr] @ k[b, h, k0:k0 + nk].T
                    for c in range(nk):
                        for r in range(vr):
                            qi, ki = q0 + r, k0 + c
                            lse = stats["lse"][b, h, qi].item()
                            if lse == ninf or (band_mask and abs(qi - ki) > span):
                                continue
                            s = S[r, c].item() * call.scale
                            if call.bias is not None:
                                s += call.bias[b, h, qi, ki].item()
                            col[c] += math.exp(s - lse) if s != ninf else 0.0
                stats["colmass"][b, h, k0:k0 + cols] = torch.where(torch.arange(cols) < nk, col[:cols], 0.0)
    return out, stats, lm_out


@pytest.mark.parametrize("case", ["plain", "padding", "bias", "zero", "renorm", "renorm0", "head_mask", "labels"])
def test_kernel_algorithm_mirror(case):
    import satkern
    from satkern.ops.contract import validate

    g = torch.Generator().manual_seed(7)
    B, H, T, D = 3, 2, 23, 4
    q, k, v = (torch.randn(B, H, T, D, generator=g, dtype=torch.float64) for _ in range(3))
    kw = dict(stats=satkern.STAT_NAMES, lengths=torch.tensor([23, 11, 0]))
    if case == "plain":
        kw.pop("lengths")
    elif case == "bias":
        bias = torch.randn(T, T, generator=g, dtype=torch.float64)
        bias[3] = float("-inf")  # an empty row
        bias[:, 7] = float("-inf")
        kw["bias"] = bias
    elif case == "zero":
        kw.update(span=2)
    elif case == "renorm":
        kw.update(span=3, span_mode="renorm")
    elif case == "renorm0":
        kw.update(span=0, span_mode="renorm")
    elif case == "head_mask":
        kw.update(head_mask=torch.tensor([True, False]), span=1)
    elif case == "labels":
        kw.update(label_weights=torch.rand(B, T, 3, generator=g, dtype=torch.float64))
    call = validate(q, k, v, **kw)
    ref = satkern.attention(q, k, v, backend="reference", **kw)
    out, stats, lm = _kernel_mirror(call, BM=8, BN=4)  # small tiles: many partial and skipped blocks
    close = lambda a, b: torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, equal_nan=True)  # noqa: E731
    close(out, ref.out)
    close(stats["lse"], ref.lse)
    for n in satkern.STAT_NAMES:
        close(stats[n], getattr(ref, n))
    if ref.label_mass is not None:
        close(lm, ref.label_mass)


# ---------------------------------------------------------------------------------------------
# The kernels themselves, run on the CPU by csrc/cuda/host_emulation.cpp (one std::thread per CUDA
# thread, barriers for __syncthreads, the FMA product path; no tensor cores), against the float64
# reference. Needs g++ with C++20 and the CUDA headers (found beside nvcc); skipped otherwise.
# ---------------------------------------------------------------------------------------------
def _cuda_include():
    if NVCC is None:
        return None
    import glob

    homes = [os.path.dirname(os.path.dirname(os.path.realpath(NVCC))), os.environ.get("CUDA_HOME"),
             os.environ.get("CUDA_PATH"), "/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    for home in homes:
        if home and os.path.exists(os.path.join(home, "include", "cuda_runtime.h")):
            return os.path.join(home, "include")
    return None


@pytest.fixture(scope="session")
def emulators(tmp_path_factory):
    """{"fma": lib, "wmma": lib}: the kernels built for the host, without and with the WMMA model."""
    import ctypes

    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    inc = _cuda_include()
    if cxx is None or inc is None:
        pytest.skip(f"host emulation needs a C++20 compiler ({cxx}) and the CUDA headers ({inc})")
    libs = {}
    for path, extra in (("fma", []), ("wmma", ["-DSATKERN_EMULATE_WMMA"])):
        so = str(tmp_path_factory.mktemp("emu") / f"satkern_emu_{path}.so")
        cmd = [cxx, "-std=c++20", "-O1", "-pthread", "-fPIC", "-shared", f"-I{inc}",
               f"-I{os.path.join(CSRC, 'cuda')}", *extra, os.path.join(CSRC, "cuda", "host_emulation.cpp"), "-o", so]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, f"host emulation build failed ({' '.join(cmd)}):\n{proc.stderr}"
        lib = ctypes.CDLL(so)
        lib.satkern_emulate.restype = ctypes.c_int
        libs[path] = lib
    return libs


def _emulate(lib, call, poison=float("nan")):
    """Mirror of csrc/cuda/attention_cuda.cu's host side (allocation, bias un-expansion), on CPU tensors."""
    import ctypes

    from satkern.ops.contract import AttentionResult

    B, H, T, D = call.shape
    keep = []  # tensors that must outlive the call

    def i64(vals):
        a = (ctypes.c_int64 * len(vals))(*vals)
        keep.append(a)
        return a

    def ptr(t):
        if t is None:
            return None
        keep.append(t)
        return ctypes.c_void_p(t.data_ptr())

    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (call.q, call.k, call.v))
    f32 = dict(dtype=torch.float32)
    out = torch.full((B, H, T, D), poison, dtype=q.dtype)
    lse = torch.full((B, H, T), poison, **f32)
    stat = {n: (torch.full((B, H, T), poison, **f32) if call.wants(n) else None)
            for n in ("entropy", "distance", "maxweight", "colmass")}
    bias = bs = None
    if call.bias is not None:
        bias = call.bias
        for d in range(4):
            if bias.shape[d] != 1 and bias.stride(d) == 0:
                bias = bias.narrow(d, 0, 1)
        bias = bias.to(torch.float32)
        if bias.stride(3) != 1 and bias.shape[3] != 1:
            bias = bias.contiguous()
        bs = i64([0 if bias.shape[d] == 1 else bias.stride(d) for d in range(4)])
    lw = lws = lm = None
    L = 0
    if call.label_weights is not None:
        L = call.label_weights.shape[-1]
        lw = call.label_weights.to(torch.float32).contiguous()
        lws = i64(list(lw.stride()))
        lm = torch.full((B, H, T, L), poison, **f32)
    hm = None if call.head_mask is None else call.head_mask.to(torch.uint8).contiguous()
    span = -1 if call.span is None else min(call.span, T)
    code = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}[q.dtype]
    rc = lib.satkern_emulate(
        ctypes.c_int(code), ptr(q), ptr(k), ptr(v), i64(list(q.stride()[:3])), i64(list(k.stride()[:3])),
        i64(list(v.stride()[:3])), ptr(out), i64(list(out.stride()[:3])), ptr(lse), ptr(stat["entropy"]),
        ptr(stat["distance"]), ptr(stat["maxweight"]), ptr(stat["colmass"]), ptr(lw if L else None), lws,
        ptr(lm if L else None), ctypes.c_int(L), ptr(call.lengths.contiguous()), ptr(bias), bs, ptr(hm),
        ctypes.c_int(B), ctypes.c_int(H), ctypes.c_int(T), ctypes.c_int(D), ctypes.c_int(span),
        ctypes.c_int(int(call.span_mode == "renorm")), ctypes.c_float(call.scale))
    assert rc == 0, f"satkern_emulate returned {rc}"
    return AttentionResult(out=out, lse=lse, label_mass=lm, lengths=call.lengths, backend="emulated-cuda", **stat)


_EMU_TOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}  # out: the P V product rounds P


def _emu_case(case, dtype, D, T=70):
    g = torch.Generator().manual_seed(hash((case, str(dtype), D, T)) % 2 ** 31)
    B, H = 3, 2
    q, k, v = (torch.randn(B, H, T, D, generator=g).to(dtype) for _ in range(3))
    kw = dict(stats=("entropy", "distance", "colmass", "maxweight"), lengths=torch.tensor([T, T // 2 + 1, 0]))
    if case == "full":
        kw.pop("lengths")
    elif case == "bias":
        bias = torch.randn(T, T, generator=g)
        bias[3] = float("-inf")  # a valid row with no admissible key
        bias[:, 40:45] = float("-inf")
        kw["bias"] = bias
    elif case == "bias_full_half":
        kw["bias"] = torch.randn(B, 1, T, T, generator=g).to(torch.float16)
    elif case == "zero":
        kw.update(span=5)
    elif case == "renorm":
        kw.update(span=5, span_mode="renorm")
    elif case == "renorm0":
        kw.update(span=0, span_mode="renorm")
    elif case == "head_mask":
        kw.update(head_mask=torch.tensor([[True, False], [False, True], [True, True]]), span=3)
    elif case == "labels":
        kw.update(label_weights=torch.rand(B, T, 5, generator=g), stats=("maxweight",))
    elif case == "out_only":
        kw.update(stats=())
    elif case == "colmass_only":
        kw.update(stats=("colmass",))
    elif case == "strided":  # [B, T, 3, H, D] projections viewed as [B, H, T, D]: 16-byte vector loads
        x = torch.randn(B, T, 3, H, D, generator=g).to(dtype)
        q, k, v = (x[:, :, i].transpose(1, 2) for i in range(3))
    elif case == "unaligned":  # row stride D + 1: rows not 16-byte aligned, the scalar load path
        q, k, v = (torch.randn(B, H, T, D + 1, generator=g).to(dtype)[..., 1:] for _ in range(3))
    elif case == "nan_q":  # one NaN query element: that row is NaN (out, lse, statistics) and so is every
        # column of its colmass; utterance 0 is full length (the reference also puts NaN on padded keys)
        q = q.clone()
        q[0, 1, 5, 3] = float("nan")
    elif case == "nan_k":  # one NaN key element: every row of that head is NaN
        k = k.clone()
        k[0, 0, T - 3, 1] = float("nan")
    return (q, k, v), kw


_EMU_CASES = ["full", "padding", "bias", "bias_full_half", "zero", "renorm", "renorm0", "head_mask", "labels",
              "out_only", "colmass_only", "strided", "unaligned", "nan_q", "nan_k"]
# Default matrix (about a minute on 2 cores): every case for float16 at D=64; the cases that exercise
# dtype- or D-specific code (tile sizes, thread counts, conversions) for the others.
# SATKERN_EMU_FULL=1 runs every case for every dtype and head dim.
_EMU_SHORT = ["padding", "bias", "renorm", "head_mask", "labels"]
# Product path per dtype as on an sm_80+ GPU: float16/bfloat16 -> WMMA (host model), float32 -> FMA.
_PATH = {torch.float32: "fma", torch.float16: "wmma", torch.bfloat16: "wmma"}
_EMU_MATRIX = (
    [(dt, D, c, _PATH[dt]) for dt in (torch.float32, torch.float16, torch.bfloat16) for D in (64, 128)
     for c in _EMU_CASES]
    + [(dt, D, c, "fma") for dt in (torch.float16, torch.bfloat16) for D in (64, 128) for c in _EMU_SHORT]
    if os.environ.get("SATKERN_EMU_FULL") == "1" else
    [(torch.float16, 64, c, "wmma") for c in _EMU_CASES]
    + [(dt, D, c, _PATH[dt]) for dt, D in ((torch.float16, 128), (torch.bfloat16, 64), (torch.float32, 64),
                                           (torch.float32, 128)) for c in _EMU_SHORT]
    + [(torch.bfloat16, 128, "zero", "wmma"), (torch.float32, 64, "unaligned", "fma"),
       (torch.float16, 64, "bias", "fma"), (torch.bfloat16, 128, "labels", "fma"),
       (torch.float32, 64, "nan_q", "fma"), (torch.bfloat16, 128, "nan_k", "wmma")])


@pytest.mark.parametrize("dtype, D, case, path", _EMU_MATRIX, ids=lambda x: str(x).replace("torch.", ""))
def test_emulated_kernels_match_reference(emulators, case, dtype, D, path):
    """The kernel code itself, run on the CPU by csrc/cuda/host_emulation.cpp, against the reference.

    path "wmma" runs the tensor-core branch against the host WMMA model; "fma" the plain branch.
    """
    import satkern
    from satkern.ops.contract import validate

    # T spans several key blocks of every tile config (float: 32, 16-bit: 64), with a partial last one
    (q, k, v), kw = _emu_case(case, dtype, D, T=45 if dtype == torch.float32 else 70)
    call = validate(q, k, v, **kw)
    ref = satkern.attention(q, k, v, backend="reference", **kw)
    for poison in (-31337.0,):  # a finite sentinel: an unwritten element fails even where NaN is expected
        got = _emulate(emulators[path], call, poison)
        for name in ("out", "lse", "entropy", "distance", "colmass", "maxweight", "label_mass"):
            r, o = getattr(ref, name), getattr(got, name)
            if r is None:
                assert o is None, name
                continue
            tol = _EMU_TOL[dtype] if name == "out" else 2e-5
            r64, o64 = r.double(), o.double()
            same_nan = torch.equal(torch.isnan(r64), torch.isnan(o64))
            fin = torch.isfinite(r64)
            err = (r64 - o64)[fin].abs().max().item() if bool(fin.any()) else 0.0
            scale = max(1.0, r64[fin].abs().max().item()) if bool(fin.any()) else 1.0
            assert same_nan and torch.equal(r64[~fin & ~torch.isnan(r64)], o64[~fin & ~torch.isnan(r64)]), \
                f"{case}/{name}: NaN/inf positions differ (poison {poison})"
            assert err <= tol * scale, f"{case}/{name}: worst error {err:.3g} > {tol * scale:.3g} (poison {poison})"
