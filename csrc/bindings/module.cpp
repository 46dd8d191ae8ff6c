#include "bindings/register.hpp"

PYBIND11_MODULE(_core, m) {
  m.doc() = "fastcell's compiled core (C++17, optional CUDA). Use fastcell.ops, not this module.";
  fastcell::bindings::register_info(m);
  fastcell::bindings::register_boxes(m);
  fastcell::bindings::register_image(m);
  fastcell::bindings::register_cuda(m);
  fastcell::bindings::register_cuda_device(m);
}
