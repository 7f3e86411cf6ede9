"""The triton backend's kernels under the Triton interpreter (TRITON_INTERPRET=1, CPU tensors).

TRITON_INTERPRET must be set before the kernels are decorated, so when this file is collected in a
normal pytest run (no TRITON_INTERPRET) it defines one test that re-runs this same file in a child
pytest with TRITON_INTERPRET=1; the child (where the variable is set) defines the real tests. Other
test files in the parent process are never affected. Run the cases directly with::

    TRITON_INTERPRET=1 .venv/bin/python -m pytest -q tests/test_triton_interpret.py

Every case draws fresh random inputs (the seed is printed on failure), poisons the outputs before the
kernels write them, and compares with the float64 reference under the 2x-PyTorch tolerance rule
(satkern/ops/testing.py). Shapes are small (T <= 80) because the interpreter is slow.
"""
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from interpreter_child import IN_CHILD as _CHILD, REPO as _REPO, run_in_interpreter, triton_missing  # noqa: E402

if not _CHILD:

    @pytest.mark.skipif(triton_missing(), reason="triton not installed")
    def test_interpreter_suite_in_child_process():
        run_in_interpreter(__file__, "-W", "error::RuntimeWarning")

    def _ptxas_missing() -> bool:
        import importlib.util

        spec = importlib.util.find_spec("triton")
        if spec is None or not spec.submodule_search_locations:
            return True
        root = list(spec.submodule_search_locations)[0]
        return not os.path.exists(os.path.join(root, "backends", "nvidia", "bin", "ptxas"))

    @pytest.mark.skipif(_ptxas_missing(), reason="triton's CUDA backend (ptxas) not installed")
    def test_kernels_compile_for_sm90_without_a_gpu():
        """What the interpreter cannot check: the kernels lower to Hopper machine code (in a child process,
        so this process never imports the kernels compiled)."""
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        env["PYTHONPATH"] = _REPO + os.pathsep + env.get("PYTHONPATH", "")
        r = subprocess.run([sys.executable, "-m", "satkern.ops.triton.aot_check", "--quick"], cwd=_REPO, env=env,
                           capture_output=True, text=True, timeout=900)
        print(r.stdout)
        assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]

    def test_import_does_not_import_triton_and_cpu_refuses_without_interpreter():
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        env["PYTHONPATH"] = _REPO + os.pathsep + env.get("PYTHONPATH", "")
        code = (
            "import sys, torch, satkern\n"
            "assert 'triton' not in sys.modules, 'import satkern imported triton'\n"
            "assert 'triton' in satkern.backends()\n"
            "x = torch.randn(1, 1, 4, 64)\n"
            "try:\n"
            "    satkern.attention(x, x, x, backend='triton')\n"
            "    raise SystemExit('triton ran on CPU without the interpreter')\n"
            "except satkern.BackendUnavailable as e:\n"
            "    assert 'CUDA' in str(e), str(e)\n"
            "assert satkern.attention(x, x, x).backend != 'triton'\n"
            "print('ok')\n")
        r = subprocess.run([sys.executable, "-c", code], cwd=_REPO, env=env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr

else:
    import torch

    import satkern
    from satkern.ops.contract import validate
    from satkern.ops.dispatch import select
    from satkern.ops.schema import op_args
    from satkern.ops.triton import kernels, launch
    from satkern.ops.testing import compare, failures

    ALL = satkern.STAT_NAMES
    F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16

    @pytest.fixture(autouse=True)
    def _interpreted():
        assert launch.interpreting(), "kernels were not built by the interpreter"

    def _run(B, H, T, D, dtype=F32, blocks=(16, 16), stats=ALL, layout="bhtd", poison=float("nan"),
             extra=None, edit=None):
        """Fresh random q, k, v (+ whatever ``extra(gen)`` builds; ``edit(q, k, v)`` may change them in
        place), triton vs reference."""
        seed = int.from_bytes(os.urandom(4), "little")
        gen = torch.Generator().manual_seed(seed)
        if layout == "bhtd":
            q, k, v = (torch.randn(B, H, T, D, generator=gen).to(dtype) for _ in range(3))
        elif layout == "nan-padded":  # the first D columns of NaN-filled [.., 16] storage: a load past D is NaN
            q, k, v = (torch.full((B, H, T, 16), float("nan"), dtype=dtype) for _ in range(3))
            for x in (q, k, v):
                x[..., :D] = torch.randn(B, H, T, D, generator=gen).to(dtype)
            q, k, v = q[..., :D], k[..., :D], v[..., :D]
        else:  # [B, T, H, D] storage as models produce it, viewed as [B, H, T, D]
            q, k, v = (torch.randn(B, T, H, D, generator=gen).to(dtype).transpose(1, 2) for _ in range(3))
        if edit is not None:
            edit(q, k, v)
        kw = extra(gen) if extra is not None else {}
        call = validate(q, k, v, stats=stats, **kw)
        with launch.poison_outputs(poison), launch.interpreter_blocks(*blocks):
            got = satkern.attention(q, k, v, stats=stats, backend="triton", **kw)
        assert got.backend == "triton"
        report = compare(got, call)
        msg = failures(report)
        worst = {n: f"{r['err']:.2e} (torch {r['torch_err']:.2e})" for n, r in report.items() if "err" in r}
        assert not msg, f"seed {seed}, B,H,T,D={B, H, T, D}, {dtype}, blocks {blocks}:\n{msg}\nall: {worst}"
        return got

    def _lengths(*ls):
        return lambda gen: {"lengths": torch.tensor(ls)}

    # ---------------------------------------------------------------- shapes and padding
    @pytest.mark.parametrize("B,H,T,D,blocks,lengths", [
        (2, 2, 37, 32, (16, 16), (37, 20)),   # odd T, 3 blocks, padding
        (2, 1, 5, 64, (16, 16), (5, 3)),      # T smaller than one block
        (1, 2, 1, 32, (16, 16), (1,)),        # T = 1
        (3, 2, 48, 32, (16, 16), (48, 0, 17)),  # T a multiple of the block; an empty utterance
        (2, 2, 80, 64, (32, 16), (80, 61)),   # several blocks, BLOCK_M != BLOCK_N
        (2, 2, 71, 32, (16, 32), (71, 33)),
    ])
    def test_shapes_and_padding(B, H, T, D, blocks, lengths):
        _run(B, H, T, D, blocks=blocks, extra=_lengths(*lengths))

    @pytest.mark.parametrize("D", [80, 96])
    def test_head_dims_padded_to_power_of_two(D):
        _run(2, 1, 23, D, extra=_lengths(23, 11))

    @pytest.mark.parametrize("D,dtype", [(16, F32), (16, BF16), (1, F32), (48, F16), (200, F32), (256, BF16)])
    def test_any_head_dim_up_to_256(D, dtype):
        """SAT-style D = 16, odd sizes padded to the next tile, and up to 256 (tiny T: the interpreter)."""
        _run(2, 1, 19, D, dtype=dtype, extra=_lengths(19, 7))

    @pytest.mark.parametrize("D", [1, 2, 4, 8])
    def test_small_head_dims_never_read_past_d(D):
        """D = 1, 2, 4, 8 are powers of two but less than the 16-wide tile: the kernels must mask the head
        dim. q, k, v are the first D columns of NaN-filled [.., 16] storage, so a load past D shows as NaN
        (it did: EVEN_D was D == next_pow2(D), true for these, and the unmasked loads read past the row;
        at the tensor's end that was whatever memory followed, and the CI run that drew a NaN failed)."""
        _run(2, 2, 21, D, layout="nan-padded", extra=_lengths(21, 9))

    def test_noncontiguous_inputs():
        _run(2, 3, 29, 32, layout="bthd", extra=_lengths(29, 18))

    @pytest.mark.parametrize("stats", [(), ("colmass",), ("entropy", "maxweight"), ("distance",)])
    def test_stat_subsets(stats):
        got = _run(2, 2, 33, 32, stats=stats, extra=_lengths(33, 9))
        for name in ALL:
            assert (getattr(got, name) is None) == (name not in stats)

    @pytest.mark.parametrize("scale", [0.7, 0.0, -0.4])  # > 0 folds the scale into the exponent's FMA
    def test_custom_scale(scale):
        _run(1, 2, 40, 32, extra=lambda gen: {"scale": scale, "lengths": torch.tensor([31])})

    # ---------------------------------------------------------------- NaN inputs
    @pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's "All-NaN slice" in the interpreted max
    @pytest.mark.parametrize("where", ["q", "k"])
    def test_nan_inputs_propagate(where):
        """A NaN in q makes its row NaN (out, lse, statistics) and, through the row, every column's colmass;
        a NaN in k makes every row of the head NaN. Utterance 0 (full length) carries the NaN; utterance 1
        (padded) must stay finite. (Pass 2 used to test ``lse > -inf``, false for NaN: the NaN row added 0.)"""

        def edit(q, k, v):
            if where == "q":
                q[0, 1, 21, 3] = float("nan")
            else:
                k[0, 0, 30, 5] = float("nan")

        got = _run(2, 2, 37, 32, edit=edit, extra=_lengths(37, 20))
        assert torch.isnan(got.colmass[0, 1 if where == "q" else 0]).all()
        assert torch.isfinite(got.colmass[1]).all()

    def test_bias_offsets_are_int64():
        """A dense bias past T ~ 46 000 has q * stride_bq > 2**31: the offsets must be computed in int64.
        The kernels' own offset helper, run under the interpreter at such a row and stride."""
        import triton
        import triton.language as tl

        @triton.jit
        def probe(Out, start_m, stride_bq, stride_bk, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            offs_n = start_m + tl.arange(0, BLOCK_N)
            off = kernels._bias_offsets(offs_m, offs_n, stride_bq, stride_bk)
            idx = tl.arange(0, BLOCK_M)[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
            tl.store(Out + idx, off)

        T = 50_000  # dense [T, T] bias: stride_bq = T
        start_m = T - 16
        out = torch.zeros(16 * 16, dtype=torch.int64)
        probe[(1,)](out, start_m, T, 1, BLOCK_M=16, BLOCK_N=16)
        rows = torch.arange(start_m, start_m + 16, dtype=torch.int64)
        want = (rows[:, None] * T + rows[None, :]).flatten()
        assert int(want.max()) > 2 ** 31  # the case that overflowed int32
        assert torch.equal(out, want), f"first wrong offset {int(out[(out != want).nonzero()[0]])}"

    # ---------------------------------------------------------------- bias
    @pytest.mark.parametrize("shape", ["BHTT", "TT", "B1TT", "1H1T"])
    def test_bias_broadcast(shape):
        B, H, T = 2, 2, 35

        def extra(gen):
            dims = {"BHTT": (B, H, T, T), "TT": (T, T), "B1TT": (B, 1, T, T), "1H1T": (1, H, 1, T)}[shape]
            return {"bias": torch.randn(*dims, generator=gen) * 2.0, "lengths": torch.tensor([35, 22])}

        _run(B, H, T, 32, extra=extra)

    def test_bias_masks_whole_rows_and_keys():
        B, H, T = 2, 2, 34

        def extra(gen):
            bias = torch.randn(B, H, T, T, generator=gen, dtype=torch.float64)
            bias[0, 0, 3, :] = float("-inf")         # an empty row: out 0, lse -inf, stats 0
            bias[1, 1, :, 5:9] = float("-inf")       # keys masked for every row
            bias[0, 1, 20, :20] = float("-inf")      # row 20 may only see keys >= 20
            return {"bias": bias, "lengths": torch.tensor([34, 30])}

        got = _run(B, H, T, 32, extra=extra)
        assert got.lse[0, 0, 3] == float("-inf") and got.out[0, 0, 3].abs().max() == 0

    # ---------------------------------------------------------------- span
    @pytest.mark.parametrize("mode", ["zero", "renorm"])
    @pytest.mark.parametrize("span,blocks", [(0, (16, 16)), (3, (32, 16)), (17, (16, 16)), (9, (16, 32)),
                                             (100, (16, 16))])
    def test_span(mode, span, blocks):
        _run(2, 2, 75, 32, blocks=blocks,
             extra=lambda gen: {"span": span, "span_mode": mode, "lengths": torch.tensor([75, 40])})

    def test_span_with_bias_and_labels():
        B, H, T = 2, 2, 50

        def extra(gen):
            return {"span": 6, "span_mode": "renorm", "bias": torch.randn(1, H, T, T, generator=gen),
                    "label_weights": torch.rand(B, T, 7, generator=gen), "lengths": torch.tensor([50, 27])}

        _run(B, H, T, 32, extra=extra)

    # ---------------------------------------------------------------- head mask
    @pytest.mark.parametrize("poison", [float("nan"), 12345.0])
    def test_head_mask(poison):
        mask = torch.tensor([[1, 0, 1], [0, 0, 1]])
        _run(2, 3, 41, 32, poison=poison,
             extra=lambda gen: {"head_mask": mask, "lengths": torch.tensor([41, 30]),
                                "label_weights": torch.rand(2, 41, 4, generator=gen)})

    def test_head_mask_1d_all_masked():
        _run(2, 2, 19, 32, poison=7.0, extra=lambda gen: {"head_mask": torch.tensor([0, 0])})

    # ---------------------------------------------------------------- labels
    @pytest.mark.parametrize("L", [1, 5, 17])
    def test_label_weights(L):
        B, T = 2, 45

        def extra(gen):
            W = torch.rand(B, T, L, generator=gen)
            return {"label_weights": W / W.sum(-1, keepdim=True), "lengths": torch.tensor([45, 12])}

        _run(B, 2, T, 32, extra=extra)

    # ---------------------------------------------------------------- low precision
    @pytest.mark.parametrize("dtype", [F16, BF16])
    @pytest.mark.parametrize("case", ["plain", "bias+renorm", "zero+labels"])
    def test_half_dtypes(dtype, case):
        B, H, T = 2, 2, 52

        def extra(gen):
            kw = {"lengths": torch.tensor([52, 31])}
            if case == "bias+renorm":
                kw.update(bias=torch.randn(B, 1, T, T, generator=gen).to(dtype), span=5, span_mode="renorm")
            if case == "zero+labels":
                kw.update(span=8, span_mode="zero", label_weights=torch.rand(B, T, 6, generator=gen))
            return kw

        _run(B, H, T, 64, dtype=dtype, blocks=(32, 16), extra=extra)

    # ---------------------------------------------------------------- op level
    def _op_inputs(T=12, D=32, head_mask=(1, 0)):
        q, k, v = (torch.randn(2, 2, T, D) for _ in range(3))
        call = validate(q, k, v, lengths=torch.tensor([T, T - 5]), stats=ALL, span=3, span_mode="zero",
                        bias=torch.randn(T, T), head_mask=None if head_mask is None else torch.tensor(head_mask),
                        label_weights=torch.rand(2, T, 3))
        return call

    def test_reasons_for_unsupported_calls():
        tb = satkern.backends()["triton"]
        x = torch.randn(1, 2, 8, 64)
        assert any("float64" in w for w in tb.reasons(validate(x.double(), x.double(), x.double())))
        y = torch.randn(1, 2, 8, 257)
        assert any("head dim 257" in w for w in tb.reasons(validate(y, y, y)))
        for D in (1, 16, 48, 256):
            z = torch.randn(1, 2, 8, D)
            assert not tb.reasons(validate(z, z, z)), D
        assert any("labels" in w for w in tb.reasons(validate(x, x, x, label_weights=torch.rand(1, 8, 129))))
        assert not tb.reasons(validate(x, x, x, label_weights=torch.rand(1, 8, 128)))

    def test_auto_never_picks_triton_on_cpu():
        call = _op_inputs()
        assert "triton" in satkern.backends()
        assert not satkern.backends()["triton"].reasons(call)
        assert select(call).name != "triton"

    def test_torch_compile_fullgraph_uses_fake():
        call = _op_inputs()
        args = op_args(call)
        op = torch.ops.satkern.fused_attention_triton

        def f(*a):
            return op(*a)

        eager = f(*args)
        compiled = torch.compile(f, backend="aot_eager", fullgraph=True)(*args)
        for a, b in zip(eager, compiled):
            torch.testing.assert_close(a, b, equal_nan=True)

    def test_opcheck():
        call = _op_inputs(T=8, head_mask=None)  # opcheck compares without equal_nan: no masked heads
        torch.library.opcheck(torch.ops.satkern.fused_attention_triton.default, op_args(call),
                              test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))

    @pytest.mark.parametrize("shape", [(2, 2, 0, 32), (0, 2, 5, 32)])
    def test_empty_shapes_match_the_fake(shape):
        from satkern.ops.schema import _fake

        x = torch.randn(*shape)
        call = validate(x, x, x, stats=ALL, label_weights=torch.rand(shape[0], shape[2], 3))
        got = torch.ops.satkern.fused_attention_triton(*op_args(call))
        for g, f in zip(got, _fake(*op_args(call))):
            assert g.shape == f.shape and g.dtype == f.dtype

    def test_autotune_tables_and_pruning():
        fwd = launch._attention_fwd_tuned.configs
        assert fwd and all(c.kwargs["BLOCK_M"] in (32, 64, 128) for c in fwd)
        short = launch._prune_fwd(fwd, {"T_BUCKET": 16}, BLOCK_D=64, WANT_LABELS=False)
        assert short and all(c.kwargs["BLOCK_M"] <= 64 for c in short)
        labels128 = launch._prune_fwd(fwd, {"T_BUCKET": 4096}, BLOCK_D=128, WANT_LABELS=True)
        assert labels128 and all(c.kwargs["BLOCK_M"] == 64 for c in labels128)
        assert launch._prune_col(launch._colmass_tuned.configs, {"T_BUCKET": 16})
        fp32 = launch._prune_fwd(fwd, {"T_BUCKET": 4096}, BLOCK_D=64, DOT_PRECISION="ieee")
        assert fp32 and all(c.kwargs["BLOCK_M"] == 32 for c in fp32)
        half = launch._prune_fwd(fwd, {"T_BUCKET": 4096}, BLOCK_D=64, DOT_PRECISION="tf32")
        assert half and all(c.kwargs["BLOCK_M"] >= 64 for c in half)
        wide = launch._prune_fwd(fwd, {"T_BUCKET": 4096}, BLOCK_D=256, DOT_PRECISION="tf32")
        assert wide and all(c.kwargs["BLOCK_M"] <= 64 and c.kwargs["BLOCK_N"] <= 64 for c in wide)
        wide_col = launch._prune_col(launch._colmass_tuned.configs, {"T_BUCKET": 4096}, BLOCK_D=256)
        assert wide_col and all(c.kwargs["BLOCK_N"] <= 64 for c in wide_col)

    def test_deterministic():
        call = _op_inputs(T=20)
        a = torch.ops.satkern.fused_attention_triton(*op_args(call))
        b = torch.ops.satkern.fused_attention_triton(*op_args(call))
        for x, y in zip(a, b):
            assert torch.equal(x.nan_to_num(7.0), y.nan_to_num(7.0))
