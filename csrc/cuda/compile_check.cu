// Compile-only check of the CUDA device code, with no torch headers: every kernel
// template and host launcher the binding uses is explicitly instantiated here, so
// `nvcc -c` (tests/test_cuda_compile.py, for sm_80 and sm_90) fails on any syntax
// or template error without a GPU or a CUDA build of torch.
//
// setup.py and the JIT build compile every csrc/cuda/*.cu into the extension; this
// file is empty unless SATKERN_COMPILE_CHECK is defined, so it costs them nothing
// and does not duplicate the binding's instantiations.
#ifdef SATKERN_COMPILE_CHECK

#include "fused_attention.cuh"

namespace satkern {
namespace cuda {

#define SATKERN_INSTANTIATE_KERNELS(T, D)                                                   \
  template __global__ void fused_attention_fwd_kernel<T, D, true>(const FusedAttentionParams); \
  template __global__ void fused_attention_fwd_kernel<T, D, false>(const FusedAttentionParams); \
  template __global__ void colmass_kernel<T, D>(const FusedAttentionParams);

#define SATKERN_INSTANTIATE_TYPE(T)                                                            \
  SATKERN_INSTANTIATE_KERNELS(T, 64)                                                           \
  SATKERN_INSTANTIATE_KERNELS(T, 128)                                                          \
  template cudaError_t launch_fused_attention_fwd<T>(const FusedAttentionParams&, cudaStream_t); \
  template cudaError_t launch_colmass<T>(const FusedAttentionParams&, cudaStream_t);             \
  template cudaError_t launch_fused_attention<T>(const FusedAttentionParams&, cudaStream_t);     \
  template size_t fwd_smem_bytes<T>(int);

SATKERN_INSTANTIATE_TYPE(float)
SATKERN_INSTANTIATE_TYPE(__half)
SATKERN_INSTANTIATE_TYPE(__nv_bfloat16)

#undef SATKERN_INSTANTIATE_TYPE
#undef SATKERN_INSTANTIATE_KERNELS

// Shared memory of every configuration fits the sm_80 opt-in limit (163 KiB).
constexpr size_t kSm80OptinSmem = 163 * 1024;
static_assert(detail::Layout<float, 128>::kFwdBytes <= kSm80OptinSmem, "float/128 pass 1 smem");
static_assert(detail::Layout<__half, 128>::kFwdBytes <= kSm80OptinSmem, "half/128 pass 1 smem");
static_assert(detail::Layout<__nv_bfloat16, 128>::kFwdBytes <= kSm80OptinSmem, "bf16/128 pass 1 smem");
static_assert(detail::Layout<float, 128>::kColBytes <= kSm80OptinSmem, "float/128 pass 2 smem");
static_assert(detail::Layout<__half, 128>::kColBytes <= kSm80OptinSmem, "half/128 pass 2 smem");

}  // namespace cuda
}  // namespace satkern

#endif  // SATKERN_COMPILE_CHECK
