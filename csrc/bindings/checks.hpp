// Argument checks and result conversions shared by the CPU and CUDA bindings, so both refuse the same
// input with the same message and hand back the same arrays. The CUDA bindings check before touching
// a device, so this holds on machines without one (tests/test_cuda_math.py compares the messages).
//
// Checks run while the GIL is held; arrays they return are owned references (or owned copies) that
// stay valid after the GIL is released, as long as the caller keeps them.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "core/circle_mask.hpp"
#include "core/decode.hpp"
#include "core/types.hpp"

namespace fastcell::bindings {

using FloatArray = pybind11::array_t<float, pybind11::array::c_style | pybind11::array::forcecast>;

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

// --- what arrived and what was expected, for messages --------------------------------------------------

// "(5, 3) float64" for an array, the type's name ("str", "NoneType") for anything else.
std::string describe(pybind11::handle obj);

// What an argument must be: `name` and `expected` are callables returning the strings (or plain
// strings), called only when an error is raised. The checks run for every call (every frame), and
// building the messages up front cost more than the checks.
template <typename T>
std::string text(const T& t) {
  if constexpr (std::is_invocable_v<const T&>) {
    return std::string(t());
  } else {
    return std::string(t);
  }
}

// obj as an ndarray of real numbers (float or integer; integers only when `integers_only`), else a
// TypeError naming what was expected and what arrived.
template <typename Name, typename Expected>
pybind11::array real_array(pybind11::handle obj, const Name& name, const Expected& expected,
                           bool integers_only = false) {
  pybind11::array a = pybind11::array::ensure(obj);
  if (!a) {
    throw pybind11::type_error(text(name) + " must be " + text(expected) + ", got " + describe(obj));
  }
  const char kind = a.dtype().kind();
  const bool ok = integers_only ? (kind == 'i' || kind == 'u') : (kind == 'f' || kind == 'i' || kind == 'u');
  if (!ok) throw pybind11::type_error(text(name) + " must be " + text(expected) + ", got " + describe(a));
  return a;
}

template <typename Name, typename Expected>
void require(bool ok, const Name& name, const Expected& expected, const pybind11::array& a) {
  if (!ok) throw pybind11::value_error(text(name) + " must be " + text(expected) + ", got " + describe(a));
}

// --- numbers and names ------------------------------------------------------------------------------

// v itself, or ValueError "<name> must be a finite number, got nan".
double finite(double v, const char* name);

// num_classes in [1, core::kMaxClasses] as an int (the core's range and message; taken as a 64-bit
// integer so 2**31 is a ValueError too, not pybind11's "incompatible function arguments").
int checked_num_classes(long long num_classes);

// "multi", "single" or "none" (GBCIOU merging, see core/gbciou.hpp).
core::MergeMode merge_mode(const std::string& mode);

// Three integers, each in [0, high[i]]: HSV bounds and BGR fill colours.
std::array<std::uint8_t, 3> triple(pybind11::handle obj, const char* name, std::array<int, 3> high);

// An HSV range in OpenCV's 8-bit units (H 0..179, 180 accepted as an upper bound; S, V 0..255), or a
// disabled one when both are None. `suffix` names the frame in a batch's messages ("[2]").
core::HsvRange hsv_range(const pybind11::object& low, const pybind11::object& high, const std::string& suffix = "");

// --- boxes -----------------------------------------------------------------------------------------

// An (N, 4) array of boxes as C-contiguous float32 (a copy only when it is not one already). An empty
// list (shape (0,)) means no boxes, as for segment_cells. Values are checked later, by the core
// (check_finite_boxes), without the GIL.
FloatArray boxes_array(pybind11::handle obj, const char* name);

// An (n,) array (one value per box) as C-contiguous float32.
FloatArray vector_array(pybind11::handle obj, const char* name, pybind11::ssize_t n);

// (n,) integer class ids, each fitting int32.
std::vector<std::int32_t> class_ids_vector(pybind11::handle obj, pybind11::ssize_t n);

// --- YOLO heads ------------------------------------------------------------------------------------

// The arrays behind the views: they must outlive the core call, so they travel together. A CUDA
// caller uploads each array and points its view at the device copy.
struct Heads {
  std::vector<FloatArray> arrays, anchors;
  std::vector<core::HeadView> views;
};

// heads, strides and anchors as parallel lists: types, ndim and shapes (the core checks the rest:
// channel counts, batch sizes, ranges and values).
Heads parse_heads(pybind11::handle heads, pybind11::handle strides, pybind11::handle anchors);

// --- results ---------------------------------------------------------------------------------------

template <typename T>
pybind11::array_t<T> to_numpy(const std::vector<T>& v, std::vector<pybind11::ssize_t> shape) {
  pybind11::array_t<T> a(shape);
  if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(T));
  return a;
}

// (boxes (K, 4) float32, scores (K,) float32, class_ids (K,) int32).
pybind11::tuple to_numpy(const core::Detections& d);

}  // namespace fastcell::bindings
