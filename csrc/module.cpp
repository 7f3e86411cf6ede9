// The Python module satkern._C. Importing it runs the static TORCH_LIBRARY_IMPL
// registrations of every kernel compiled into it; the op schemas themselves are
// declared once, in Python (satkern/ops/schema.py), which imports this module.
#include <torch/extension.h>

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "satkern compiled kernels (registered as torch.ops.satkern.*)";
#ifdef SATKERN_WITH_CUDA
  m.attr("WITH_CUDA") = true;
#else
  m.attr("WITH_CUDA") = false;
#endif
}
