// Vector helpers shared by the CPU forward's row pass (row_vec.inc.h, compiled once per instruction
// set) and the CPU backward (attention_cpu_backward.cpp). Definitions only, no namespace of its
// own: each includes this file inside its own (anonymous) namespace after <ATen/cpu/vec/vec.h>, so
// every instruction-set build gets its own copy and none shares a symbol.

inline at::vec::Vectorized<float> vexp(const at::vec::Vectorized<float>& x) {
  // exp_u20: ATen's polynomial exp (max 20 ulp), the one ATen's CPU flash attention uses.
  // Arguments here are <= 0 (scores minus their row maximum or log-sum-exp) and never NaN.
  return x.exp_u20();
}
inline at::vec::Vectorized<double> vexp(const at::vec::Vectorized<double>& x) { return x.exp(); }

template <typename T>
inline T hsum(const at::vec::Vectorized<T>& v) {
  alignas(64) T buf[at::vec::Vectorized<T>::size()];
  v.store(buf);
  T s = 0;
  for (int i = 0; i < at::vec::Vectorized<T>::size(); ++i) s += buf[i];
  return s;
}
