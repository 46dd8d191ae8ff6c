// YOLOv3 head decoding: raw head outputs → candidate boxes in network-input pixels.
//
// A head is a C-contiguous float32 tensor (batch, A·(C+5), H, W); channel a·(C+5)+k of anchor a
// holds [tx, ty, tw, th, obj, cls_0 … cls_{C-1}][k] (the YOLOv3 layout). For the cell (gx, gy):
//   cx = (sigmoid(tx) + gx) · stride,   w = exp(min(tw, kMaxLogScale)) · anchor_w   (pixels)
//   cy = (sigmoid(ty) + gy) · stride,   h = exp(min(th, kMaxLogScale)) · anchor_h
//   box = (cx - w/2, cy - h/2, cx + w/2, cy + h/2)
//   class = argmax of the class logits (first on ties), score = sigmoid(obj) · sigmoid(best logit)
// and the candidate is kept when score >= score_threshold. The arithmetic is float64, rounded to
// float32 at the end, as in fastcell.reference.boxes.decode.
//
// Output order: head by head, anchor by anchor, then cells row-major (gy, then gx).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/types.hpp"

namespace fastcell::core {

// tw, th are clamped to log(1000 / 16) before exp (detectron2's bbox_xform_clip): a box at most
// 62.5× its anchor, so a wild logit gives a huge finite box instead of an infinite one.
constexpr double kMaxLogScale = 4.135166556742356;  // log(1000 / 16)

// A read-only view of one head output for the whole batch.
struct HeadView {
  const float* data = nullptr;     // batch × channels × height × width, C-contiguous
  std::int64_t batch = 0;
  std::int64_t channels = 0;       // num_anchors · (num_classes + 5)
  std::int64_t height = 0;
  std::int64_t width = 0;
  float stride = 0.0f;             // network-input pixels per cell
  const float* anchors = nullptr;  // num_anchors × (w, h), pixels
  int num_anchors = 0;
};

// The largest num_classes: the class loop indexes channel 5 + c in int.
constexpr int kMaxClasses = 2147483647 - 5;

// The largest anchor side, 2^56 pixels: a box is at most exp(kMaxLogScale) = 62.5× its anchor, so its
// half-size stays within kMaxCoordinate / 2 (types.hpp) and decoded boxes within ±kMaxCoordinate.
constexpr float kMaxAnchor = 72057594037927936.0f;  // 2^56

// Throws std::invalid_argument when the heads disagree on the batch size, num_classes is outside
// [1, kMaxClasses], a channel count is not num_anchors · (num_classes + 5), an anchor is not in
// (0, kMaxAnchor], or a stride is not positive with stride · max(height, width) <= kMaxCoordinate / 2.
// Reads no head value (the CUDA twin checks the values on the device).
void check_head_shapes(const std::vector<HeadView>& heads, int num_classes);

// check_head_shapes, and throws std::invalid_argument when any head value is NaN or infinite (a
// broken model must never silently produce, or hide, boxes).
void check_heads(const std::vector<HeadView>& heads, int num_classes);

// Candidates of image `image` into `out` (cleared first). The heads must have passed check_heads.
void decode_image(const std::vector<HeadView>& heads, int num_classes, double score_threshold,
                  std::int64_t image, Detections& out);

// check_heads, then decode_image for every image of the batch.
std::vector<Detections> decode(const std::vector<HeadView>& heads, int num_classes, double score_threshold);

}  // namespace fastcell::core
