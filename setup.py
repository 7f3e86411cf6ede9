"""Build satkern's C++ extension ``satkern._C``.

* Always: the CPU kernel (``csrc/cpu/*.cpp``, OpenMP).
* Only where a CUDA torch and a CUDA toolkit (nvcc) both exist: the CUDA kernels
  (``csrc/cuda/*.cu``) for sm_80 and sm_90 (override with TORCH_CUDA_ARCH_LIST).
  Otherwise the build says so and carries on with the CPU extension alone.
* SATKERN_NO_CUDA=1 forces a CPU-only build.

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
    flags = ["-O3", "-std=c++17", "-fopenmp"]
    if platform.machine() in ("x86_64", "AMD64") and os.environ.get("SATKERN_PORTABLE", "0") != "1":
        # AVX2+FMA is the baseline of every x86-64 server of the last decade; the vectorized
        # exp/dot paths use at::vec with this capability. SATKERN_PORTABLE=1 builds plain SSE2.
        flags += ["-mavx2", "-mfma", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"]
    return flags


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
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
