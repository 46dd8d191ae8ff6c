// The whole post-processing of a batch in one call:
//   decode (score >= score_threshold) → NMS (IoU > nms_iou suppresses; per class unless
//   class_agnostic) → GBCIOU merging → map back through the letterbox → clip → drop empty → cap.
//
// Mapping: a network-input point (xn, yn) of image n goes to ((xn - pad_x) / scale,
// (yn - pad_y) / scale) in float64, then is clipped to [0, width] × [0, height] and rounded to
// float32. A box left with no area (it lay wholly in the padding or outside the frame) is dropped.
// Each image keeps at most max_detections boxes, highest scores first.
#pragma once
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "core/decode.hpp"
#include "core/gbciou.hpp"
#include "core/letterbox.hpp"
#include "core/types.hpp"

namespace fastcell::core {

struct PostprocessOptions {
  int num_classes = 1;
  double score_threshold = 0.25;
  float nms_iou = 0.45f;
  MergeOptions merge{};
  bool class_agnostic = false;
  std::size_t max_detections = 300;  // std::numeric_limits<std::size_t>::max() for no cap
};

// Throws std::invalid_argument when params[i] has a scale, width or height that is not positive
// and finite, or a padding that is not finite.
void check_letterbox_params(const LetterboxParams* params, std::size_t n);

// params: one LetterboxParams per image (heads[0].batch of them). Validates heads and params,
// then returns one Detections per image in original-image pixels.
std::vector<Detections> postprocess(const std::vector<HeadView>& heads, const LetterboxParams* params,
                                    const PostprocessOptions& options);

}  // namespace fastcell::core
