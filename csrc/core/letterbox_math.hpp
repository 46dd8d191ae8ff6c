// Letterbox arithmetic per output element, written once for the CPU core and the CUDA twin.
//
// The sampling grid is cv2.resize(INTER_LINEAR)'s (see letterbox.cpp): output coordinate d of an
// axis resized from `src` to `dst` samples source coordinate (d + 0.5)·(src/dst) − 0.5, rounded to
// float, split into a floor index and a fractional weight, with both taps clamped to the edge pixel.
// A value is then (a + (b − a)·w): first down the rows (already multiplied by the 1/255 or 1/65535
// normalisation), then along the row. Built without FMA contraction on both sides (CMakeLists.txt:
// -ffp-contract=off for C++, --fmad=false for CUDA), the two produce the same float32 bits.
#pragma once
#include <math.h>

#include <cstddef>

#include "core/geometry.hpp"  // FASTCELL_HD

namespace fastcell::core {

// The two source indices (not yet multiplied by the channel step) and the weight of the second.
struct AxisTap {
  int first;
  int second;
  float weight;
};

// `src_per_dst` must be computed as 1.0 / (double(dst) / src), exactly as the CPU core does.
FASTCELL_HD inline AxisTap axis_tap(int d, int src, double src_per_dst) {
  float f = static_cast<float>((d + 0.5) * src_per_dst - 0.5);
  int s = static_cast<int>(floorf(f));
  f -= static_cast<float>(s);
  if (s < 0) {
    s = 0;
    f = 0.0f;
  }
  if (s >= src - 1) {
    s = src - 1;
    f = 0.0f;
  }
  const int next = s + 1 < src - 1 ? s + 1 : src - 1;
  return AxisTap{s, next, f};
}

// Linear blend a + (b − a)·w, the one formula of both passes.
FASTCELL_HD inline float lerp_tap(float a, float b, float w) { return a + (b - a) * w; }

// How a source image is sampled into the resized rectangle of the letterbox.
struct LetterboxSampling {
  int src_width, src_height, channels;  // channels: 1 (gray), 3 (BGR) or 4 (BGRA)
  std::ptrdiff_t row_stride;            // elements from one source row to the next
  double x_src_per_dst, y_src_per_dst;  // 1.0 / (double(new_size) / src_size) per axis
  float norm;                           // 1/255 (uint8) or 1/65535 (uint16)
};

// R, G, B of pixel (rx, ry) of the resized rectangle (before padding): the vertical blend of the two
// source rows at each of the two source columns, then the horizontal blend, as letterbox.cpp's two
// passes compute it (BGR(A) read in reverse; gray repeated).
template <typename T>
FASTCELL_HD inline void letterbox_pixel(const T* image, const LetterboxSampling& s, int rx, int ry, float rgb[3]) {
  const AxisTap tx = axis_tap(rx, s.src_width, s.x_src_per_dst);
  const AxisTap ty = axis_tap(ry, s.src_height, s.y_src_per_dst);
  const T* top = image + static_cast<std::ptrdiff_t>(ty.first) * s.row_stride;
  const T* bottom = image + static_cast<std::ptrdiff_t>(ty.second) * s.row_stride;
  for (int p = 0; p < 3; ++p) {
    const int ch = s.channels == 1 ? 0 : 2 - p;
    const int i0 = tx.first * s.channels + ch, i1 = tx.second * s.channels + ch;
    const float left = lerp_tap(static_cast<float>(top[i0]), static_cast<float>(bottom[i0]), ty.weight) * s.norm;
    const float right = lerp_tap(static_cast<float>(top[i1]), static_cast<float>(bottom[i1]), ty.weight) * s.norm;
    rgb[p] = lerp_tap(left, right, tx.weight);
  }
}

}  // namespace fastcell::core
