// Bindings of the box kernels: box_iou, decode, nms, gbciou_merge, postprocess.
//
// Each function validates its arrays while holding the GIL (dtype, ndim, shape; non-contiguous,
// negative-stride or non-float32 inputs are converted to C-contiguous float32 copies, non-numeric
// ones refused), then releases the GIL around the core call and wraps the result in new arrays.
// The checks and conversions live in checks.hpp, shared with the CUDA twins' bindings.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "bindings/checks.hpp"
#include "bindings/register.hpp"
#include "core/decode.hpp"
#include "core/gbciou.hpp"
#include "core/nms.hpp"
#include "core/postprocess.hpp"

namespace py = pybind11;

namespace fastcell::bindings {
namespace {

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

py::list decode(py::handle heads, py::handle strides, py::handle anchors, long long num_classes,
               double score_threshold) {
  finite(score_threshold, "score_threshold");
  const Heads h = parse_heads(heads, strides, anchors);
  const int classes = checked_num_classes(num_classes);
  std::vector<core::Detections> dets;
  {
    py::gil_scoped_release release;  // safe: h owns the arrays the views point into (see box_iou)
    dets = core::decode(h.views, classes, score_threshold);
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

py::list postprocess(py::handle heads, py::handle params_obj, py::handle strides, py::handle anchors,
                     long long num_classes,
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
  options.num_classes = checked_num_classes(num_classes);
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
  m.attr("MAX_COORDINATE") = static_cast<double>(core::kMaxCoordinate);
  m.attr("MAX_ANCHOR") = static_cast<double>(core::kMaxAnchor);
  m.attr("MAX_CLASSES") = core::kMaxClasses;
  m.def("box_iou", &box_iou, "a"_a, "b"_a, "Pairwise IoU (N, M) float32 of (N, 4) and (M, 4) corner boxes.");
  m.def("decode", &decode, "heads"_a, "strides"_a, "anchors"_a, "num_classes"_a, "score_threshold"_a,
        "YOLOv3 heads → per image (boxes, scores, class_ids) in network-input pixels.");
  m.def("nms", &nms, "boxes"_a, "scores"_a, "iou_threshold"_a, "class_ids"_a = py::none(),
        "Greedy NMS: kept indices (int64) by descending score, ties by index.");
  m.def("gbciou_merge", &gbciou_merge, "boxes"_a, "scores"_a, "class_ids"_a, "threshold"_a,
        "mode"_a, "merge_iou"_a, "GBCIOU merging (the paper's Algorithm 3).");
  m.def("postprocess", &postprocess, "heads"_a, "params"_a, "strides"_a, "anchors"_a, "num_classes"_a,
        // no defaults here: the Python wrappers (fastcell.ops) pass fastcell.defaults' values
        "score_threshold"_a, "nms_iou"_a, "merge"_a, "gbciou"_a, "merge_iou"_a, "class_agnostic"_a, "max_detections"_a,
        "decode → NMS → GBCIOU → letterbox mapping → clip → cap, for a batch, in one call.");
}

}  // namespace fastcell::bindings
