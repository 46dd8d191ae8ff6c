#include "bindings/register.hpp"
#include "core/build_info.hpp"

namespace py = pybind11;

namespace fastcell::bindings {
void register_info(py::module_& m) {
#ifdef FASTCELL_VERSION
  m.attr("__version__") = FASTCELL_VERSION;
#else
  m.attr("__version__") = "dev";
#endif
  m.def("has_cuda", &core::has_cuda, "True when the CUDA kernels were compiled in.");
  m.def("compiler", &core::compiler, "The C++ compiler and version that built the core.");
}
}  // namespace fastcell::bindings
