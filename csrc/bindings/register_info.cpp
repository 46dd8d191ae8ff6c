#include "bindings/register.hpp"
#include "core/build_info.hpp"
#include "core/simd.hpp"

#include <stdexcept>
#include <string>

namespace py = pybind11;

namespace fastcell::bindings {
namespace {
const char* simd_name(core::Simd level) {
  switch (level) {
    case core::Simd::avx512: return "avx512";
    case core::Simd::avx2: return "avx2";
    default: return "portable";
  }
}

void set_simd_limit(const std::string& name) {
  if (name == "avx512") return core::set_simd_limit(core::Simd::avx512);
  if (name == "avx2") return core::set_simd_limit(core::Simd::avx2);
  if (name == "portable") return core::set_simd_limit(core::Simd::portable);
  throw py::value_error("simd limit must be 'avx512', 'avx2' or 'portable', got '" + name + "'");
}
}  // namespace

void register_info(py::module_& m) {
#ifdef FASTCELL_VERSION
  m.attr("__version__") = FASTCELL_VERSION;
#else
  m.attr("__version__") = "dev";
#endif
  m.def("has_cuda", &core::has_cuda, "True when the CUDA kernels were compiled in.");
  m.def("compiler", &core::compiler, "The C++ compiler and version that built the core.");
  m.def("cpu_simd", [] { return simd_name(core::cpu_simd()); },
        "The best instruction-set level of the CPU kernels this CPU runs: 'avx512', 'avx2' or 'portable'.");
  m.def("simd", [] { return simd_name(core::simd()); }, "The level the CPU kernels use now (cpu_simd, capped).");
  m.def("set_simd_limit", &set_simd_limit, py::arg("limit"),
        "Cap the CPU kernels' instruction-set level ('avx512' removes the cap). Results do not change.");
}
}  // namespace fastcell::bindings
