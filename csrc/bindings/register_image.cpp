// Bindings of the image kernels: letterbox (single and batch) and circle/HSV segmentation.
//
// Each function validates its arrays while holding the GIL (dtype, ndim, shape, memory layout),
// converts what can be converted without changing values (a layout with gaps inside a row becomes a
// C-contiguous copy; strided or flipped rows are read in place), then releases the GIL for the
// kernel and wraps the results. Wrong dtypes are refused, never cast: casting a float image or a
// big-endian buffer would silently change the values.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include "bindings/checks.hpp"
#include "bindings/output_pool.hpp"
#include "bindings/register.hpp"
#include "core/circle_mask.hpp"
#include "core/coco_rle.hpp"
#include "core/letterbox.hpp"

namespace py = pybind11;

namespace fastcell::bindings {
namespace {

// An image array accepted by the kernels, kept alive (and possibly copied) for the call's length.
struct ImageArg {
  py::array array;
  int height = 0, width = 0, channels = 0;
  // Read while the GIL is held: py::array::itemsize() goes through a dtype object, whose reference
  // count must not be touched once the GIL is released (a race that drains numpy's uint8 dtype).
  int itemsize = 0;
  std::ptrdiff_t row_stride = 0;  // elements

  template <typename T>
  core::ImageView<T> view() const {
    return core::ImageView<T>{static_cast<const T*>(array.data()), height, width, channels, row_stride};
  }
};

// Pixels within a row must be packed; rows may have any stride (crops, flips). Anything else, for
// instance a column slice image[:, ::2] or a Fortran-ordered array, is copied to C order.
ImageArg layout_image(py::array arr) {
  const py::ssize_t item = arr.itemsize();
  ImageArg img;
  img.height = static_cast<int>(arr.shape(0));
  img.width = static_cast<int>(arr.shape(1));
  img.channels = arr.ndim() == 3 ? static_cast<int>(arr.shape(2)) : 1;
  const bool channels_packed = arr.ndim() == 2 || arr.strides(2) == item || img.channels == 1;
  const bool pixels_packed = arr.strides(1) == img.channels * item || img.width == 1;
  if (!(channels_packed && pixels_packed && arr.strides(0) % item == 0)) {
    arr = py::array::ensure(arr, py::array::c_style);
    if (!arr) throw py::error_already_set();
  }
  img.array = arr;
  img.itemsize = static_cast<int>(item);
  img.row_stride = static_cast<std::ptrdiff_t>(arr.strides(0) / item);
  return img;
}

// uint8 or uint16 (only uint8 when `allow_16bit` is false), (H, W), (H, W, 1), (H, W, 3) or (H, W, 4).
ImageArg image_arg(const py::handle& obj, const char* name, bool allow_16bit, bool color_only) {
  auto expected = [&] {  // built only on failure: this runs for every frame
    return color_only ? std::string(name) + " must be (H, W, 3) uint8 BGR"
                      : std::string(name) + " must be (H, W), (H, W, 3) or (H, W, 4) uint8" +
                            (allow_16bit ? " or uint16" : "");
  };
  if (!py::isinstance<py::array>(obj)) throw py::type_error(expected() + ", got " + describe(obj));
  auto arr = py::reinterpret_borrow<py::array>(obj);
  const bool dtype_ok = py::isinstance<py::array_t<std::uint8_t>>(arr) ||
                        (allow_16bit && py::isinstance<py::array_t<std::uint16_t>>(arr));
  if (!dtype_ok) throw py::type_error(expected() + ", got " + describe(obj));
  const bool ndim_ok = color_only ? (arr.ndim() == 3 && arr.shape(2) == 3)
                                  : (arr.ndim() == 2 || (arr.ndim() == 3 && (arr.shape(2) == 1 || arr.shape(2) == 3 ||
                                                                             arr.shape(2) == 4)));
  if (!ndim_ok) throw py::value_error(expected() + ", got " + describe(obj));
  if (arr.shape(0) > INT32_MAX / 8 || arr.shape(1) > INT32_MAX / 8) {
    throw py::value_error(std::string(name) + " is too large: " + describe(obj));
  }
  return layout_image(arr);
}

core::LetterboxParams letterbox_one(const ImageArg& img, int size, float pad, float* out) {
  if (img.itemsize == 1) return core::letterbox(img.view<std::uint8_t>(), size, pad, out);
  return core::letterbox(img.view<std::uint16_t>(), size, pad, out);
}

void store_params(const core::LetterboxParams& p, float* row) {
  row[0] = p.scale;
  row[1] = p.pad_x;
  row[2] = p.pad_y;
  row[3] = p.width;
  row[4] = p.height;
}

py::tuple letterbox(const py::handle& image, int size, double pad_value) {
  const ImageArg img = image_arg(image, "image", true, false);
  if (img.height < 1 || img.width < 1) throw py::value_error("image has no pixels: " + describe(image));
  checked_size(size);
  const float pad = checked_pad(pad_value);
  py::array_t<float> out({3, size, size});
  py::array_t<float> params(5);
  float* out_data = out.mutable_data();
  float* params_data = params.mutable_data();
  {
    // Safe without the GIL: `img` keeps the input alive and unchanged (we never write to it), and
    // the outputs are new arrays no other thread can see yet.
    py::gil_scoped_release release;
    store_params(letterbox_one(img, size, pad, out_data), params_data);
  }
  return py::make_tuple(out, params);
}

// The caller's output buffer must be exactly what the kernel writes: no conversion is possible.
py::array_t<float> batch_output(const py::object& out, py::ssize_t n, int size) {
  if (out.is_none()) return py::array_t<float>({n, py::ssize_t{3}, py::ssize_t{size}, py::ssize_t{size}});
  const std::string expected = "out must be a C-contiguous, writeable (" + std::to_string(n) + ", 3, " +
                               std::to_string(size) + ", " + std::to_string(size) + ") float32 array";
  if (!py::isinstance<py::array_t<float>>(out)) throw py::type_error(expected + ", got " + describe(out));
  auto arr = py::reinterpret_borrow<py::array>(out);
  const bool shape_ok = arr.ndim() == 4 && arr.shape(0) == n && arr.shape(1) == 3 && arr.shape(2) == size &&
                        arr.shape(3) == size;
  const bool layout_ok = (arr.flags() & py::array::c_style) && arr.writeable();
  if (!shape_ok || !layout_ok) {
    throw py::value_error(expected + ", got " + describe(out) + (layout_ok ? "" : " (not C-contiguous or read-only)"));
  }
  return py::reinterpret_borrow<py::array_t<float>>(out);
}

py::tuple letterbox_batch(const py::sequence& images, const py::object& out, int size, double pad_value) {
  checked_size(size);
  const float pad = checked_pad(pad_value);
  std::vector<ImageArg> batch;
  batch.reserve(images.size());
  for (py::size_t i = 0; i < images.size(); ++i) {
    const std::string name = "images[" + std::to_string(i) + "]";
    batch.push_back(image_arg(images[i], name.c_str(), true, false));
    if (batch.back().height < 1 || batch.back().width < 1) {
      throw py::value_error(name + " has no pixels: " + describe(images[i]));
    }
  }
  const auto n = static_cast<py::ssize_t>(batch.size());
  py::array_t<float> result = batch_output(out, n, size);
  py::array_t<float> params({n, py::ssize_t{5}});
  float* out_data = result.mutable_data();
  float* params_data = params.mutable_data();
  const std::size_t plane_block = 3 * static_cast<std::size_t>(size) * static_cast<std::size_t>(size);
  {
    // Safe without the GIL: `batch` holds references to every input; `params` is new; `out` is the
    // caller's buffer, which (as with numpy's out= arguments) they must not touch during the call.
    py::gil_scoped_release release;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      store_params(letterbox_one(batch[i], size, pad, out_data + i * plane_block), params_data + 5 * i);
    }
  }
  return py::make_tuple(result, params);
}

// A (K, 4) or (K,) float32 array in C order (copied if strided; other dtypes are refused).
py::array_t<float> float32_rows(const py::handle& obj, const char* name, py::ssize_t cols, py::ssize_t rows) {
  // The message is built only on failure: this runs for every frame.
  auto expected = [&] {
    return std::string(name) + " must be " + (cols ? "(K, " + std::to_string(cols) + ")" : std::string("(K,)")) +
           " float32";
  };
  if (!py::isinstance<py::array_t<float>>(obj)) throw py::type_error(expected() + ", got " + describe(obj));
  auto arr = py::reinterpret_borrow<py::array>(obj);
  const bool shape_ok = cols ? (arr.ndim() == 2 && arr.shape(1) == cols) : arr.ndim() == 1;
  if (!shape_ok || (rows >= 0 && arr.shape(0) != rows)) {
    throw py::value_error(expected() + (rows >= 0 ? " with K = " + std::to_string(rows) : "") + ", got " +
                          describe(obj));
  }
  return py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(arr);
}

// One frame's segmentation, validated and with its outputs allocated while the GIL is held, so the
// kernel can run without it. The members keep the inputs alive for the call's length.
struct SegmentJob {
  ImageArg image;
  py::array_t<float> boxes, scores;
  py::array_t<std::int32_t> labels;
  py::array_t<std::uint8_t> segmented;

