// The CUDA implementation of satkern::fused_attention (schema: satkern/ops/schema.py).
//
// A thin binding: argument checks (naming the argument), output allocation, the
// params struct, and the two launches of csrc/cuda/fused_attention.cuh on the
// current stream. Everything numeric lives in the header.
//
// Debug entry point: with SATKERN_CUDA_POISON=<float> in the environment (e.g.
// "nan" or "-31337"), every output is filled with that value before the kernels
// run, so a test can see any element the kernels fail to write
// (tests/gpu/test_cuda_gpu.py).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <string>
#include <tuple>

#include "fused_attention.cuh"

namespace {

using satkern::cuda::FusedAttentionParams;

std::optional<double> poison_value() {
  const char* env = std::getenv("SATKERN_CUDA_POISON");
  if (env == nullptr || *env == '\0') return std::nullopt;
  return std::stod(std::string(env));  // accepts "nan", "inf", "-31337", ...
}

void check_qkv(const at::Tensor& t, const char* name, const at::Tensor& q) {
  TORCH_CHECK(t.is_cuda(), "satkern fused_attention (cuda): argument '", name, "' must be a CUDA tensor; got device ",
              t.device());
  TORCH_CHECK(t.dim() == 4, "satkern fused_attention (cuda): argument '", name, "' must be 4-d [B, H, T, D]; got ",
              t.dim(), "-d");
  TORCH_CHECK(t.scalar_type() == q.scalar_type(), "satkern fused_attention (cuda): argument '", name,
              "' must have q's dtype ", q.scalar_type(), "; got ", t.scalar_type());
  TORCH_CHECK(t.device() == q.device(), "satkern fused_attention (cuda): argument '", name, "' must be on ",
              q.device(), " like q; got ", t.device());
}

// Head dim contiguous; other strides free.
at::Tensor last_dim_contiguous(const at::Tensor& t) { return t.stride(-1) == 1 ? t : t.contiguous(); }

// The bias arrives expanded to [B, H, T, T] (broadcast dims have stride 0). Undo the
// expansion before converting to float32, so a broadcast bias is never materialized,
// and return the strides the kernel reads with (0 on broadcast dims).
at::Tensor bias_as_float(const at::Tensor& bias, int64_t strides[4]) {
  at::Tensor base = bias;
  for (int64_t d = 0; d < 4; ++d)
    if (base.size(d) != 1 && base.stride(d) == 0) base = base.narrow(d, 0, 1);
  base = base.to(at::kFloat);
  if (base.stride(3) != 1 && base.size(3) != 1) base = base.contiguous();
  for (int64_t d = 0; d < 4; ++d) strides[d] = base.size(d) == 1 ? 0 : base.stride(d);
  return base;
}

template <typename T>
cudaError_t launch_both(const FusedAttentionParams& p, cudaStream_t stream) {
  return satkern::cuda::launch_fused_attention<T>(p, stream);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> fused_attention_cuda(
    const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in, const at::Tensor& lengths_in,
    const std::optional<at::Tensor>& bias_in, const std::optional<at::Tensor>& head_mask_in,
    const std::optional<at::Tensor>& label_weights_in, double scale, int64_t span, bool renorm, bool want_entropy,
    bool want_distance, bool want_colmass, bool want_maxweight) {
  check_qkv(q_in, "q", q_in);
  check_qkv(k_in, "k", q_in);
  check_qkv(v_in, "v", q_in);
  const auto dtype = q_in.scalar_type();
  TORCH_CHECK(dtype == at::kHalf || dtype == at::kBFloat16 || dtype == at::kFloat,
              "satkern fused_attention (cuda): argument 'q' must be float16, bfloat16 or float32; got ", dtype);
  TORCH_CHECK(k_in.sizes() == q_in.sizes(), "satkern fused_attention (cuda): argument 'k' must have q's shape ",
              q_in.sizes(), "; got ", k_in.sizes());
  TORCH_CHECK(v_in.sizes() == q_in.sizes(), "satkern fused_attention (cuda): argument 'v' must have q's shape ",
              q_in.sizes(), "; got ", v_in.sizes());
  const int64_t B = q_in.size(0), H = q_in.size(1), T = q_in.size(2), D = q_in.size(3);
  TORCH_CHECK(satkern::cuda::supported_head_dim(static_cast<int>(D)),
              "satkern fused_attention (cuda): head dim D = ", D, " of argument 'q' has no compiled kernel (supported: ",
              satkern::cuda::supported_head_dims_text(), ")");
  TORCH_CHECK(B <= 65535 && H <= 65535, "satkern fused_attention (cuda): B and H must be <= 65535; got B = ", B,
              ", H = ", H);
  TORCH_CHECK(T <= INT32_MAX / 2, "satkern fused_attention (cuda): T = ", T, " is too large");
  TORCH_CHECK(lengths_in.dim() == 1 && lengths_in.size(0) == B,
              "satkern fused_attention (cuda): argument 'lengths' must have shape [B] = [", B, "]; got ",
              lengths_in.sizes());
  TORCH_CHECK(lengths_in.scalar_type() == at::kLong, "satkern fused_attention (cuda): argument 'lengths' must be int64; got ",
              lengths_in.scalar_type());
  TORCH_CHECK(lengths_in.device() == q_in.device(), "satkern fused_attention (cuda): argument 'lengths' must be on ",
              q_in.device(), "; got ", lengths_in.device());
  TORCH_CHECK(std::isfinite(scale), "satkern fused_attention (cuda): argument 'scale' must be finite; got ", scale);

  const c10::cuda::CUDAGuard guard(q_in.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();

  const at::Tensor q = last_dim_contiguous(q_in), k = last_dim_contiguous(k_in), v = last_dim_contiguous(v_in);
  const at::Tensor lengths = lengths_in.contiguous();

  FusedAttentionParams p;
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  for (int d = 0; d < 3; ++d) {
    p.q_stride[d] = q.stride(d);
    p.k_stride[d] = k.stride(d);
    p.v_stride[d] = v.stride(d);
  }
  p.B = static_cast<int>(B);
  p.H = static_cast<int>(H);
  p.T = static_cast<int>(T);
  p.D = static_cast<int>(D);
  p.scale = static_cast<float>(scale);
  p.span = span < 0 ? -1 : static_cast<int>(std::min<int64_t>(span, T));  // a span >= T masks nothing
  p.renorm = renorm;
  p.lengths = lengths.data_ptr<int64_t>();

  at::Tensor bias;
  if (bias_in.has_value() && bias_in->defined()) {
    const at::Tensor& bi = *bias_in;
    TORCH_CHECK(bi.device() == q.device(), "satkern fused_attention (cuda): argument 'bias' must be on ", q.device(),
                "; got ", bi.device());
    TORCH_CHECK(bi.dim() == 4 && bi.size(0) == B && bi.size(1) == H && bi.size(2) == T && bi.size(3) == T,
                "satkern fused_attention (cuda): argument 'bias' must be expanded to [B, H, T, T] = [", B, ", ", H,
                ", ", T, ", ", T, "]; got ", bi.sizes());
    TORCH_CHECK(at::isFloatingType(bi.scalar_type()),
                "satkern fused_attention (cuda): argument 'bias' must be floating point; got ", bi.scalar_type());
    bias = bias_as_float(bi, p.bias_stride);
    p.bias = bias.data_ptr<float>();
  }

  at::Tensor head_mask;
  if (head_mask_in.has_value() && head_mask_in->defined()) {
    const at::Tensor& hm = *head_mask_in;
    TORCH_CHECK(hm.device() == q.device(), "satkern fused_attention (cuda): argument 'head_mask' must be on ",
                q.device(), "; got ", hm.device());
    TORCH_CHECK(hm.dim() == 2 && hm.size(0) == B && hm.size(1) == H,
                "satkern fused_attention (cuda): argument 'head_mask' must have shape [B, H] = [", B, ", ", H,
                "]; got ", hm.sizes());
    head_mask = hm.to(at::kBool).contiguous();
    p.head_mask = reinterpret_cast<const uint8_t*>(head_mask.data_ptr<bool>());
  }

  const auto stat_opts = q.options().dtype(at::kFloat);
  at::Tensor out = at::empty({B, H, T, D}, q.options());
  at::Tensor lse = at::empty({B, H, T}, stat_opts);
  auto row_stat = [&](bool want) { return want ? at::empty({B, H, T}, stat_opts) : at::empty({0}, stat_opts); };
  at::Tensor entropy = row_stat(want_entropy), distance = row_stat(want_distance);
  at::Tensor colmass = row_stat(want_colmass), maxweight = row_stat(want_maxweight);
  at::Tensor label_mass = at::empty({0}, stat_opts);

  at::Tensor label_weights;
  if (label_weights_in.has_value() && label_weights_in->defined()) {
    const at::Tensor& lw = *label_weights_in;
    TORCH_CHECK(lw.device() == q.device(), "satkern fused_attention (cuda): argument 'label_weights' must be on ",
                q.device(), "; got ", lw.device());
    TORCH_CHECK(lw.dim() == 3 && lw.size(0) == B && lw.size(1) == T,
                "satkern fused_attention (cuda): argument 'label_weights' must have shape [B, T, L] = [", B, ", ", T,
                ", L]; got ", lw.sizes());
    TORCH_CHECK(at::isFloatingType(lw.scalar_type()),
                "satkern fused_attention (cuda): argument 'label_weights' must be floating point; got ",
                lw.scalar_type());
    const int64_t L = lw.size(2);
    TORCH_CHECK(L <= INT32_MAX, "satkern fused_attention (cuda): argument 'label_weights' has too many labels: ", L);
    label_weights = lw.to(at::kFloat).contiguous();
    label_mass = at::empty({B, H, T, L}, stat_opts);
    if (L > 0) {
      p.label_weights = label_weights.data_ptr<float>();
      for (int d = 0; d < 3; ++d) p.lw_stride[d] = label_weights.stride(d);
      p.label_mass = label_mass.data_ptr<float>();
      p.num_labels = static_cast<int>(L);
    }
  }

  if (const auto poison = poison_value()) {
    for (at::Tensor* t : {&out, &lse, &entropy, &distance, &colmass, &maxweight, &label_mass}) t->fill_(*poison);
  }

  p.out = out.data_ptr();
  for (int d = 0; d < 3; ++d) p.out_stride[d] = out.stride(d);
  p.lse = lse.data_ptr<float>();
  p.entropy = want_entropy ? entropy.data_ptr<float>() : nullptr;
  p.distance = want_distance ? distance.data_ptr<float>() : nullptr;
  p.colmass = want_colmass ? colmass.data_ptr<float>() : nullptr;
  p.maxweight = want_maxweight ? maxweight.data_ptr<float>() : nullptr;

  if (B * H * T > 0) {
    cudaError_t err = cudaSuccess;
    switch (dtype) {
      case at::kHalf: err = launch_both<__half>(p, stream); break;
      case at::kBFloat16: err = launch_both<__nv_bfloat16>(p, stream); break;
      default: err = launch_both<float>(p, stream); break;
    }
    C10_CUDA_CHECK(err);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {out, lse, entropy, distance, colmass, maxweight, label_mass};
}

}  // namespace

TORCH_LIBRARY_IMPL(satkern, CUDA, m) { m.impl("fused_attention", TORCH_FN(fused_attention_cuda)); }
