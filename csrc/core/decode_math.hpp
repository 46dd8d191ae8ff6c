// YOLO decoding of one (anchor, cell), written once for the CPU core and the CUDA twin.
//
// The formulas of decode.hpp: cx = (sigmoid(tx) + gx)·stride, w = exp(min(tw, kMaxLogScale))·anchor_w,
// class = first argmax of the class logits, score = sigmoid(obj)·sigmoid(best logit), in float64
// rounded to float32 at the end. `block` points at the anchor's channel block [tx, ty, tw, th, obj,
// cls...] of one image; channel k of cell i is block[k·plane + i].
#pragma once
#include <math.h>

#include <cstdint>

#include "core/decode.hpp"    // kMaxLogScale
#include "core/geometry.hpp"  // FASTCELL_HD
#include "core/types.hpp"     // Box

namespace fastcell::core {

// Objectness logits below this cannot reach `score_threshold` (the class factor is at most 1), so
// background cells are skipped before any exp; the small margin leaves borderline cells to the exact
// test. Host-side (computed once per call), used by decode.cpp and the CUDA twin.
inline float decode_objectness_cutoff(double score_threshold) {
  if (!(score_threshold > 0.0)) return -INFINITY;
  if (score_threshold >= 1.0) return 30.0f;  // sigmoid(x) == 1.0 in float64 only for x > 36
  const double logit = log(score_threshold / (1.0 - score_threshold));
  return static_cast<float>(logit - 1e-4 * (1.0 + fabs(logit)));
}

FASTCELL_HD inline double sigmoid_f64(double x) { return 1.0 / (1.0 + exp(-x)); }

struct DecodedCell {
  Box box;
  float score;
  std::int32_t class_id;
};

// Decode cell i of an anchor block. Returns false (and leaves `out` unspecified) when the
// objectness logit is below `cutoff` or the score is below `score_threshold` (a NaN score fails).
FASTCELL_HD inline bool decode_cell(const float* block, std::int64_t plane, std::int64_t i, std::int64_t width,
                                    int num_classes, double stride, double anchor_w, double anchor_h, float cutoff,
                                    double score_threshold, DecodedCell& out) {
  const float obj = block[4 * plane + i];
  if (obj < cutoff) return false;
  int best = 0;
  float best_logit = block[5 * plane + i];
  for (int c = 1; c < num_classes; ++c) {
    const float v = block[(5 + c) * plane + i];
    if (v > best_logit) {
      best_logit = v;
      best = c;
    }
  }
  const double score = sigmoid_f64(obj) * sigmoid_f64(best_logit);
  if (!(score >= score_threshold)) return false;
  const double gx = static_cast<double>(i % width), gy = static_cast<double>(i / width);
  const double cx = (sigmoid_f64(block[i]) + gx) * stride;
  const double cy = (sigmoid_f64(block[plane + i]) + gy) * stride;
  const double w = exp(fmin(static_cast<double>(block[2 * plane + i]), kMaxLogScale)) * anchor_w;
  const double h = exp(fmin(static_cast<double>(block[3 * plane + i]), kMaxLogScale)) * anchor_h;
  out.box = Box{static_cast<float>(cx - w / 2), static_cast<float>(cy - h / 2), static_cast<float>(cx + w / 2),
                static_cast<float>(cy + h / 2)};
  out.score = static_cast<float>(score);
  out.class_id = best;
  return true;
}

}  // namespace fastcell::core
