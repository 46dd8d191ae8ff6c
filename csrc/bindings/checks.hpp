// Argument checks shared by the CPU and CUDA bindings, so both refuse the same input with the same
// message (the CUDA ones check before touching a device, so this holds on machines without one).
#pragma once
#include <pybind11/pybind11.h>

#include <string>

#include "core/circle_mask.hpp"

namespace fastcell::bindings {

constexpr int kMaxSize = 16384;  // a letterbox output is 3·size² floats; past this it is surely a mistake

inline int checked_size(long long size) {
  if (size < 1 || size > kMaxSize) {
    throw pybind11::value_error("size must be in [1, " + std::to_string(kMaxSize) + "], got " + std::to_string(size));
  }
  return static_cast<int>(size);
}

inline float checked_pad(double pad_value) {
  if (!(pad_value >= 0.0 && pad_value <= 255.0)) {
    throw pybind11::value_error("pad_value must be in [0, 255] (8-bit units), got " + std::to_string(pad_value));
  }
  return static_cast<float>(pad_value);
}

inline core::DiscShape disc_shape(const std::string& disc) {
  if (disc == "circle") return core::DiscShape::circle;
  if (disc == "ellipse") return core::DiscShape::ellipse;
  throw pybind11::value_error("disc must be 'circle' or 'ellipse', got '" + disc + "'");
}

}  // namespace fastcell::bindings