  void run(core::DiscShape shape, const core::HsvRange& hsv, const std::uint8_t* fill) {
    core::segment_cells(image.view<std::uint8_t>(), boxes.data(), scores.data(), static_cast<int>(boxes.shape(0)),
                        shape, hsv, fill, labels.mutable_data(), segmented.mutable_data());
  }
  py::tuple result() const { return py::make_tuple(labels, segmented); }
};

SegmentJob segment_job(const py::handle& image, const py::handle& boxes, const py::handle& scores,
                       const std::string& suffix) {
  SegmentJob job;
  job.image = image_arg(image, (suffix.empty() ? std::string("image") : "images" + suffix).c_str(), false, true);
  job.boxes = float32_rows(boxes, ("boxes" + suffix).c_str(), 4, -1);
  job.scores = float32_rows(scores, ("scores" + suffix).c_str(), 0, job.boxes.shape(0));
  if (job.boxes.shape(0) > INT32_MAX - 1) throw py::value_error("too many boxes: " + describe(boxes));
  job.labels = pooled_array<std::int32_t>({job.image.height, job.image.width});
  job.segmented = pooled_array<std::uint8_t>({job.image.height, job.image.width, 3});
  return job;
}

py::tuple segment_cells(const py::handle& image, const py::handle& boxes, const py::handle& scores,
                        const py::object& hsv_low, const py::object& hsv_high, const std::string& disc,
                        const py::object& fill) {
  SegmentJob job = segment_job(image, boxes, scores, "");
  const core::HsvRange hsv = hsv_range(hsv_low, hsv_high);
  const core::DiscShape shape = disc_shape(disc);
  const auto fill_bgr = triple(fill, "fill", {255, 255, 255});
  {
    // Safe without the GIL: `job` holds (and only reads) every input, and its outputs are new
    // arrays no other thread can see yet.
    py::gil_scoped_release release;
    job.run(shape, hsv, fill_bgr.data());
  }
  return job.result();
}

// A batch's bound is per frame when its entries are themselves bounds (sequences) or None, or when
// it is empty (the per-frame list of an empty batch); one triple of integers is shared by every frame.
bool per_frame_bound(const py::object& bound) {
  if (!py::isinstance<py::sequence>(bound) || py::isinstance<py::str>(bound)) return false;
  const auto entries = py::reinterpret_borrow<py::sequence>(bound);
  if (entries.size() == 0) return true;
  const py::object first = entries[0];
  return first.is_none() || (py::isinstance<py::sequence>(first) && !py::isinstance<py::str>(first));
}

// One HSV range per frame: shared bounds are checked once, per-frame ones frame by frame.
std::vector<core::HsvRange> hsv_ranges(const py::object& low, const py::object& high, std::size_t frames) {
  const bool low_each = per_frame_bound(low), high_each = per_frame_bound(high);
  if (!low_each && !high_each) return std::vector<core::HsvRange>(frames, hsv_range(low, high));
  auto entry = [frames](const py::object& bound, bool each, const char* name, std::size_t i) -> py::object {
    if (!each) return bound;
    const auto entries = py::reinterpret_borrow<py::sequence>(bound);
    if (entries.size() != frames) {
      throw py::value_error(std::string(name) + " per frame must have one entry per frame (" + std::to_string(frames) +
                            "), got " + std::to_string(entries.size()));
    }
    return entries[i];
  };
  std::vector<core::HsvRange> ranges;
  ranges.reserve(frames);
  for (std::size_t i = 0; i < frames; ++i) {
    ranges.push_back(hsv_range(entry(low, low_each, "hsv_low", i), entry(high, high_each, "hsv_high", i),
                               "[" + std::to_string(i) + "]"));
  }
  return ranges;
}

// The frames of a batch (sizes may differ) with their own boxes and HSV ranges, one GIL release for
// all of them.
py::list segment_cells_batch(const py::sequence& images, const py::sequence& boxes, const py::sequence& scores,
                             const py::object& hsv_low, const py::object& hsv_high, const std::string& disc,
                             const py::object& fill) {
  if (boxes.size() != images.size() || scores.size() != images.size()) {
    throw py::value_error("images, boxes and scores must have one entry per frame, got " +
                          std::to_string(images.size()) + ", " + std::to_string(boxes.size()) + " and " +
                          std::to_string(scores.size()));
  }
  const std::vector<core::HsvRange> hsv = hsv_ranges(hsv_low, hsv_high, images.size());
  const core::DiscShape shape = disc_shape(disc);
  const auto fill_bgr = triple(fill, "fill", {255, 255, 255});
  std::vector<SegmentJob> jobs;
  jobs.reserve(images.size());
  for (py::size_t i = 0; i < images.size(); ++i) {
    jobs.push_back(segment_job(images[i], boxes[i], scores[i], "[" + std::to_string(i) + "]"));
  }
  {
    // Safe without the GIL: as in segment_cells, for every frame.
    py::gil_scoped_release release;
    for (std::size_t i = 0; i < jobs.size(); ++i) jobs[i].run(shape, hsv[i], fill_bgr.data());
  }
  py::list out;
  for (const SegmentJob& job : jobs) out.append(job.result());
  return out;
}

}  // namespace

