// CUDA twin of core::letterbox: one thread per output pixel, all three planes.
//
// Each thread computes its pixel with letterbox_math.hpp's letterbox_pixel: the CPU's own tap rule
// (axis_tap), blending down the rows then along them exactly as letterbox.cpp does, R, G and B
// (BGR(A) input read in reverse; gray repeated). tests/test_cuda_math.py runs that same function on
// the CPU against fastcell.ops.letterbox. The frame is read as uint8 (or
// uint16) straight from device memory, so a camera frame is uploaded once, at a quarter of the size
// of the float32 network input it becomes.
#include <stdexcept>
#include <string>

#include "core/letterbox_math.hpp"
#include "cuda/api.hpp"
#include "cuda/common.cuh"

namespace fastcell::cuda {
namespace {

struct Geometry {
  int size, new_width, new_height, pad_x, pad_y;
  core::LetterboxSampling sampling;
  float pad;
};

template <typename T>
__global__ void letterbox_kernel(const T* frames, std::ptrdiff_t image_stride, Geometry g, float* out) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x;
  const int y = blockIdx.y * blockDim.y + threadIdx.y;
  const int image = blockIdx.z;
  if (x >= g.size || y >= g.size) return;
  const std::size_t plane = static_cast<std::size_t>(g.size) * g.size;
  float* dst = out + static_cast<std::size_t>(image) * 3 * plane + static_cast<std::size_t>(y) * g.size + x;
  const int rx = x - g.pad_x, ry = y - g.pad_y;
  if (rx < 0 || ry < 0 || rx >= g.new_width || ry >= g.new_height) {
    dst[0] = dst[plane] = dst[2 * plane] = g.pad;
    return;
  }
  float rgb[3];
  core::letterbox_pixel(frames + image * image_stride, g.sampling, rx, ry, rgb);
  dst[0] = rgb[0];
  dst[plane] = rgb[1];
  dst[2 * plane] = rgb[2];
}

template <typename T>
Geometry geometry_of(const core::ImageView<T>& image, int size, float pad_value) {
  if (image.data == nullptr || image.height < 1 || image.width < 1)
    throw std::invalid_argument("letterbox: the image is empty (" + std::to_string(image.height) + "x" +
                                std::to_string(image.width) + ")");
  if (image.channels != 1 && image.channels != 3 && image.channels != 4)
    throw std::invalid_argument("letterbox: expected 1, 3 or 4 channels, got " + std::to_string(image.channels));
  if (size < 1) throw std::invalid_argument("letterbox: size must be >= 1, got " + std::to_string(size));
  const core::LetterboxGeometry lg = core::letterbox_geometry(image.width, image.height, size);
  Geometry g{};
  g.size = size;
  g.new_width = lg.new_width;
  g.new_height = lg.new_height;
  g.pad_x = lg.pad_x;
  g.pad_y = lg.pad_y;
  g.sampling.src_width = image.width;
  g.sampling.src_height = image.height;
  g.sampling.channels = image.channels;
  g.sampling.row_stride = image.row_stride;
  g.sampling.x_src_per_dst = 1.0 / (static_cast<double>(lg.new_width) / image.width);
  g.sampling.y_src_per_dst = 1.0 / (static_cast<double>(lg.new_height) / image.height);
  g.sampling.norm = 1.0f / static_cast<float>(sizeof(T) == 1 ? 255 : 65535);
  g.pad = pad_value / 255.0f;
  return g;
}

core::LetterboxParams params_of(const Geometry& g, const core::LetterboxGeometry& lg) {
  core::LetterboxParams p;
  p.scale = static_cast<float>(lg.scale);
  p.pad_x = static_cast<float>(g.pad_x);
  p.pad_y = static_cast<float>(g.pad_y);
  p.width = static_cast<float>(g.sampling.src_width);
  p.height = static_cast<float>(g.sampling.src_height);
  return p;
}

template <typename T>
core::LetterboxParams launch(const core::ImageView<T>& first, std::ptrdiff_t image_stride, int count, int size,
                             float pad_value, float* out, cudaStream_t stream) {
  const Geometry g = geometry_of(first, size, pad_value);
  if (out == nullptr) throw std::invalid_argument("letterbox: the output pointer is null");
  const dim3 threads(32, 8);
  const dim3 blocks(blocks_for(static_cast<std::size_t>(size), threads.x),
                    blocks_for(static_cast<std::size_t>(size), threads.y), static_cast<unsigned>(count));
  if (count > 0) {
    letterbox_kernel<T><<<blocks, threads, 0, stream>>>(first.data, image_stride, g, out);
    check_launch("letterbox_kernel");
  }
  return params_of(g, core::letterbox_geometry(first.width, first.height, size));
}

}  // namespace

core::LetterboxParams letterbox(const core::ImageView<std::uint8_t>& image, int size, float pad_value, float* out,
                                cudaStream_t stream) {
  return launch(image, 0, 1, size, pad_value, out, stream);
}

core::LetterboxParams letterbox(const core::ImageView<std::uint16_t>& image, int size, float pad_value, float* out,
                                cudaStream_t stream) {
  return launch(image, 0, 1, size, pad_value, out, stream);
}

void letterbox_batch(const core::ImageView<std::uint8_t>& first, std::ptrdiff_t image_stride, int count, int size,
                     float pad_value, float* out, core::LetterboxParams* params, cudaStream_t stream) {
  if (count < 0) throw std::invalid_argument("letterbox_batch: negative frame count " + std::to_string(count));
  const core::LetterboxParams p = launch(first, image_stride, count, size, pad_value, out, stream);
  for (int i = 0; i < count; ++i) params[i] = p;
}

}  // namespace fastcell::cuda
