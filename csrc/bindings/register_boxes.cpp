// Bindings of the box kernels: box_iou, decode, nms, gbciou_merge, postprocess.
//
// Each function validates its arrays while holding the GIL (dtype, ndim, shape; non-contiguous,
// negative-stride or non-float32 inputs are converted to C-contiguous float32 copies, non-numeric
// ones refused), then releases the GIL around the core call and wraps the result in new arrays.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "bindings/register.hpp"
#include "core/decode.hpp"
#include "core/gbciou.hpp"
#include "core/nms.hpp"
#include "core/postprocess.hpp"

namespace py = pybind11;

namespace fastcell::bindings {
namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using Int64Array = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>;

// "(5, 3) float64": what arrived, for error messages.
std::string describe(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t d = 0; d < a.ndim(); ++d) s += (d ? ", " : "") + std::to_string(a.shape(d));
  if (a.ndim() == 1) s += ",";
  return s + ") " + std::string(py::str(a.dtype()));
}

// What an argument must be, for error messages: `name` and `expected` are callables returning the
// strings (or plain strings), called only when an error is raised. These checks run for every call,
// and building the messages up front cost more than the checks.
template <typename T>
std::string text(const T& t) {
  if constexpr (std::is_invocable_v<const T&>) {
    return std::string(t());
  } else {
    return std::string(t);
  }
}

// obj as an ndarray of real numbers (float or integer), else TypeError naming what was expected.
template <typename Name, typename Expected>
py::array real_array(py::handle obj, const Name& name, const Expected& expected, bool integers_only = false) {
  py::array a = py::array::ensure(obj);
  if (!a) {
    const std::string got = py::str(py::type::of(obj));
    throw py::type_error(text(name) + " must be " + text(expected) + ", got " + got);
  }
  const char kind = a.dtype().kind();
  const bool ok = integers_only ? (kind == 'i' || kind == 'u') : (kind == 'f' || kind == 'i' || kind == 'u');
  if (!ok) throw py::type_error(text(name) + " must be " + text(expected) + ", got " + describe(a));
  return a;
}

template <typename Name, typename Expected>
void require(bool ok, const Name& name, const Expected& expected, const py::array& a) {
  if (!ok) throw py::value_error(text(name) + " must be " + text(expected) + ", got " + describe(a));
}

// An (N, 4) array of boxes as C-contiguous float32 (a copy only when it is not one already).
// An empty list (shape (0,)) means no boxes, as for segment_cells.
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

double finite(double v, const char* name) {
  if (!std::isfinite(v)) throw py::value_error(std::string(name) + " must be a finite number, got " + std::to_string(v));
  return v;
}

core::MergeMode merge_mode(const std::string& mode) {
  if (mode == "multi") return core::MergeMode::multi;
  if (mode == "single") return core::MergeMode::single;
  if (mode == "none") return core::MergeMode::none;
  throw py::value_error("merge mode must be 'multi', 'single' or 'none', got '" + mode + "'");
}

template <typename T>
py::array_t<T> to_numpy(const std::vector<T>& v, std::vector<py::ssize_t> shape) {
  py::array_t<T> a(shape);
  if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(T));
  return a;
}

py::tuple to_numpy(const core::Detections& d) {
  const auto k = static_cast<py::ssize_t>(d.size());
  return py::make_tuple(to_numpy(d.boxes, {k, 4}), to_numpy(d.scores, {k}), to_numpy(d.class_ids, {k}));
}

// The arrays behind the views must outlive the core call, so they travel together.
struct Heads {
  std::vector<FloatArray> arrays, anchors;
  std::vector<core::HeadView> views;
};

