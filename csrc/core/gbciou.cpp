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

// The kept cells as coordinate columns, so finding the first one that overlaps a box is a SIMD scan.
struct KeptCells {
  std::vector<float> x1, y1, x2, y2, area;
  std::vector<std::int64_t> index;  // the input index of the box that founded the cell (its B)

  std::size_t size() const { return index.size(); }
  Box box(std::size_t m) const { return Box{x1[m], y1[m], x2[m], y2[m]}; }
  void set(std::size_t m, const Box& b) {
    x1[m] = b.x1;
    y1[m] = b.y1;
    x2[m] = b.x2;
    y2[m] = b.y2;
    area[m] = fastcell::core::area(b);
  }
  void push_back(const Box& b, std::int64_t i) {
    x1.push_back(b.x1);
    y1.push_back(b.y1);
    x2.push_back(b.x2);
    y2.push_back(b.y2);
    area.push_back(fastcell::core::area(b));
    index.push_back(i);
  }

  // The first kept cell whose IoU with `a` is > floor, or size() for none. IoUs are computed a block
  // at a time without branches (vectorised), then the block is searched for the first hit.
  std::size_t first_overlapping(const Box& a, float floor) const {
    constexpr std::size_t kBlock = 64;
    const float area_a = fastcell::core::area(a);
    std::uint8_t hit[kBlock];
    for (std::size_t start = 0; start < size(); start += kBlock) {
      const std::size_t len = min_of(kBlock, size() - start);
      for (std::size_t k = 0; k < len; ++k) {
        const std::size_t m = start + k;
        const float w = max_of(0.0f, min_of(a.x2, x2[m]) - max_of(a.x1, x1[m]));
        const float h = max_of(0.0f, min_of(a.y2, y2[m]) - max_of(a.y1, y1[m]));
        hit[k] = static_cast<std::uint8_t>(iou_from(w * h, area[m], area_a) > floor);
      }
      for (std::size_t k = 0; k < len; ++k)
        if (hit[k]) return start + k;
    }
    return size();
  }
};

void merge_multi(const float* boxes, const float* scores, const std::int32_t* class_ids, const std::int64_t* order,
                 std::size_t n, const MergeOptions& options, Detections& out) {
  KeptCells kept;
  for (std::size_t k = 0; k < n; ++k) {
    const Box a = load_box(boxes, static_cast<std::size_t>(order[k]));
    const std::size_t match = kept.first_overlapping(a, options.merge_iou);
    if (match == kept.size()) {  // overlaps no kept cell enough: a cell of its own
      kept.push_back(a, order[k]);
    } else {
      Box b = kept.box(match);
      absorb(b, a, options.threshold);
      kept.set(match, b);
    }
  }
  for (std::size_t m = 0; m < kept.size(); ++m)
    out.push_back(kept.box(m), scores[kept.index[m]], class_of(class_ids, kept.index[m]));
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
