// Bindings of the CUDA twins (csrc/cuda/api.hpp): device facts, host-array round trips used by the
// GPU tests and benchmarks to compare the twins with the CPU core, and one device-pointer entry
// (letterbox of frames already on the GPU into a TensorRT input buffer).
//
// Built without CUDA, this registers only cuda_device_count() (always 0) and cuda_runtime_version()
// (None), so callers can ask without an ImportError; core.has_cuda() says which build this is.
// cuda_decode, cuda_nms and cuda_gbciou_merge check and convert their arguments exactly as their CPU
// twins do (checks.hpp: same conversions, same messages); the image round trips take C-contiguous
// arrays of the exact dtype (an internal test/benchmark surface; the public API is fastcell.ops) but
// share the CPU's HSV, disc and fill checks. All release the GIL around the device work, which only
// reads the inputs and writes new arrays.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include "bindings/checks.hpp"
#include "bindings/register.hpp"

#ifdef FASTCELL_WITH_CUDA
#include "core/nms.hpp"
#include "cuda/api.hpp"
#include "cuda/device_buffer.hpp"
#endif

namespace py = pybind11;

namespace fastcell::bindings {

#ifdef FASTCELL_WITH_CUDA
namespace {

template <typename T>
using carray = py::array_t<T, py::array::c_style>;

// The calling thread's default stream: no stream object to manage, and calls from two Python threads
// do not serialise on the legacy default stream.
const cudaStream_t kStream = cudaStreamPerThread;

void require_device() {
  if (cuda::device_count() == 0)
    throw std::runtime_error("no CUDA device is visible (no NVIDIA GPU or driver on this machine)");
}

std::string shape_of(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + ")";
}

void expect(bool ok, const std::string& what, const py::array& a) {
  if (!ok) throw py::value_error(what + ", got shape " + shape_of(a));
}

// Arguments are validated before require_device(), so bad input gets the same ValueError with or
// without a GPU (and the checks are testable on a machine without one).
int checked_value(long long v, long long low, long long high, const std::string& name) {
  if (v < low || v > high)
    throw py::value_error(name + " must be in [" + std::to_string(low) + ", " + std::to_string(high) + "], got " +
                          std::to_string(v));
  return static_cast<int>(v);
}

py::array_t<float> params_array(const std::vector<core::LetterboxParams>& params) {
  py::array_t<float> out({static_cast<py::ssize_t>(params.size()), py::ssize_t{5}});
  auto o = out.mutable_unchecked<2>();
  for (std::size_t i = 0; i < params.size(); ++i) {
    const auto& p = params[i];
    const float row[5] = {p.scale, p.pad_x, p.pad_y, p.width, p.height};
    for (int k = 0; k < 5; ++k) o(static_cast<py::ssize_t>(i), k) = row[k];
  }
  return out;
}

// frames: (N, H, W, C) uint8, C-contiguous → ((N, 3, S, S) float32, (N, 5) float32).
py::tuple letterbox_batch(const carray<std::uint8_t>& frames, int size, double pad_value) {
  expect(frames.ndim() == 4 && (frames.shape(3) == 1 || frames.shape(3) == 3 || frames.shape(3) == 4) &&
             frames.shape(0) >= 1 && frames.shape(1) >= 1 && frames.shape(2) >= 1,
         "frames must be (N>=1, H>=1, W>=1, 1|3|4) uint8", frames);
  checked_size(size);
  checked_pad(pad_value);
  require_device();
  const int n = static_cast<int>(frames.shape(0)), h = static_cast<int>(frames.shape(1)),
            w = static_cast<int>(frames.shape(2)), c = static_cast<int>(frames.shape(3));
  py::array_t<float> out({py::ssize_t{n}, py::ssize_t{3}, py::ssize_t{size}, py::ssize_t{size}});
  std::vector<core::LetterboxParams> params(static_cast<std::size_t>(n));
  const std::uint8_t* src = frames.data();
  float* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    const std::size_t per_frame = static_cast<std::size_t>(h) * w * c;
    cuda::DeviceBuffer<std::uint8_t> d_frames;
    cuda::DeviceBuffer<float> d_out(static_cast<std::size_t>(n) * 3 * size * size);
    d_frames.upload(src, per_frame * n, kStream);
    const core::ImageView<std::uint8_t> first{d_frames.data(), h, w, c, static_cast<std::ptrdiff_t>(w) * c};
    cuda::letterbox_batch(first, static_cast<std::ptrdiff_t>(per_frame), n, size, static_cast<float>(pad_value),
                          d_out.data(), params.data(), kStream);
    d_out.download(dst, d_out.size(), kStream);
    cuda::check_cuda(cudaStreamSynchronize(kStream), "cudaStreamSynchronize");
  }
  return py::make_tuple(out, params_array(params));
}

// Frames already on the device → a device float buffer (e.g. TensorRT's bound input). Pointers and
// the stream are raw integers (cuda-python handles: int(ptr), int(stream)). Returns the (N, 5) params.
py::array_t<float> letterbox_batch_device(std::uintptr_t frames, int count, int height, int width, int channels,
                                          std::int64_t row_stride, std::int64_t image_stride, int size,
                                          double pad_value, std::uintptr_t out, std::uintptr_t stream) {
  checked_value(count, 0, INT32_MAX, "count");
  checked_size(size);
  checked_pad(pad_value);
  if (count == 0) return params_array({});  // nothing to letterbox: no frame is read, no device needed
  require_device();
  std::vector<core::LetterboxParams> params(static_cast<std::size_t>(count));
  const core::ImageView<std::uint8_t> first{reinterpret_cast<const std::uint8_t*>(frames), height, width, channels,
                                            static_cast<std::ptrdiff_t>(row_stride)};
  {
    py::gil_scoped_release release;
    cuda::letterbox_batch(first, static_cast<std::ptrdiff_t>(image_stride), count, size,
                          static_cast<float>(pad_value), reinterpret_cast<float*>(out), params.data(),
                          reinterpret_cast<cudaStream_t>(stream));
  }
  return params_array(params);
}

py::list decode(py::handle heads, py::handle strides, py::handle anchors, long long num_classes,
                double score_threshold) {
  // The CPU binding's checks, in its order: the same input gets the same error.
  finite(score_threshold, "score_threshold");
  Heads h = parse_heads(heads, strides, anchors);
  const int classes = checked_num_classes(num_classes);
  core::check_head_shapes(h.views, classes);  // reads no value: refused with or without a device
  require_device();
  std::vector<cuda::DeviceBuffer<float>> device(h.views.size());
  std::vector<core::Detections> result;
  {
    py::gil_scoped_release release;  // safe: h owns the host arrays the views point into
    for (std::size_t k = 0; k < h.views.size(); ++k) {
      device[k].upload(h.arrays[k].data(), static_cast<std::size_t>(h.arrays[k].size()), kStream);
      h.views[k].data = device[k].data();
    }
    result = cuda::decode(h.views, classes, score_threshold, kStream);
  }
  py::list out;
  for (const auto& d : result) out.append(to_numpy(d));
  return out;
}

struct BoxArgs {
  cuda::DeviceBuffer<float> boxes, scores;
  cuda::DeviceBuffer<std::int32_t> classes;
  std::size_t n = 0;
  bool has_classes = false;
};

// The CPU binding's checks (checks.hpp) and the core's value check, then the upload.
void upload_boxes(py::handle boxes_obj, py::handle scores_obj, py::handle class_ids_obj, BoxArgs& args) {
  const FloatArray boxes = boxes_array(boxes_obj, "boxes");
  const FloatArray scores = vector_array(scores_obj, "scores", boxes.shape(0));
  std::vector<std::int32_t> ids;
  if (!class_ids_obj.is_none()) ids = class_ids_vector(class_ids_obj, boxes.shape(0));
  args.n = static_cast<std::size_t>(boxes.shape(0));
  core::check_finite_boxes(boxes.data(), scores.data(), args.n);
  require_device();
  args.boxes.upload(boxes.data(), 4 * args.n, kStream);
  args.scores.upload(scores.data(), args.n, kStream);
  args.has_classes = !class_ids_obj.is_none();
  if (args.has_classes) args.classes.upload(ids.data(), args.n, kStream);
  // boxes, scores and ids go when this returns; an asynchronous copy may still be reading them.
  cuda::check_cuda(cudaStreamSynchronize(kStream), "cudaStreamSynchronize");
}

py::array_t<std::int64_t> nms(py::handle boxes, py::handle scores, double iou_threshold, py::handle class_ids) {
  const float threshold = static_cast<float>(finite(iou_threshold, "iou_threshold"));
  BoxArgs args;
  upload_boxes(boxes, scores, class_ids, args);
  std::vector<std::int64_t> keep;
  {
    py::gil_scoped_release release;
    keep = cuda::nms(args.boxes.data(), args.scores.data(), args.has_classes ? args.classes.data() : nullptr, args.n,
                     threshold, kStream);
  }
  return to_numpy(keep, {static_cast<py::ssize_t>(keep.size())});
}

py::tuple gbciou_merge(py::handle boxes, py::handle scores, py::handle class_ids, double threshold,
                       const std::string& mode, double merge_iou) {
  const core::MergeOptions options{merge_mode(mode), finite(threshold, "threshold"),
                                   static_cast<float>(finite(merge_iou, "merge_iou"))};
  BoxArgs args;
  upload_boxes(boxes, scores, class_ids, args);
  core::Detections merged;
  {
    py::gil_scoped_release release;
    merged = cuda::gbciou_merge(args.boxes.data(), args.scores.data(), args.has_classes ? args.classes.data() : nullptr,
                                args.n, options, kStream);
  }
  return to_numpy(merged);
}

py::tuple segment_cells(const carray<std::uint8_t>& image, const carray<float>& boxes, const carray<float>& scores,
                        const py::object& hsv_low, const py::object& hsv_high, const std::string& disc,
                        const py::object& fill) {
  expect(image.ndim() == 3 && image.shape(2) == 3, "image must be (H, W, 3) uint8 BGR", image);
  expect(boxes.ndim() == 2 && boxes.shape(1) == 4, "boxes must be (K, 4) float32", boxes);
  expect(scores.ndim() == 1 && scores.shape(0) == boxes.shape(0), "scores must be (K,) float32", scores);
  // The CPU binding's checks and messages (checks.hpp), in its order.
  const core::HsvRange hsv = hsv_range(hsv_low, hsv_high);
  const core::DiscShape shape = disc_shape(disc);
  const auto fill_bgr = triple(fill, "fill", {255, 255, 255});
  require_device();
  const int h = static_cast<int>(image.shape(0)), w = static_cast<int>(image.shape(1));
  const int count = static_cast<int>(boxes.shape(0));
  py::array_t<std::int32_t> labels({h, w});
  py::array_t<std::uint8_t> segmented({h, w, 3});
  const std::uint8_t* src = image.data();
  const float* box_data = boxes.data();
  const float* score_data = scores.data();
  std::int32_t* labels_out = labels.mutable_data();
  std::uint8_t* segmented_out = segmented.mutable_data();
  {
    py::gil_scoped_release release;
    const std::size_t pixels = static_cast<std::size_t>(h) * w;
    cuda::DeviceBuffer<std::uint8_t> d_image, d_segmented(3 * pixels);
    cuda::DeviceBuffer<float> d_boxes, d_scores;
    cuda::DeviceBuffer<std::int32_t> d_labels(pixels);
    d_image.upload(src, 3 * pixels, kStream);
    d_boxes.upload(box_data, 4 * static_cast<std::size_t>(count), kStream);
    d_scores.upload(score_data, static_cast<std::size_t>(count), kStream);
    cuda::segment_cells(core::ImageView<std::uint8_t>{d_image.data(), h, w, 3, static_cast<std::ptrdiff_t>(w) * 3},
                        d_boxes.data(), d_scores.data(), count,
                        shape, hsv, fill_bgr.data(),
                        d_labels.data(), d_segmented.data(), kStream);
    d_labels.download(labels_out, pixels, kStream);
    d_segmented.download(segmented_out, 3 * pixels, kStream);
    cuda::check_cuda(cudaStreamSynchronize(kStream), "cudaStreamSynchronize");
  }
  return py::make_tuple(labels, segmented);
}

}  // namespace
#endif  // FASTCELL_WITH_CUDA