Heads parse_heads(py::handle heads, py::handle strides, py::handle anchors) {
  auto seq = [](py::handle obj, const char* name, const char* expected) {
    if (!py::isinstance<py::sequence>(obj) || py::isinstance<py::str>(obj))
      throw py::type_error(std::string(name) + " must be " + expected + ", got " + std::string(py::str(py::type::of(obj))));
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
    require(anc.ndim() == 2 && anc.shape(1) == 2 && anc.shape(0) >= 1, aname, anchor_shape, anc);
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

py::array_t<float> box_iou(py::handle a_obj, py::handle b_obj) {
  const FloatArray a = boxes_array(a_obj, "a"), b = boxes_array(b_obj, "b");
  const auto n = static_cast<std::size_t>(a.shape(0)), m = static_cast<std::size_t>(b.shape(0));
  py::array_t<float> out({a.shape(0), b.shape(0)});
  float* dst = out.mutable_data();
  {
    // Safe without the GIL: a, b and out are owned references kept alive by this frame, and the
    // core touches no Python object. (Another thread writing into a or b meanwhile is a data race in
    // the caller's program, as with any NumPy function that releases the GIL.)
    py::gil_scoped_release release;
    core::check_finite_boxes(a.data(), nullptr, n);
    core::check_finite_boxes(b.data(), nullptr, m);
    core::box_iou(a.data(), n, b.data(), m, dst);
  }
  return out;
}

py::list decode(py::handle heads, py::handle strides, py::handle anchors, int num_classes, double score_threshold) {
  finite(score_threshold, "score_threshold");
  const Heads h = parse_heads(heads, strides, anchors);
  std::vector<core::Detections> dets;
  {
    py::gil_scoped_release release;  // safe: h owns the arrays the views point into (see box_iou)
    dets = core::decode(h.views, num_classes, score_threshold);
  }
  py::list out;
  for (const auto& d : dets) out.append(to_numpy(d));
  return out;
}

py::array_t<std::int64_t> nms(py::handle boxes_obj, py::handle scores_obj, double iou_threshold, py::handle class_ids_obj) {
  const FloatArray boxes = boxes_array(boxes_obj, "boxes");
  const FloatArray scores = vector_array(scores_obj, "scores", boxes.shape(0));
  const float thr = static_cast<float>(finite(iou_threshold, "iou_threshold"));
  std::vector<std::int32_t> ids;
  if (!class_ids_obj.is_none()) ids = class_ids_vector(class_ids_obj, boxes.shape(0));
  const std::int32_t* ids_ptr = class_ids_obj.is_none() ? nullptr : ids.data();
  std::vector<std::int64_t> keep;
  {
    py::gil_scoped_release release;  // safe: boxes, scores and ids live in this frame (see box_iou)
    const auto n = static_cast<std::size_t>(boxes.shape(0));
    core::check_finite_boxes(boxes.data(), scores.data(), n);
    keep = core::nms(boxes.data(), scores.data(), ids_ptr, n, thr);
  }
  return to_numpy(keep, {static_cast<py::ssize_t>(keep.size())});
}

py::tuple gbciou_merge(py::handle boxes_obj, py::handle scores_obj, py::handle class_ids_obj, double threshold,
                       const std::string& mode, double merge_iou) {
  const FloatArray boxes = boxes_array(boxes_obj, "boxes");
  const FloatArray scores = vector_array(scores_obj, "scores", boxes.shape(0));
  std::vector<std::int32_t> ids;
  if (!class_ids_obj.is_none()) ids = class_ids_vector(class_ids_obj, boxes.shape(0));
  const std::int32_t* ids_ptr = class_ids_obj.is_none() ? nullptr : ids.data();
  core::MergeOptions options{merge_mode(mode), finite(threshold, "threshold"),
                             static_cast<float>(finite(merge_iou, "merge_iou"))};
  core::Detections merged;
  {
    py::gil_scoped_release release;  // safe: boxes, scores and ids live in this frame (see box_iou)
    const auto n = static_cast<std::size_t>(boxes.shape(0));
    core::check_finite_boxes(boxes.data(), scores.data(), n);
    merged = core::gbciou_merge(boxes.data(), scores.data(), ids_ptr, n, options);
  }
  return to_numpy(merged);
}

py::list postprocess(py::handle heads, py::handle params_obj, py::handle strides, py::handle anchors, int num_classes,
                     double score_threshold, double nms_iou, const std::string& merge, double gbciou, double merge_iou,
                     bool class_agnostic, std::optional<py::ssize_t> max_detections) {
  const Heads h = parse_heads(heads, strides, anchors);
  const py::ssize_t batch = h.views.front().batch;
  auto expected = [batch] { return "(" + std::to_string(batch) + ", 5) float32 [scale, pad_x, pad_y, width, height]"; };
  py::array p = real_array(params_obj, "params", expected);
  if (p.ndim() == 1 && batch == 1) p = p.attr("reshape")(1, -1);  // one image: a (5,) row is fine
  require(p.ndim() == 2 && p.shape(0) == batch && p.shape(1) == 5, "params", expected, p);
  const FloatArray params = FloatArray::ensure(p);
  std::vector<core::LetterboxParams> rows(static_cast<std::size_t>(batch));
  for (py::ssize_t i = 0; i < batch; ++i) {
    const float* r = params.data() + 5 * i;
    rows[static_cast<std::size_t>(i)] = core::LetterboxParams{r[0], r[1], r[2], r[3], r[4]};
  }
  if (max_detections && *max_detections < 1)
    throw py::value_error("max_detections must be >= 1 or None, got " + std::to_string(*max_detections));
  core::PostprocessOptions options;
  options.num_classes = num_classes;
  options.score_threshold = finite(score_threshold, "score_threshold");
  options.nms_iou = static_cast<float>(finite(nms_iou, "nms_iou"));
  options.merge = core::MergeOptions{merge_mode(merge), finite(gbciou, "gbciou"),
                                     static_cast<float>(finite(merge_iou, "merge_iou"))};
  options.class_agnostic = class_agnostic;
  options.max_detections = max_detections ? static_cast<std::size_t>(*max_detections)
                                          : std::numeric_limits<std::size_t>::max();
  std::vector<core::Detections> dets;
  {
    py::gil_scoped_release release;  // safe: h and rows own everything the core reads (see box_iou)
    dets = core::postprocess(h.views, rows.data(), options);
  }
  py::list out;
  for (const auto& d : dets) out.append(to_numpy(d));
  return out;
}

}  // namespace

void register_boxes(py::module_& m) {
  using namespace pybind11::literals;
  m.def("box_iou", &box_iou, "a"_a, "b"_a, "Pairwise IoU (N, M) float32 of (N, 4) and (M, 4) corner boxes.");
  m.def("decode", &decode, "heads"_a, "strides"_a, "anchors"_a, "num_classes"_a, "score_threshold"_a,
        "YOLOv3 heads → per image (boxes, scores, class_ids) in network-input pixels.");
  m.def("nms", &nms, "boxes"_a, "scores"_a, "iou_threshold"_a, "class_ids"_a = py::none(),
        "Greedy NMS: kept indices (int64) by descending score, ties by index.");
  m.def("gbciou_merge", &gbciou_merge, "boxes"_a, "scores"_a, "class_ids"_a, "threshold"_a = 0.5,
        "mode"_a = "multi", "merge_iou"_a = 0.5, "GBCIOU merging (the paper's Algorithm 3).");
  m.def("postprocess", &postprocess, "heads"_a, "params"_a, "strides"_a, "anchors"_a, "num_classes"_a,
        "score_threshold"_a = 0.25, "nms_iou"_a = 0.45, "merge"_a = "multi", "gbciou"_a = 0.5, "merge_iou"_a = 0.5,
        "class_agnostic"_a = false, "max_detections"_a = 300,
        "decode → NMS → GBCIOU → letterbox mapping → clip → cap, for a batch, in one call.");
}

}  // namespace fastcell::bindings
