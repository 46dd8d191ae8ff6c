// Letterbox: separable bilinear resampling straight into planar RGB float32.
//
// Each output row is made in two passes over small buffers that stay in L1:
//   1. vertical: blend the two source rows it falls between into one float row (contiguous,
//      vectorised), already scaled to [0, 1];
//   2. horizontal: gather the two neighbouring source columns of each output column from that row
//      and write R, G and B to their own planes (the HWC→CHW and BGR→RGB steps cost nothing extra).
// Doing the vertical pass first means only the output's rows are ever blended, which is the cheap
// order for the usual case of shrinking a camera frame to 416×416.
//
// The sampling grid is exactly cv2.resize(INTER_LINEAR)'s: source coordinate (d + 0.5)·(src/dst) − 0.5,
// clamped to the edge pixel. OpenCV's 8-bit path then rounds weights to 11 bits and the result to an
// integer; we keep floats, so the two agree within one 8-bit step (tested).
#include "core/letterbox.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

// Hot loops are compiled several times and the best one for the running CPU is picked at load time
// (GCC/Clang function multi-versioning), so a portable wheel still uses AVX2/AVX-512 gathers.
#if defined(__x86_64__) && defined(__has_attribute) && !defined(__NVCC__)
#if __has_attribute(target_clones) && defined(__linux__)
#define FASTCELL_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#endif
#ifndef FASTCELL_MULTIVERSION
#define FASTCELL_MULTIVERSION
#endif

