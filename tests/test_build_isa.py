"""The CPU extension loads on any x86-64: only the *_avx2.cpp / *_avx512.cpp units carry wider
instructions, nothing they define is shared with the portable units, and every row-pass build
(portable, AVX2, AVX-512) agrees with the reference."""
import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ISA_SUFFIXES = ("_avx2.o", "_avx512.o")


def _objects():
    objs = sorted(ROOT.glob("build/temp.*/**/*.o"))
    special = [o for o in objs if o.name.endswith(ISA_SUFFIXES)]
    portable = [o for o in objs if not o.name.endswith(ISA_SUFFIXES) and "cuda" not in o.parts]
    return portable, special


def _need_objects():
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("not an x86-64 machine: there are no AVX units")
    if shutil.which("objdump") is None or shutil.which("nm") is None:
        pytest.skip("binutils (objdump, nm) not installed")
    portable, special = _objects()
    if not portable or not special:
        pytest.skip("no build/temp.* objects of the CPU extension here (built elsewhere, e.g. pip)")
    return portable, special


def _mnemonics(obj: Path):
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(obj)], capture_output=True, text=True,
                         check=True).stdout
    return [line.split("\t")[1].split()[0] for line in out.splitlines() if line.count("\t") >= 1
            and re.match(r"^\s+[0-9a-f]+:", line) and len(line.split("\t")) > 1 and line.split("\t")[1].strip()]


def _defined_shared_symbols(obj: Path):
    """Weak / vague-linkage definitions (inline functions, template instances): the linker keeps one
    copy of each, so one compiled with AVX in a wide unit could be called from a portable one."""
    out = subprocess.run(["nm", "--defined-only", str(obj)], capture_output=True, text=True, check=True).stdout
    return {parts[2] for parts in (line.split() for line in out.splitlines()) if len(parts) == 3
            and parts[1] in ("W", "V", "u")}


def test_portable_units_have_no_vex_instructions():
    portable, _ = _need_objects()
    bad = {}
    for obj in portable:
        vex = [m for m in _mnemonics(obj) if m.startswith("v")]  # every AVX/AVX2/AVX-512 mnemonic starts with v
        if vex:
            bad[obj.name] = sorted(set(vex))[:8]
    assert not bad, f"portable units use AVX instructions (SIGILL on a CPU without AVX): {bad}"


def test_wide_units_share_no_definition_with_portable_units():
    portable, special = _need_objects()
    assert any(o.name.endswith("_avx2.o") for o in special), "row_avx2.cpp was not compiled as its own unit"
    for obj in special:
        assert any(m.startswith("v") for m in _mnemonics(obj)), f"{obj.name} has no AVX code: wrong flags?"
    shared_portable = set().union(*(_defined_shared_symbols(o) for o in portable))
    for obj in special:
        both = _defined_shared_symbols(obj) & shared_portable
        assert not both, f"{obj.name} defines inline/template symbols the portable units also define: {sorted(both)[:8]}"


@pytest.mark.parametrize("env", [{"SATKERN_CPU_NO_AVX2": "1", "SATKERN_CPU_NO_AVX512": "1"},
                                 {"SATKERN_CPU_NO_AVX512": "1"}, {}], ids=["portable", "avx2", "default"])
def test_each_row_build_matches_the_reference(env, child_python_ok):
    code = (
        "import torch, satkern\n"
        "torch.manual_seed(0)\n"
        "for dt, tol in ((torch.float32, 2e-5), (torch.float64, 1e-11)):\n"
        "    q, k, v = (torch.randn(2, 3, 77, 16, dtype=dt) for _ in range(3))\n"
        "    kw = dict(lengths=torch.tensor([77, 40]), stats=satkern.STAT_NAMES)\n"
        "    a = satkern.attention(q, k, v, backend='cpu', **kw)\n"
        "    r = satkern.attention(q.double(), k.double(), v.double(), backend='reference', **kw)\n"
        "    for name in ('out', 'lse', 'entropy', 'distance', 'colmass', 'maxweight'):\n"
        "        err = float((getattr(a, name).double() - getattr(r, name)).abs().max())\n"
        "        assert err < tol * 77, (dt, name, err)\n"
        "print('ok')\n")
    child_python_ok(code, env, timeout=120)
