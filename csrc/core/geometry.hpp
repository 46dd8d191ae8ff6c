// Box geometry written once for host and device: area, intersection, IoU, GIoU, enclosing box and
// the GBCIOU penalty. Every function is inline and FASTCELL_HD so a CUDA twin of a kernel can call
// the very same per-element code (under nvcc FASTCELL_HD is __host__ __device__).
//
// Arithmetic order matters: the NumPy references in fastcell/reference/boxes.py perform the same
// float32 operations in the same order, so thresholds decide identically on both sides (IoU is
// computed in float32; the GBCIOU penalty in float64, as in the paper's 1e-16 guards).
#pragma once
#include "core/types.hpp"

#if defined(__CUDACC__)
#define FASTCELL_HD __host__ __device__
#else
#define FASTCELL_HD
#endif

namespace fastcell::core {

// std::min/std::max are not device functions; these also fix the order of operands.
template <typename T>
FASTCELL_HD inline T min_of(T a, T b) { return b < a ? b : a; }
template <typename T>
FASTCELL_HD inline T max_of(T a, T b) { return a < b ? b : a; }

// Area of a corner box; an inverted box (x2 < x1 or y2 < y1) has area 0, not a negative one.
FASTCELL_HD inline float area(float x1, float y1, float x2, float y2) {
  return max_of(0.0f, x2 - x1) * max_of(0.0f, y2 - y1);
}
FASTCELL_HD inline float area(const Box& b) { return area(b.x1, b.y1, b.x2, b.y2); }

FASTCELL_HD inline float intersection(const Box& a, const Box& b) {
  const float w = max_of(0.0f, min_of(a.x2, b.x2) - max_of(a.x1, b.x1));
  const float h = max_of(0.0f, min_of(a.y2, b.y2) - max_of(a.y1, b.y1));
  return w * h;
}

// IoU from an intersection and the two areas; 0 when the union is empty (two zero-area boxes).
// The union is empty only when both areas, hence the intersection, are 0, so dividing by 1 then
// gives 0 too; selecting the divisor rather than the quotient keeps the division unconditional,
// which lets the compiler vectorise the NMS loop (a guarded division could trap, so it will not).
FASTCELL_HD inline float iou_from(float inter, float area_a, float area_b) {
  const float uni = (area_a + area_b) - inter;
  return inter / (uni > 0.0f ? uni : 1.0f);
}
FASTCELL_HD inline float iou(const Box& a, const Box& b) {
  return iou_from(intersection(a, b), area(a), area(b));
}

// The smallest box holding both: min of the left/top edges, max of the right/bottom edges.
FASTCELL_HD inline Box enclosing(const Box& a, const Box& b) {
  return Box{min_of(a.x1, b.x1), min_of(a.y1, b.y1), max_of(a.x2, b.x2), max_of(a.y2, b.y2)};
}

// Generalized IoU (Rezatofighi et al. 2019): IoU - (E - U) / E, in [-1, 1].
FASTCELL_HD inline float giou(const Box& a, const Box& b) {
  const float inter = intersection(a, b);
  const float uni = (area(a) + area(b)) - inter;
  const float e = area(enclosing(a, b));
  const float iou_ab = uni > 0.0f ? inter / uni : 0.0f;
  return e > 0.0f ? iou_ab - (e - uni) / e : iou_ab;
}

// The GBCIOU penalty of the paper's Algorithm 3, in float64:
//   Union = area(A) + area(B) - I + 1e-16,  E = area(enclosing box) + 1e-16,  penalty = (E - Union) / E.
// The paper's line 4 writes the enclosing width as max(x2) - max(x1); the enclosing box is
// max(x2) - min(x1) wide (and likewise in y), which is what this computes.
FASTCELL_HD inline double gbciou_penalty(const Box& a, const Box& b) {
  const double ax1 = a.x1, ay1 = a.y1, ax2 = a.x2, ay2 = a.y2;
  const double bx1 = b.x1, by1 = b.y1, bx2 = b.x2, by2 = b.y2;
  const double area_a = max_of(0.0, ax2 - ax1) * max_of(0.0, ay2 - ay1);
  const double area_b = max_of(0.0, bx2 - bx1) * max_of(0.0, by2 - by1);
  const double iw = max_of(0.0, min_of(ax2, bx2) - max_of(ax1, bx1));
  const double ih = max_of(0.0, min_of(ay2, by2) - max_of(ay1, by1));
  const double inter = iw * ih;
  const double uni = ((area_a + area_b) - inter) + 1e-16;
  const double ew = max_of(0.0, max_of(ax2, bx2) - min_of(ax1, bx1));
  const double eh = max_of(0.0, max_of(ay2, by2) - min_of(ay1, by1));
  const double e = ew * eh + 1e-16;
  return (e - uni) / e;
}

}  // namespace fastcell::core
