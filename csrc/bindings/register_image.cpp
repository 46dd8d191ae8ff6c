#include "bindings/register.hpp"

namespace fastcell::bindings {
void register_image(pybind11::module_& /*m*/) {}  // placeholder: filled by the image kernels
}  // namespace fastcell::bindings
