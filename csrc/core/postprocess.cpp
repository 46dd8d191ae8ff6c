#include "core/postprocess.hpp"

#include <cmath>
#include <stdexcept>
#include <string>

#include "core/nms.hpp"

namespace fastcell::core {

namespace {

// Scratch reused across the images of a batch, and across calls (one per thread), so the per-image
// path allocates only when a frame holds more candidates than any before it.
struct Workspace {
  Detections candidates;
  NmsWorkspace nms;
  std::vector<std::int64_t> keep;
  Detections merged;
};

float to_original(float v, double pad, double scale, double limit) {
  const double mapped = (static_cast<double>(v) - pad) / scale;
  return static_cast<float>(mapped < 0.0 ? 0.0 : (mapped > limit ? limit : mapped));
}

void map_back(const Detections& merged, const LetterboxParams& p, std::size_t max_detections, Detections& out) {
  out.clear();
  for (std::size_t i = 0; i < merged.size() && out.size() < max_detections; ++i) {
    const Box b = merged.box(i);
    const Box m{to_original(b.x1, p.pad_x, p.scale, p.width), to_original(b.y1, p.pad_y, p.scale, p.height),
                to_original(b.x2, p.pad_x, p.scale, p.width), to_original(b.y2, p.pad_y, p.scale, p.height)};
    if (m.x2 > m.x1 && m.y2 > m.y1) out.push_back(m, merged.scores[i], merged.class_ids[i]);
  }
}

void postprocess_image(const std::vector<HeadView>& heads, const LetterboxParams& params,
                       const PostprocessOptions& options, std::int64_t image, Workspace& ws, Detections& out) {
  decode_image(heads, options.num_classes, options.score_threshold, image, ws.candidates);
  const Detections& c = ws.candidates;
  nms(c.boxes.data(), c.scores.data(), options.class_agnostic ? nullptr : c.class_ids.data(), c.size(),
      options.nms_iou, ws.nms, ws.keep);
  gbciou_merge_ordered(c.boxes.data(), c.scores.data(), c.class_ids.data(), ws.keep.data(), ws.keep.size(),
                       options.merge, ws.merged);
  map_back(ws.merged, params, options.max_detections, out);
}

}  // namespace

void check_letterbox_params(const LetterboxParams* params, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    const LetterboxParams& p = params[i];
    const bool positive = p.scale > 0.0f && p.width > 0.0f && p.height > 0.0f && std::isfinite(p.scale) &&
                          std::isfinite(p.width) && std::isfinite(p.height);
    if (!positive || !std::isfinite(p.pad_x) || !std::isfinite(p.pad_y))
      throw std::invalid_argument("params[" + std::to_string(i) + "] = [scale " + std::to_string(p.scale) +
                                  ", pad_x " + std::to_string(p.pad_x) + ", pad_y " + std::to_string(p.pad_y) +
                                  ", width " + std::to_string(p.width) + ", height " + std::to_string(p.height) +
                                  "]: scale, width and height must be positive and finite, pads finite");
  }
}

std::vector<Detections> postprocess(const std::vector<HeadView>& heads, const LetterboxParams* params,
                                    const PostprocessOptions& options) {
  check_heads(heads, options.num_classes);
  const std::size_t batch = static_cast<std::size_t>(heads[0].batch);
  check_letterbox_params(params, batch);
  std::vector<Detections> out(batch);
  thread_local Workspace ws;
  for (std::size_t n = 0; n < batch; ++n)
    postprocess_image(heads, params[n], options, static_cast<std::int64_t>(n), ws, out[n]);
  return out;
}

}  // namespace fastcell::core
