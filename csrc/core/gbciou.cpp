#include "core/gbciou.hpp"

#include <vector>

#include "core/geometry.hpp"
#include "core/nms.hpp"

namespace fastcell::core {

namespace {

std::int32_t class_of(const std::int32_t* class_ids, std::int64_t i) { return class_ids ? class_ids[i] : 0; }

// Algorithm 3 for one pair: B (kept, higher score) absorbs A or beats it; either way A is gone.
void absorb(Box& b, const Box& a, double threshold) {
  if (gbciou_penalty(b, a) < threshold) b = enclosing(b, a);
}

void merge_single(const float* boxes, const float* scores, const std::int32_t* class_ids, const std::int64_t* order,
                  std::size_t n, double threshold, Detections& out) {
  if (n == 0) return;
  Box top = load_box(boxes, static_cast<std::size_t>(order[0]));
  for (std::size_t k = 1; k < n; ++k) absorb(top, load_box(boxes, static_cast<std::size_t>(order[k])), threshold);
  out.push_back(top, scores[order[0]], class_of(class_ids, order[0]));
}

void merge_multi(const float* boxes, const float* scores, const std::int32_t* class_ids, const std::int64_t* order,
                 std::size_t n, const MergeOptions& options, Detections& out) {
  std::vector<Box> kept;
  std::vector<float> kept_area;
  std::vector<std::int64_t> kept_index;
  kept.reserve(n);
  kept_area.reserve(n);
  kept_index.reserve(n);
  for (std::size_t k = 0; k < n; ++k) {
    const Box a = load_box(boxes, static_cast<std::size_t>(order[k]));
    const float area_a = area(a);
    std::size_t match = kept.size();
    for (std::size_t m = 0; m < kept.size(); ++m) {
      if (iou_from(intersection(kept[m], a), kept_area[m], area_a) > options.merge_iou) {
        match = m;
        break;
      }
    }
    if (match == kept.size()) {  // overlaps no kept cell enough: a cell of its own
      kept.push_back(a);
      kept_area.push_back(area_a);
      kept_index.push_back(order[k]);
    } else {
      absorb(kept[match], a, options.threshold);
      kept_area[match] = area(kept[match]);
    }
  }
  for (std::size_t m = 0; m < kept.size(); ++m)
    out.push_back(kept[m], scores[kept_index[m]], class_of(class_ids, kept_index[m]));
}

}  // namespace

void gbciou_merge_ordered(const float* boxes, const float* scores, const std::int32_t* class_ids,
                          const std::int64_t* order, std::size_t n, const MergeOptions& options, Detections& out) {
  out.clear();
  switch (options.mode) {
    case MergeMode::none:
      for (std::size_t k = 0; k < n; ++k)
        out.push_back(load_box(boxes, static_cast<std::size_t>(order[k])), scores[order[k]],
                      class_of(class_ids, order[k]));
      break;
    case MergeMode::single:
      merge_single(boxes, scores, class_ids, order, n, options.threshold, out);
      break;
    case MergeMode::multi:
      merge_multi(boxes, scores, class_ids, order, n, options, out);
      break;
  }
}

Detections gbciou_merge(const float* boxes, const float* scores, const std::int32_t* class_ids, std::size_t n,
                        const MergeOptions& options) {
  std::vector<std::int64_t> order;
  order_by_score(scores, n, order);
  Detections out;
  gbciou_merge_ordered(boxes, scores, class_ids, order.data(), n, options, out);
  return out;
}

}  // namespace fastcell::core
