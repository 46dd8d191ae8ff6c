// Plain value types shared by the box kernels (decode, NMS, GBCIOU, postprocess) and their callers.
//
// Boxes are corner boxes (x1, y1, x2, y2) in pixels, x to the right and y down; a box with
// x2 <= x1 or y2 <= y1 is empty (zero area) and overlaps nothing. Arrays of boxes are passed as
// packed float rows of four, the memory layout of a C-contiguous (N, 4) float32 array.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace fastcell::core {

struct Box {
  float x1, y1, x2, y2;
};

// Row i of a packed (N, 4) float array as a Box (a copy: no aliasing games with the caller's data).
inline Box load_box(const float* rows, std::size_t i) {
  const float* p = rows + 4 * i;
  return Box{p[0], p[1], p[2], p[3]};
}

// Detections of one image, structure-of-arrays so each column hands straight to numpy.
struct Detections {
  std::vector<float> boxes;          // 4 floats per detection: x1, y1, x2, y2
  std::vector<float> scores;         // one per detection
  std::vector<std::int32_t> class_ids;

  std::size_t size() const noexcept { return scores.size(); }
  void clear() noexcept {
    boxes.clear();
    scores.clear();
    class_ids.clear();
  }
  void push_back(const Box& b, float score, std::int32_t class_id) {
    boxes.insert(boxes.end(), {b.x1, b.y1, b.x2, b.y2});
    scores.push_back(score);
    class_ids.push_back(class_id);
  }
  Box box(std::size_t i) const { return load_box(boxes.data(), i); }
};

// Box coordinates must lie within ±kMaxCoordinate = 2^62 pixels. Then every width (<= 2^63), area
// (<= 2^126) and sum of two areas (<= 2^127) in the float32 box geometry of geometry.hpp is finite,
// so an IoU is always in [0, 1]; a 2e19-pixel side would already overflow w·h (an IoU of inf or NaN).
// Decoding keeps its boxes inside this range (see check_head_shapes in decode.hpp).
constexpr float kMaxCoordinate = 4611686018427387904.0f;  // 2^62

// Index of the first value of p[0..n) whose magnitude is above the float whose bits are `limit_bits`
// (NaN counts as above anything), or n when there is none. The common all-good case is one
// branch-free pass over the bits, which compilers vectorise; only a bad array pays for the second
// pass that locates the culprit for the error message.
inline std::size_t first_magnitude_above(const float* p, std::size_t n, std::uint32_t limit_bits) {
  // |x| as bits is monotonic in |x|, and NaN's bits lie above infinity's. Masked, they fit int32, so
  // the comparison is a signed one, which every SIMD level has.
  const auto limit = static_cast<std::int32_t>(limit_bits & 0x7fffffffu);
  std::uint32_t bad = 0;
  for (std::size_t i = 0; i < n; ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, p + i, sizeof bits);
    bad |= static_cast<std::uint32_t>(static_cast<std::int32_t>(bits & 0x7fffffffu) > limit);
  }
  if (!bad) return n;
  for (std::size_t i = 0; i < n; ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, p + i, sizeof bits);
    if (static_cast<std::int32_t>(bits & 0x7fffffffu) > limit) return i;
  }
  return n;  // unreachable
}

inline std::uint32_t float_bits(float v) {
  std::uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return bits;
}

// Index of the first NaN or infinity in p[0..n), or n when all are finite.
inline std::size_t first_non_finite(const float* p, std::size_t n) {
  return first_magnitude_above(p, n, 0x7f7fffffu);  // the largest finite float
}

// A number for an error message: "3e+38", "0.25", "nan" (std::to_string prints 39 digits of a huge
// float, and "0.000000" for a tiny one).
inline std::string format_number(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%.9g", v);
  return text;
}

// How GBCIOU merging treats overlapping predictions (see gbciou.hpp).
enum class MergeMode { none, single, multi };

}  // namespace fastcell::core
