// GBCIOU merging of overlapping predictions: the paper's Algorithm 3, in three modes.
//
// For a higher-confidence box B and another box A (penalty from geometry.hpp, float64):
//   Union = area(A) + area(B) - I + 1e-16,  E = area of the smallest box enclosing both + 1e-16,
//   penalty = (E - Union) / E;
//   penalty <  threshold → B becomes the enclosing ("union") box of A and B, keeping B's score and class;
//   penalty >= threshold → B wins: A is dropped.
// The paper's line 4 writes the enclosing width as max - max; the true enclosing box is
// max(x2) - min(x1) wide, which is what is implemented.
//
// Boxes are visited by score, highest first (ties: lower index first). Merging ignores classes:
// after class-aware NMS the duplicates left are predictions of one cell under two classes.
//   none   — nothing merges; the boxes come back in visiting order.
//   single — the paper's setting, one cell per frame: every box folds into the top box, so the
//            result is one box (none for no input).
//   multi  — frames with many cells: box A is compared only with the first (highest-scoring) kept
//            box whose IoU with it is > merge_iou (float32 IoU); with no such box A is kept as a new
//            cell, so separate cells are never lost. One pass; kept boxes are not re-merged.
// Output order: by score, highest first (the kept boxes in visiting order).
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/types.hpp"

namespace fastcell::core {

struct MergeOptions {
  MergeMode mode = MergeMode::multi;
  double threshold = 0.5;  // merge when penalty < threshold
  float merge_iou = 0.5f;  // multi mode: candidates for merging have IoU > merge_iou
};

// Merges the candidates visited in `order` (n indices into boxes/scores/class_ids, already sorted by
// score descending) into `out` (cleared first). class_ids may be null (all class 0).
void gbciou_merge_ordered(const float* boxes, const float* scores, const std::int32_t* class_ids,
                          const std::int64_t* order, std::size_t n, const MergeOptions& options, Detections& out);

// Sorts by score (ties by index) and merges. Inputs must be finite.
Detections gbciou_merge(const float* boxes, const float* scores, const std::int32_t* class_ids, std::size_t n,
                        const MergeOptions& options);

}  // namespace fastcell::core