namespace fastcell::core {
namespace {

// The two taps and the weight of the second one, for every output coordinate along one axis.
struct AxisTaps {
  std::vector<int> first, second;  // source indices (times `step`, so they are element offsets)
  std::vector<float> weight;       // weight of `second`; `first` gets 1 - weight
};

// cv2.resize's INTER_LINEAR grid: scale computed as 1 / (dst / src) in double, the coordinate
// rounded to float, floor, and the edges clamped (outside the image → the edge pixel, weight 0).
AxisTaps axis_taps(int src, int dst, int step) {
  AxisTaps taps;
  taps.first.resize(static_cast<std::size_t>(dst));
  taps.second.resize(static_cast<std::size_t>(dst));
  taps.weight.resize(static_cast<std::size_t>(dst));
  const double src_per_dst = 1.0 / (static_cast<double>(dst) / src);
  for (int d = 0; d < dst; ++d) {
    float f = static_cast<float>((d + 0.5) * src_per_dst - 0.5);
    int s = static_cast<int>(std::floor(f));
    f -= static_cast<float>(s);
    if (s < 0) {
      s = 0;
      f = 0.0f;
    }
    if (s >= src - 1) {
      s = src - 1;
      f = 0.0f;
    }
    const int next = std::min(s + 1, src - 1);
    taps.first[static_cast<std::size_t>(d)] = s * step;
    taps.second[static_cast<std::size_t>(d)] = next * step;
    taps.weight[static_cast<std::size_t>(d)] = f;
  }
  return taps;
}

// row = (top + (bottom - top)·w) · norm, over n packed elements.
FASTCELL_MULTIVERSION
void blend_rows(const std::uint8_t* __restrict top, const std::uint8_t* __restrict bottom, float w, float norm,
                float* __restrict row, int n) {
  for (int i = 0; i < n; ++i) {
    const float a = static_cast<float>(top[i]);
    const float b = static_cast<float>(bottom[i]);
    row[i] = (a + (b - a) * w) * norm;
  }
}

FASTCELL_MULTIVERSION
void blend_rows(const std::uint16_t* __restrict top, const std::uint16_t* __restrict bottom, float w, float norm,
                float* __restrict row, int n) {
  for (int i = 0; i < n; ++i) {
    const float a = static_cast<float>(top[i]);
    const float b = static_cast<float>(bottom[i]);
    row[i] = (a + (b - a) * w) * norm;
  }
}

// Gray: one output channel of one row, out[x] = row[first[x]] + (row[second[x]] - row[first[x]])·w[x].
FASTCELL_MULTIVERSION
void resample_row(const float* __restrict row, const int* __restrict first, const int* __restrict second,
                  const float* __restrict weight, float* __restrict out, int n) {
  for (int x = 0; x < n; ++x) {
    const float a = row[first[x]];
    const float b = row[second[x]];
    out[x] = a + (b - a) * weight[x];
  }
}

// Colour: the same for B, G and R at once, written to three planes. The taps of one output pixel
// are two runs of 3 (or 4) adjacent floats, so with SSE2 each is one unaligned 4-float load (the 4th
// lane is the next pixel's blue, or alpha, and is dropped); a 4×4 transpose of four output pixels
// then yields four blues, four greens and four reds, stored straight into their planes. `row` must
// be readable one float past its last pixel.
void resample_color_row(const float* __restrict row, const int* __restrict first, const int* __restrict second,
                        const float* __restrict weight, int n, float* __restrict red, float* __restrict green,
                        float* __restrict blue) {
  int x = 0;
#if defined(__SSE2__)
  for (; x + 4 <= n; x += 4) {
    __m128 p[4];
    for (int k = 0; k < 4; ++k) {
      const __m128 a = _mm_loadu_ps(row + first[x + k]);
      const __m128 b = _mm_loadu_ps(row + second[x + k]);
      p[k] = _mm_add_ps(a, _mm_mul_ps(_mm_sub_ps(b, a), _mm_set1_ps(weight[x + k])));
    }
    _MM_TRANSPOSE4_PS(p[0], p[1], p[2], p[3]);  // now p[0] = 4 blues, p[1] = 4 greens, p[2] = 4 reds
    _mm_storeu_ps(blue + x, p[0]);
    _mm_storeu_ps(green + x, p[1]);
    _mm_storeu_ps(red + x, p[2]);
  }
#endif
  for (; x < n; ++x) {
    const float* a = row + first[x];
    const float* b = row + second[x];
    const float w = weight[x];
    blue[x] = a[0] + (b[0] - a[0]) * w;
    green[x] = a[1] + (b[1] - a[1]) * w;
    red[x] = a[2] + (b[2] - a[2]) * w;
  }
}

template <typename T>
void check_view(const ImageView<T>& image, int size) {
  if (image.data == nullptr || image.height < 1 || image.width < 1) {
    throw std::invalid_argument("letterbox: the image is empty (" + std::to_string(image.height) + "x" +
                                std::to_string(image.width) + ")");
  }
  if (image.channels != 1 && image.channels != 3 && image.channels != 4) {
    throw std::invalid_argument("letterbox: expected 1, 3 or 4 channels, got " + std::to_string(image.channels));
  }
  if (size < 1) throw std::invalid_argument("letterbox: size must be >= 1, got " + std::to_string(size));
}

template <typename T>
LetterboxParams letterbox_impl(const ImageView<T>& image, int size, float pad_value, float* out) {
  check_view(image, size);
  const LetterboxGeometry g = letterbox_geometry(image.width, image.height, size);
  const std::size_t plane = static_cast<std::size_t>(size) * static_cast<std::size_t>(size);
  const float pad = pad_value / 255.0f;
  const float norm = 1.0f / static_cast<float>(sizeof(T) == 1 ? 255 : 65535);
  const int channels = image.channels;
  const int row_elems = image.width * channels;

  const AxisTaps xs = axis_taps(image.width, g.new_width, channels);
  const AxisTaps ys = axis_taps(image.height, g.new_height, 1);
  // One float past the row: the colour resampler reads its taps 4 floats at a time.
  std::vector<float> row(static_cast<std::size_t>(row_elems) + 4, 0.0f);

  // Padding above and below the image, in all three planes.
  for (int c = 0; c < 3; ++c) {
    float* p = out + static_cast<std::size_t>(c) * plane;
    std::fill(p, p + static_cast<std::size_t>(g.pad_y) * size, pad);
    std::fill(p + static_cast<std::size_t>(g.pad_y + g.new_height) * size, p + plane, pad);
  }

  for (int y = 0; y < g.new_height; ++y) {
    const std::size_t yi = static_cast<std::size_t>(y);
    const T* top = image.data + static_cast<std::ptrdiff_t>(ys.first[yi]) * image.row_stride;
    const T* bottom = image.data + static_cast<std::ptrdiff_t>(ys.second[yi]) * image.row_stride;
    blend_rows(top, bottom, ys.weight[yi], norm, row.data(), row_elems);

    const std::size_t out_row = static_cast<std::size_t>(g.pad_y + y) * size;
    float* lines[3];  // R, G, B
    for (int c = 0; c < 3; ++c) {
      lines[c] = out + static_cast<std::size_t>(c) * plane + out_row;
      std::fill(lines[c], lines[c] + g.pad_x, pad);
      std::fill(lines[c] + g.pad_x + g.new_width, lines[c] + size, pad);
      lines[c] += g.pad_x;
    }
    if (channels == 1) {  // gray: G and B repeat R
      resample_row(row.data(), xs.first.data(), xs.second.data(), xs.weight.data(), lines[0], g.new_width);
      std::copy(lines[0], lines[0] + g.new_width, lines[1]);
      std::copy(lines[0], lines[0] + g.new_width, lines[2]);
    } else {  // BGR or BGRA: the planes come out reversed, as RGB
      resample_color_row(row.data(), xs.first.data(), xs.second.data(), xs.weight.data(), g.new_width, lines[0],
                         lines[1], lines[2]);
    }
  }

  LetterboxParams params;
  params.scale = static_cast<float>(g.scale);
  params.pad_x = static_cast<float>(g.pad_x);
  params.pad_y = static_cast<float>(g.pad_y);
  params.width = static_cast<float>(image.width);
  params.height = static_cast<float>(image.height);
  return params;
}

}  // namespace

LetterboxGeometry letterbox_geometry(int width, int height, int size) {
  LetterboxGeometry g{};
  g.scale = std::min(static_cast<double>(size) / width, static_cast<double>(size) / height);
  // Rounded half up (not to even), then kept within [1, size]: a 4000×1 strip still gets one row.
  auto resized = [&](int n) {
    const double v = std::floor(n * g.scale + 0.5);
    return static_cast<int>(std::clamp(v, 1.0, static_cast<double>(size)));
  };
  g.new_width = resized(width);
  g.new_height = resized(height);
  g.pad_x = (size - g.new_width) / 2;
  g.pad_y = (size - g.new_height) / 2;
  return g;
}

LetterboxParams letterbox(const ImageView<std::uint8_t>& image, int size, float pad_value, float* out) {
  return letterbox_impl(image, size, pad_value, out);
}

LetterboxParams letterbox(const ImageView<std::uint16_t>& image, int size, float pad_value, float* out) {
  return letterbox_impl(image, size, pad_value, out);
}

}  // namespace fastcell::core
