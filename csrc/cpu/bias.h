// The additive bias as the CPU forward (attention_cpu.cpp) and backward (attention_cpu_backward.cpp)
// read it: through its strides, never materializing the broadcast to [B, H, T, T].
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace satkern {
namespace cpu {

// `bias` (broadcastable to [B, H, T, T]) viewed as [B|1, H|1, T|1, T|1]: expanded, then every
// broadcast dimension (size > 1, stride 0) narrowed back to size 1, so that a dtype conversion to
// `acc` copies the compact tensor only. `strides` receives the element stride of each dimension,
// 0 where the size is 1 (the reader indexes b * strides[0] + h * strides[1] + ...).
inline at::Tensor compact_bias(const at::Tensor& bias, int64_t B, int64_t H, int64_t T, at::ScalarType acc,
                               int64_t strides[4]) {
  at::Tensor bb = bias.expand({B, H, T, T});
  for (int d = 0; d < 4; ++d)
    if (bb.size(d) > 1 && bb.stride(d) == 0) bb = bb.narrow(d, 0, 1);
  if (bb.scalar_type() != acc) bb = bb.to(acc);
  for (int d = 0; d < 4; ++d) strides[d] = bb.size(d) == 1 ? 0 : bb.stride(d);
  return bb;
}

}  // namespace cpu
}  // namespace satkern