void register_cuda(py::module_& m) {
#ifdef FASTCELL_WITH_CUDA
  using namespace pybind11::literals;
  m.def("cuda_device_count", &cuda::device_count, "CUDA devices visible (0 without a driver or GPU).");
  m.def("cuda_runtime_version", &cuda::runtime_version, "The CUDA runtime compiled in (static), e.g. '13.0'.");
  m.def("cuda_letterbox_batch", &letterbox_batch, "frames"_a, "size"_a, "pad_value"_a,
        "CUDA letterbox of an (N, H, W, C) uint8 stack: ((N, 3, S, S) float32, (N, 5) params).");
  m.def("cuda_letterbox_batch_device", &letterbox_batch_device, "frames"_a, "count"_a, "height"_a, "width"_a,
        "channels"_a, "row_stride"_a, "image_stride"_a, "size"_a, "pad_value"_a, "out"_a, "stream"_a,
        "CUDA letterbox from device frames into a device float buffer (raw pointers); returns (N, 5) params.");
  m.def("cuda_decode", &decode, "heads"_a, "strides"_a, "anchors"_a, "num_classes"_a, "score_threshold"_a,
        "CUDA twin of decode (host arrays in, uploaded).");
  m.def("cuda_nms", &nms, "boxes"_a, "scores"_a, "iou_threshold"_a, "class_ids"_a = py::none(),
        "CUDA twin of nms.");
  m.def("cuda_gbciou_merge", &gbciou_merge, "boxes"_a, "scores"_a, "class_ids"_a, "threshold"_a,
        "mode"_a, "merge_iou"_a, "CUDA twin of gbciou_merge.");
  m.def("cuda_segment_cells", &segment_cells, "image"_a, "boxes"_a, "scores"_a, "hsv_low"_a = py::none(),
        "hsv_high"_a = py::none(), "disc"_a = "circle", "fill"_a = py::make_tuple(0, 0, 0),
        "CUDA twin of segment_cells.");
#else
  m.def("cuda_device_count", []() { return 0; }, "CUDA devices visible: always 0, this build has no CUDA kernels.");
  m.def("cuda_runtime_version", []() { return py::none(); }, "None: this build has no CUDA kernels.");
#endif
}

}  // namespace fastcell::bindings