// COCO RLE of instances 1..count of an (H, W) int32 label image (a C-contiguous copy is made when
// needed): their compressed strings and pixel areas.
py::tuple instance_rles(const py::handle& labels_obj, long long count) {
  if (!py::isinstance<py::array_t<std::int32_t>>(labels_obj)) {
    throw py::type_error("labels must be an (H, W) int32 array, got " + describe(labels_obj));
  }
  const auto labels = py::array_t<std::int32_t, py::array::c_style | py::array::forcecast>::ensure(labels_obj);
  if (labels.ndim() != 2) throw py::value_error("labels must be an (H, W) int32 array, got " + describe(labels_obj));
  if (count < 0 || count > INT32_MAX) throw py::value_error("count must be in [0, 2^31), got " + std::to_string(count));
  if (labels.shape(0) > INT32_MAX || labels.shape(1) > INT32_MAX) {
    throw py::value_error("labels is too large: " + describe(labels_obj));
  }
  std::vector<core::InstanceRle> rles;
  {
    // Safe without the GIL: `labels` is an owned reference (or our own copy), only read.
    py::gil_scoped_release release;
    rles = core::instance_rles(labels.data(), static_cast<int>(labels.shape(0)), static_cast<int>(labels.shape(1)),
                               static_cast<std::ptrdiff_t>(labels.shape(1)), static_cast<int>(count));
  }
  py::list strings;
  py::array_t<std::int64_t> areas(static_cast<py::ssize_t>(rles.size()));
  auto area = areas.mutable_unchecked<1>();
  for (std::size_t i = 0; i < rles.size(); ++i) {
    strings.append(py::str(rles[i].counts));
    area(static_cast<py::ssize_t>(i)) = rles[i].area;
  }
  return py::make_tuple(strings, areas);
}

