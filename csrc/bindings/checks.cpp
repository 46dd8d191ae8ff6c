// The shared argument checks and result conversions of checks.hpp.
#include "bindings/checks.hpp"

#include <pybind11/stl.h>  // triple() casts a sequence to std::vector

#include <cmath>
#include <limits>
#include <sstream>

namespace py = pybind11;

namespace fastcell::bindings {

std::string describe(py::handle obj) {
  if (!py::isinstance<py::array>(obj)) return std::string(py::str(py::type::of(obj).attr("__name__")));
  const auto a = py::reinterpret_borrow<py::array>(obj);
  std::ostringstream s;
  s << "(";
  for (py::ssize_t d = 0; d < a.ndim(); ++d) s << (d ? ", " : "") << a.shape(d);
  if (a.ndim() == 1) s << ",";
  s << ") " << std::string(py::str(a.dtype()));
  return s.str();
}

double finite(double v, const char* name) {
  if (!std::isfinite(v)) throw py::value_error(std::string(name) + " must be a finite number, got " + std::to_string(v));
  return v;
}

int checked_num_classes(long long num_classes) {
  if (num_classes < 1 || num_classes > core::kMaxClasses)
    throw py::value_error("num_classes must be in [1, " + std::to_string(core::kMaxClasses) + "], got " +
                          std::to_string(num_classes));
  return static_cast<int>(num_classes);
}

core::MergeMode merge_mode(const std::string& mode) {
  if (mode == "multi") return core::MergeMode::multi;
  if (mode == "single") return core::MergeMode::single;
  if (mode == "none") return core::MergeMode::none;
  throw py::value_error("merge mode must be 'multi', 'single' or 'none', got '" + mode + "'");
}

std::array<std::uint8_t, 3> triple(py::handle obj, const char* name, std::array<int, 3> high) {
  auto expected = [&] {  // built only on failure
    return std::string(name) + " must be 3 integers within (" + std::to_string(high[0]) + ", " +
           std::to_string(high[1]) + ", " + std::to_string(high[2]) + "), got " + std::string(py::repr(obj));
  };
  std::vector<long long> v;
  try {
    v = obj.cast<std::vector<long long>>();
  } catch (const py::cast_error&) {
    throw py::type_error(expected());
  }
  if (v.size() != 3) throw py::value_error(expected());
  std::array<std::uint8_t, 3> t{};
  for (std::size_t i = 0; i < 3; ++i) {
    if (v[i] < 0 || v[i] > high[i]) throw py::value_error(expected());
    t[i] = static_cast<std::uint8_t>(v[i]);
  }
  return t;
}

core::HsvRange hsv_range(const py::object& low, const py::object& high, const std::string& suffix) {
  core::HsvRange r;
  if (low.is_none() && high.is_none()) return r;
  if (low.is_none() || high.is_none()) {
    throw py::value_error("hsv_low" + suffix + " and hsv_high" + suffix + " must both be given or both be None");
  }
  // Hue is 0..179 in OpenCV's 8-bit HSV; 180 is accepted as an upper bound that excludes nothing.
  const auto lo = triple(low, ("hsv_low" + suffix).c_str(), {180, 255, 255});
  const auto hi = triple(high, ("hsv_high" + suffix).c_str(), {180, 255, 255});
  r.enabled = true;
  for (int i = 0; i < 3; ++i) {
    r.low[i] = lo[static_cast<std::size_t>(i)];
    r.high[i] = hi[static_cast<std::size_t>(i)];
  }
  return r;
}

FloatArray boxes_array(py::handle obj, const char* name) {
  const char* expected = "(N, 4) float32";
  py::array a = real_array(obj, name, expected);
  if (a.ndim() == 1 && a.shape(0) == 0) a = a.attr("reshape")(0, 4);
  require(a.ndim() == 2 && a.shape(1) == 4, name, expected, a);
  return FloatArray::ensure(a);
}

FloatArray vector_array(py::handle obj, const char* name, py::ssize_t n) {
  auto expected = [n] { return "(" + std::to_string(n) + ",) float32 (one per box)"; };
  py::array a = real_array(obj, name, expected);
  require(a.ndim() == 1 && a.shape(0) == n, name, expected, a);
  return FloatArray::ensure(a);
}

std::vector<std::int32_t> class_ids_vector(py::handle obj, py::ssize_t n) {
  using Int64Array = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>;
  auto expected = [n] { return "(" + std::to_string(n) + ",) int32 (one per box)"; };
  // An empty list arrives as float64 (0,): with no values there is nothing non-integer to refuse.
  const py::array probe = py::array::ensure(obj);
  const bool empty = probe && probe.size() == 0;
  py::array a = real_array(obj, "class_ids", expected, /*integers_only=*/!empty);
  require(a.ndim() == 1 && a.shape(0) == n, "class_ids", expected, a);
  Int64Array wide = Int64Array::ensure(a);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
  for (py::ssize_t i = 0; i < n; ++i) {
    const std::int64_t v = wide.data()[i];
    if (v < std::numeric_limits<std::int32_t>::min() || v > std::numeric_limits<std::int32_t>::max())
      throw py::value_error("class_ids[" + std::to_string(i) + "] = " + std::to_string(v) + " does not fit in int32");
    ids[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(v);
  }
  return ids;
}

Heads parse_heads(py::handle heads, py::handle strides, py::handle anchors) {
  auto seq = [](py::handle obj, const char* name, const char* expected) {
    if (!py::isinstance<py::sequence>(obj) || py::isinstance<py::str>(obj))
      throw py::type_error(std::string(name) + " must be " + expected + ", got " + describe(obj));
    return py::reinterpret_borrow<py::sequence>(obj);
  };
  const py::sequence hs = seq(heads, "heads", "a list of (N, 3·(C+5), H, W) float32 arrays");
  const py::sequence ss = seq(strides, "strides", "a list of numbers, one per head");
  const py::sequence as = seq(anchors, "anchors", "a list of (3, 2) float32 arrays, one per head");
  // Refused here, before anything reads heads[0] (postprocess takes the batch size from it).
  if (hs.size() == 0) throw py::value_error("heads must hold at least one head output, got an empty list");
  if (ss.size() != hs.size() || as.size() != hs.size())
    throw py::value_error("heads, strides and anchors must have one entry per head, got " + std::to_string(hs.size()) +
                          ", " + std::to_string(ss.size()) + " and " + std::to_string(as.size()));
  Heads out;
  for (std::size_t h = 0; h < hs.size(); ++h) {
    auto hname = [h] { return "heads[" + std::to_string(h) + "]"; };
    auto aname = [h] { return "anchors[" + std::to_string(h) + "]"; };
    const char* head_shape = "(N, 3·(C+5), H, W) float32";
    const char* anchor_shape = "(A, 2) float32 (anchor width, height in pixels)";
    py::array head = real_array(hs[h], hname, head_shape);
    require(head.ndim() == 4, hname, head_shape, head);
    py::array anc = real_array(as[h], aname, anchor_shape);
    require(anc.ndim() == 2 && anc.shape(1) == 2 && anc.shape(0) >= 1 && anc.shape(0) <= INT32_MAX / 2, aname,
            anchor_shape, anc);
    out.arrays.push_back(FloatArray::ensure(head));
    out.anchors.push_back(FloatArray::ensure(anc));
    core::HeadView v;
    v.data = out.arrays.back().data();
    v.batch = head.shape(0);
    v.channels = head.shape(1);
    v.height = head.shape(2);
    v.width = head.shape(3);
    double stride = 0.0;
    try {
      stride = py::cast<double>(ss[h]);
    } catch (const py::cast_error&) {
      throw py::type_error("strides[" + std::to_string(h) + "] must be a number, got " +
                           std::string(py::repr(ss[h])));
    }
    v.stride = static_cast<float>(stride);
    v.anchors = out.anchors.back().data();
    v.num_anchors = static_cast<int>(anc.shape(0));
    out.views.push_back(v);
  }
  return out;
}

py::tuple to_numpy(const core::Detections& d) {
  const auto k = static_cast<py::ssize_t>(d.size());
  return py::make_tuple(to_numpy(d.boxes, {k, 4}), to_numpy(d.scores, {k}), to_numpy(d.class_ids, {k}));
}

}  // namespace fastcell::bindings
