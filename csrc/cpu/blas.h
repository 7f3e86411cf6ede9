// Row-major GEMM on the BLAS that libtorch_cpu exports (MKL or OpenBLAS expose the
// Fortran symbols), shared by the CPU forward (attention_cpu.cpp) and backward
// (attention_cpu_backward.cpp). The symbols are declared weak: a torch build that does not export
// them falls back to at::mm / plain loops.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <type_traits>

extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
            const float* beta, float* c, const int* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const double* alpha, const double* a, const int* lda, const double* b, const int* ldb,
            const double* beta, double* c, const int* ldc) __attribute__((weak));
}

namespace satkern {
namespace blas {

template <typename T>
inline bool have_gemm() {
  if constexpr (std::is_same_v<T, float>) return sgemm_ != nullptr;
  else return dgemm_ != nullptr;
}

// Row-major:  C[M,N] (ldc) = alpha * op(A) op(B) + beta * C
//   op(A) = A (stored [M,K], lda) or, with trans_a, A^T (A stored [K,M]);
//   op(B) = B (stored [K,N], ldb) or, with trans_b, B^T (B stored [N,K]).
// Column-major BLAS computes C^T = op(B)^T op(A)^T. beta == 0 never reads C.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == T(0) ? T(0) : beta * C[i * ldc + j];
    return;
  }
  if (have_gemm<T>()) {
    const char ta = trans_b ? 'T' : 'N', tb = trans_a ? 'T' : 'N';
    const int m = (int)N, n = (int)M, k = (int)K, la = (int)ldb, lb = (int)lda, lc = (int)ldc;
    if constexpr (std::is_same_v<T, float>) sgemm_(&ta, &tb, &m, &n, &k, &alpha, B, &la, A, &lb, &beta, C, &lc);
    else dgemm_(&ta, &tb, &m, &n, &k, &alpha, B, &la, A, &lb, &beta, C, &lc);
    return;
  }
  auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  at::Tensor a = trans_a ? at::from_blob(const_cast<T*>(A), {K, M}, {lda, 1}, opts).t()
                         : at::from_blob(const_cast<T*>(A), {M, K}, {lda, 1}, opts);
  at::Tensor b = trans_b ? at::from_blob(const_cast<T*>(B), {N, K}, {ldb, 1}, opts).t()
                         : at::from_blob(const_cast<T*>(B), {K, N}, {ldb, 1}, opts);
  at::Tensor c = at::from_blob(C, {M, N}, {ldc, 1}, opts);
  at::Tensor prod = at::mm(a, b).mul_(alpha);
  if (beta == T(0)) c.copy_(prod);
  else c.mul_(beta).add_(prod);
}

}  // namespace blas
}  // namespace satkern
