// Plain value types shared by the box kernels (decode, NMS, GBCIOU, postprocess) and their callers.
//
// Boxes are corner boxes (x1, y1, x2, y2) in pixels, x to the right and y down; a box with
// x2 <= x1 or y2 <= y1 is empty (zero area) and overlaps nothing. Arrays of boxes are passed as
// packed float rows of four, the memory layout of a C-contiguous (N, 4) float32 array.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
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

// Index of the first NaN or infinity in p[0..n), or n when all are finite. The common all-finite
// case is one branch-free pass over the exponent bits, which compilers vectorise; only a bad array
// pays for the second pass that locates the culprit for the error message.
inline std::size_t first_non_finite(const float* p, std::size_t n) {
  constexpr std::uint32_t exponent = 0x7f800000u;
  std::uint32_t bad = 0;
  for (std::size_t i = 0; i < n; ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, p + i, sizeof bits);
    bad |= static_cast<std::uint32_t>((bits & exponent) == exponent);
  }
  if (!bad) return n;
  for (std::size_t i = 0; i < n; ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, p + i, sizeof bits);
    if ((bits & exponent) == exponent) return i;
  }
  return n;  // unreachable
}

// How GBCIOU merging treats overlapping predictions (see gbciou.hpp).
enum class MergeMode { none, single, multi };

}  // namespace fastcell::core
