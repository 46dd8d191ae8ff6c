#include "bindings/register.hpp"

namespace fastcell::bindings {
void register_boxes(pybind11::module_& /*m*/) {}  // placeholder: filled by the boxes kernels
}  // namespace fastcell::bindings
