// Device-pointer entries of the CUDA twins: the inputs already live on the GPU (torch / CuPy tensors,
// passed as raw addresses with the CUDA stream to queue on), so nothing is uploaded per call.
//
//   cuda_decode_device            all heads of a batch → per-frame detections, one host sync per batch
//   cuda_segment_cells_device     a device BGR frame + its boxes → device label / segmented images
//
// Pointers and the stream are plain integers (tensor.data_ptr(), torch.cuda.Stream.cuda_stream, or
// CuPy's .data.ptr / .ptr). The caller keeps the memory alive and in the layout stated for the call;
// the shapes are checked here with the GIL held, the device work runs with it released. Built
// without CUDA, this file registers nothing (register_cuda.cpp's cuda_device_count says 0).
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include "bindings/checks.hpp"
#include "bindings/register.hpp"

#ifdef FASTCELL_WITH_CUDA
#include "cuda/api.hpp"
#include "cuda/device_buffer.hpp"
#endif

namespace py = pybind11;

namespace fastcell::bindings {

#ifdef FASTCELL_WITH_CUDA
namespace {

template <typename T>
using carray = py::array_t<T, py::array::c_style | py::array::forcecast>;

void require_device() {
  if (cuda::device_count() == 0)
    throw std::runtime_error("no CUDA device is visible (no NVIDIA GPU or driver on this machine)");
}

int in_range(long long v, long long low, long long high, const std::string& name) {
  if (v < low || v > high)
    throw py::value_error(name + " must be in [" + std::to_string(low) + ", " + std::to_string(high) + "], got " +
                          std::to_string(v));
  return static_cast<int>(v);
}

// pointers[h]: device address of head h, (batch, channels, height, width) float32 C-contiguous.
py::list decode_device(const std::vector<std::uintptr_t>& pointers, const std::vector<std::array<std::int64_t, 4>>& shapes,
                       const std::vector<float>& strides, const std::vector<carray<float>>& anchors,
                       long long num_classes, double score_threshold, std::uintptr_t stream) {
  const std::size_t n = pointers.size();
  if (n == 0) throw py::value_error("pointers must hold at least one head, got none");
  if (shapes.size() != n || strides.size() != n || anchors.size() != n)
    throw py::value_error("pointers, shapes, strides and anchors must have one entry per head, got " +
                          std::to_string(n) + ", " + std::to_string(shapes.size()) + ", " +
                          std::to_string(strides.size()) + ", " + std::to_string(anchors.size()));
  std::vector<core::HeadView> views(n);
  for (std::size_t k = 0; k < n; ++k) {
    const auto& s = shapes[k];
    if (pointers[k] == 0 || s[0] < 0 || s[1] < 1 || s[2] < 1 || s[3] < 1)
      throw py::value_error("heads[" + std::to_string(k) + "] must be a non-null device pointer with shape (N>=0, C>=1, "
                            "H>=1, W>=1), got shape (" + std::to_string(s[0]) + ", " + std::to_string(s[1]) + ", " +
                            std::to_string(s[2]) + ", " + std::to_string(s[3]) + ")");
    if (anchors[k].ndim() != 2 || anchors[k].shape(1) != 2)
      throw py::value_error("anchors[" + std::to_string(k) + "] must be (A, 2)");
    views[k] = core::HeadView{reinterpret_cast<const float*>(pointers[k]), s[0], s[1], s[2], s[3], strides[k],
                              anchors[k].data(), static_cast<int>(anchors[k].shape(0))};
  }
  // The CPU binding's checks and messages (checks.hpp, core::check_head_shapes), before any device.
  finite(score_threshold, "score_threshold");
  const int classes = checked_num_classes(num_classes);
  core::check_head_shapes(views, classes);
  require_device();
  std::vector<core::Detections> result;
  {
    // Safe without the GIL: the views point into the caller's device memory and the anchors arrays,
    // which this call's arguments keep alive until it returns.
    py::gil_scoped_release release;
    result = cuda::decode(views, classes, score_threshold, reinterpret_cast<cudaStream_t>(stream));
  }
  py::list out;
  for (const auto& d : result) out.append(to_numpy(d));
  return out;
}

// image: device (H, W, 3) uint8 BGR rows `row_stride` bytes apart; boxes/scores: host; labels (H·W
// int32) and segmented (H·W·3 uint8): device, C-contiguous, or 0 to skip. Waits for its kernels.
void segment_cells_device(std::uintptr_t image, int height, int width, std::int64_t row_stride,
                          const carray<float>& boxes, const carray<float>& scores,
                          const py::object& hsv_low, const py::object& hsv_high, const std::string& disc,
                          const py::object& fill, std::uintptr_t labels, std::uintptr_t segmented,
                          std::uintptr_t stream) {
  if (image == 0) throw py::value_error("image must be a non-null device pointer");
  in_range(height, 1, 1 << 16, "height");
  in_range(width, 1, 1 << 16, "width");
  if (row_stride < 3LL * width)
    throw py::value_error("row_stride must be >= 3 * width = " + std::to_string(3LL * width) + " bytes, got " +
                          std::to_string(row_stride));
  if (boxes.ndim() != 2 || boxes.shape(1) != 4) throw py::value_error("boxes must be (K, 4) float32");
  if (scores.ndim() != 1 || scores.shape(0) != boxes.shape(0))
    throw py::value_error("scores must be (K,) float32 matching boxes");
  // The CPU binding's checks and messages (checks.hpp), in its order.
  const core::HsvRange hsv = hsv_range(hsv_low, hsv_high);
  const core::DiscShape shape = disc_shape(disc);
  const auto fill_bgr = triple(fill, "fill", {255, 255, 255});
  require_device();
  const int count = static_cast<int>(boxes.shape(0));
  const float* box_data = boxes.data();
  const float* score_data = scores.data();
  py::gil_scoped_release release;  // the host arrays are kept alive by the arguments
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  cuda::DeviceBuffer<float> d_boxes, d_scores;
  d_boxes.upload(box_data, 4 * static_cast<std::size_t>(count), s);
  d_scores.upload(score_data, static_cast<std::size_t>(count), s);
  cuda::segment_cells(core::ImageView<std::uint8_t>{reinterpret_cast<const std::uint8_t*>(image), height, width, 3,
                                                    static_cast<std::ptrdiff_t>(row_stride)},
                      d_boxes.data(), d_scores.data(), count, shape, hsv, fill_bgr.data(),
                      reinterpret_cast<std::int32_t*>(labels), reinterpret_cast<std::uint8_t*>(segmented), s);
}

}  // namespace
#endif  // FASTCELL_WITH_CUDA

void register_cuda_device(py::module_& m) {
#ifdef FASTCELL_WITH_CUDA
  using namespace pybind11::literals;
  m.def("cuda_decode_device", &decode_device, "pointers"_a, "shapes"_a, "strides"_a, "anchors"_a, "num_classes"_a,
        "score_threshold"_a, "stream"_a,
        "decode of heads already on the device (raw pointers, one sync per batch): per-frame (boxes, scores, class_ids).");
  m.def("cuda_segment_cells_device", &segment_cells_device, "image"_a, "height"_a, "width"_a, "row_stride"_a,
        "boxes"_a, "scores"_a, "hsv_low"_a = py::none(), "hsv_high"_a = py::none(), "disc"_a = "circle",
        "fill"_a = py::make_tuple(0, 0, 0), "labels"_a = 0, "segmented"_a = 0, "stream"_a = 0,
        "segment_cells of a frame on the device into device label / segmented buffers (raw pointers).");
#else
  (void)m;
#endif
}

}  // namespace fastcell::bindings
