"""Build satkern's C++ extension ``satkern._C``.

* Always: the CPU kernel (``csrc/cpu/*.cpp``, OpenMP).
* Only where a CUDA torch and a CUDA toolkit (nvcc) both exist: the CUDA kernels
  (``csrc/cuda/*.cu``) for sm_80 and sm_90 (override with TORCH_CUDA_ARCH_LIST).
  Otherwise the build says so and carries on with the CPU extension alone.
* SATKERN_NO_CUDA=1 forces a CPU-only build.
* The CPU units are compiled for the portable baseline of the architecture; the AVX2 and AVX-512
  row passes (``*_avx2.cpp``, ``*_avx512.cpp``) are separate objects with their own flags, chosen
  at run time from the CPU's features. SATKERN_PORTABLE=1 compiles those with the baseline flags too.

Install without build isolation, so the torch you already have is the one compiled
against (and not re-downloaded into a build environment):

    pip install --no-build-isolation -e .
"""
import glob
import os
import platform
import sys

from setuptools import find_packages, setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

HERE = os.path.dirname(os.path.abspath(__file__))


def _rel(paths):
    return sorted(os.path.relpath(p, HERE) for p in paths)


def _cpu_flags():
    """Flags of every CPU unit: portable (the compiler's default target, SSE2 on x86-64), so the
    extension loads on any CPU of the architecture. Wider code lives in its own units, below."""
    flags = ["-O3", "-std=c++17", "-fopenmp", "-DCPU_CAPABILITY=DEFAULT"]
    if _x86_64() and os.environ.get("SATKERN_PORTABLE", "0") != "1":
        flags.append("-DSATKERN_AVX2_UNIT")  # cpu_features.cpp: the AVX2 row build exists
    return flags


def _x86_64():
    return platform.machine() in ("x86_64", "AMD64")


# Units compiled with wider instruction sets, by file-name suffix, each as its own object with its
# own flags (appended after the portable ones; the later -DCPU_CAPABILITY wins). Their code runs only
# after a run-time CPU check in a portable unit (csrc/cpu/row_kernels.h). SATKERN_PORTABLE=1, or a
# non-x86-64 machine, compiles them with the portable flags (their code is then never chosen).
ISA_UNIT_FLAGS = {
    "_avx2.cpp": ["-mavx2", "-mfma", "-UCPU_CAPABILITY", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"],
    "_avx512.cpp": ["-mavx512f", "-mavx512dq", "-mavx2", "-mfma"],
}


def _isa_flags(source: str):
    if not _x86_64() or os.environ.get("SATKERN_PORTABLE", "0") == "1":
        return None
    for suffix, flags in ISA_UNIT_FLAGS.items():
        if source.endswith(suffix):
            return flags
    return None


class SatkernBuildExt(BuildExtension.with_options(use_ninja=True)):
    """torch's BuildExtension, plus: sources named *_avx2.cpp / *_avx512.cpp are compiled first, as
    separate objects with their instruction-set flags (ISA_UNIT_FLAGS), and linked in."""

    def build_extension(self, ext):
        special = [src for src in ext.sources if _isa_flags(src) is not None]
        if special:
            ext.sources = [src for src in ext.sources if src not in special]
            cxx = ext.extra_compile_args["cxx"] if isinstance(ext.extra_compile_args, dict) else ext.extra_compile_args
            objects = []
            for src in special:
                out_dir = os.path.join(self.build_temp, "isa", os.path.basename(src)[: -len(".cpp")])
                objects += self.compiler.compile([src], output_dir=out_dir, macros=ext.define_macros,
                                                 include_dirs=ext.include_dirs, debug=self.debug,
                                                 extra_postargs=list(cxx) + _isa_flags(src), depends=ext.depends)
                print(f"satkern: compiled {src} with {' '.join(_isa_flags(src))}", file=sys.stderr)
            ext.extra_objects = list(ext.extra_objects or []) + objects
        super().build_extension(ext)


def _want_cuda():
    if os.environ.get("SATKERN_NO_CUDA", "0") == "1":
        return False, "SATKERN_NO_CUDA=1"
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is a CPU build"
    if CUDA_HOME is None:
        return False, "no CUDA toolkit (nvcc) found; set CUDA_HOME"
    if not glob.glob(os.path.join(HERE, "csrc", "cuda", "*.cu")):
        return False, "no CUDA sources"
    return True, ""


def extensions():
    cpu_sources = _rel(glob.glob(os.path.join(HERE, "csrc", "cpu", "*.cpp")))
    sources = ["csrc/module.cpp"] + cpu_sources
    include_dirs = [os.path.join(HERE, "csrc")]
    cxx = _cpu_flags()
    with_cuda, why = _want_cuda()
    if with_cuda:
        cu_sources = _rel(glob.glob(os.path.join(HERE, "csrc", "cuda", "*.cu")))
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        nvcc = ["-O3", "-std=c++17", "--use_fast_math", "-lineinfo", "--expt-relaxed-constexpr"]
        print(f"satkern: building CUDA kernels ({len(cu_sources)} files) for "
              f"TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']}", file=sys.stderr)
        return [CUDAExtension("satkern._C", sources + cu_sources, include_dirs=include_dirs,
                              define_macros=[("SATKERN_WITH_CUDA", "1")],
                              extra_compile_args={"cxx": cxx, "nvcc": nvcc}, extra_link_args=["-fopenmp"])]
    print(f"satkern: building the CPU extension only ({why})", file=sys.stderr)
    return [CppExtension("satkern._C", sources, include_dirs=include_dirs,
                         extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])]


setup(
    packages=find_packages(include=["satkern", "satkern.*"]),
    ext_modules=extensions(),
    cmdclass={"build_ext": SatkernBuildExt},
)
