// One registration function per area; module.cpp only calls them (boost-histogram style).
#pragma once
#include <pybind11/pybind11.h>

namespace fastcell::bindings {
void register_info(pybind11::module_& m);   // register_info.cpp: build facts for sys_info()
void register_boxes(pybind11::module_& m);  // register_boxes.cpp: decode, nms, gbciou, postprocess
void register_image(pybind11::module_& m);  // register_image.cpp: letterbox, circle/HSV segmentation
void register_cuda(pybind11::module_& m);   // register_cuda.cpp: CUDA twins (device count only without CUDA)
void register_cuda_device(pybind11::module_& m);  // register_cuda_device.cpp: device-pointer entries (CUDA only)
}  // namespace fastcell::bindings