void register_image(py::module_& m) {
  m.def("letterbox", &letterbox, py::arg("image"), py::arg("size"), py::arg("pad_value"),
        "Letterbox one uint8/uint16 image into a (3, size, size) float32 RGB array; see fastcell.ops.letterbox.");
  m.def("letterbox_batch", &letterbox_batch, py::arg("images"), py::arg("out"), py::arg("size"),
        py::arg("pad_value"),
        "Letterbox a sequence of images into one (N, 3, size, size) float32 array; see fastcell.ops.letterbox_batch.");
  m.def("instance_rles", &instance_rles, py::arg("labels"), py::arg("count"),
        "COCO compressed RLE strings and areas of instances 1..count; see fastcell.ops.coco_rle.");
  m.def("_pooled_bytes", &pooled_bytes, "Bytes of freed output buffers the pool keeps for reuse (tests).");
  m.def("segment_cells", &segment_cells, py::arg("image"), py::arg("boxes"), py::arg("scores"),
        py::arg("hsv_low") = py::none(), py::arg("hsv_high") = py::none(), py::arg("disc") = "circle",
        py::arg("fill") = py::make_tuple(0, 0, 0),
        "Circle/ellipse segmentation with HSV refinement; see fastcell.ops.segment_cells.");
  m.def("segment_cells_batch", &segment_cells_batch, py::arg("images"), py::arg("boxes"), py::arg("scores"),
        py::arg("hsv_low") = py::none(), py::arg("hsv_high") = py::none(), py::arg("disc") = "circle",
        py::arg("fill") = py::make_tuple(0, 0, 0),
        "segment_cells for every frame of a batch in one call; see fastcell.ops.segment_cells_batch.");
}

}  // namespace fastcell::bindings
