// Greedy non-maximum suppression and pairwise IoU.
//
// Semantics (identical to fastcell.reference.boxes.nms):
//   * candidates are visited by score, highest first; equal scores by index, lowest first;
//   * a visited candidate that no kept box has suppressed is kept;
//   * a kept box suppresses every later candidate of the same class (of any class when class_ids
//     is null) whose IoU with it is strictly greater than iou_threshold (IoU in float32, see
//     geometry.hpp). So iou_threshold >= 1 keeps everything and a negative one keeps one box per class.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace fastcell::core {

// Candidate indices sorted by score descending, ties by index ascending (deterministic).
void order_by_score(const float* scores, std::size_t n, std::vector<std::int64_t>& order);

// Throws std::invalid_argument naming the first NaN/inf in boxes (n × 4) or scores (n), or the first
// box coordinate past ±kMaxCoordinate (types.hpp), where the float32 box geometry would overflow.
// Every kernel that takes boxes from a caller checks them with this first.
void check_finite_boxes(const float* boxes, const float* scores, std::size_t n);

// Scratch space reused across calls (postprocess runs NMS once per image without allocating).
struct NmsWorkspace {
  std::vector<std::int64_t> order;
  std::vector<float> x1, y1, x2, y2, area;
  std::vector<std::int32_t> class_ids;
  std::vector<std::uint8_t> suppressed;
};

// Kept indices into the input, by descending score (ties by index). boxes: n × 4 floats
// (x1, y1, x2, y2); class_ids may be null (class-agnostic). Inputs must pass check_finite_boxes.
// Cost: O(n log n) to sort, plus one pass over the later candidates of its class for every kept box,
// so O(n·k) for k kept, O(n²) when all n are kept (disjoint boxes). postprocess's n is bounded by
// the heads' cells; a direct caller with 10^5 or more disjoint boxes waits seconds to minutes.
void nms(const float* boxes, const float* scores, const std::int32_t* class_ids, std::size_t n,
         float iou_threshold, NmsWorkspace& ws, std::vector<std::int64_t>& keep);
std::vector<std::int64_t> nms(const float* boxes, const float* scores, const std::int32_t* class_ids,
                              std::size_t n, float iou_threshold);

// out[i * m + j] = IoU(a[i], b[j]) in float32, 0 where both boxes are empty; in [0, 1] for boxes that
// pass check_finite_boxes.
void box_iou(const float* a, std::size_t n, const float* b, std::size_t m, float* out);

}  // namespace fastcell::core
