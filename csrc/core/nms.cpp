#include "core/nms.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "core/geometry.hpp"
#include "core/types.hpp"

namespace fastcell::core {

void order_by_score(const float* scores, std::size_t n, std::vector<std::int64_t>& order) {
  order.resize(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = static_cast<std::int64_t>(i);
  // The index tie-break makes the order total, so std::sort is as deterministic as a stable sort.
  std::sort(order.begin(), order.end(), [scores](std::int64_t a, std::int64_t b) {
    return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
  });
}

void check_finite_boxes(const float* boxes, const float* scores, std::size_t n) {
  const std::size_t bad_box = first_magnitude_above(boxes, 4 * n, float_bits(kMaxCoordinate));
  if (bad_box != 4 * n) {
    const std::string where = "(row " + std::to_string(bad_box / 4) + ", column " + std::to_string(bad_box % 4) + ")";
    if (first_non_finite(boxes + bad_box, 1) == 0)
      throw std::invalid_argument("boxes contain NaN or infinity " + where);
    throw std::invalid_argument("boxes must lie within ±" + format_number(kMaxCoordinate) +
                                " pixels (2^62: past it box areas overflow float32), got " +
                                format_number(boxes[bad_box]) + " " + where);
  }
  if (scores != nullptr) {
    const std::size_t bad_score = first_non_finite(scores, n);
    if (bad_score != n)
      throw std::invalid_argument("scores contain NaN or infinity (index " + std::to_string(bad_score) + ")");
  }
}

namespace {

// Copies the candidates into score order as separate coordinate columns: the inner loop of NMS
// then reads five contiguous float streams, which the compiler turns into SIMD code.
void gather_sorted(const float* boxes, const std::int32_t* class_ids, std::size_t n, NmsWorkspace& ws) {
  ws.x1.resize(n);
  ws.y1.resize(n);
  ws.x2.resize(n);
  ws.y2.resize(n);
  ws.area.resize(n);
  ws.class_ids.resize(n);
  for (std::size_t k = 0; k < n; ++k) {
    const Box b = load_box(boxes, static_cast<std::size_t>(ws.order[k]));
    ws.x1[k] = b.x1;
    ws.y1[k] = b.y1;
    ws.x2[k] = b.x2;
    ws.y2[k] = b.y2;
    ws.area[k] = area(b);
    ws.class_ids[k] = class_ids ? class_ids[ws.order[k]] : 0;
  }
}

// Marks every candidate after `i` that box i suppresses. Branch-free so it vectorises; it is the
// whole cost of NMS on dense frames.
void suppress_after(std::size_t i, std::size_t n, float iou_threshold, NmsWorkspace& ws) {
  const float ax1 = ws.x1[i], ay1 = ws.y1[i], ax2 = ws.x2[i], ay2 = ws.y2[i], aa = ws.area[i];
  const std::int32_t ac = ws.class_ids[i];
  const float* x1 = ws.x1.data();
  const float* y1 = ws.y1.data();
  const float* x2 = ws.x2.data();
  const float* y2 = ws.y2.data();
  const float* ar = ws.area.data();
  const std::int32_t* cls = ws.class_ids.data();
  std::uint8_t* sup = ws.suppressed.data();
  for (std::size_t j = i + 1; j < n; ++j) {
    const float w = max_of(0.0f, min_of(ax2, x2[j]) - max_of(ax1, x1[j]));
    const float h = max_of(0.0f, min_of(ay2, y2[j]) - max_of(ay1, y1[j]));
    const float overlap = iou_from(w * h, aa, ar[j]);
    sup[j] |= static_cast<std::uint8_t>((overlap > iou_threshold) & (cls[j] == ac));
  }
}

}  // namespace

void nms(const float* boxes, const float* scores, const std::int32_t* class_ids, std::size_t n,
         float iou_threshold, NmsWorkspace& ws, std::vector<std::int64_t>& keep) {
  keep.clear();
  order_by_score(scores, n, ws.order);
  // A box only ever suppresses boxes of its own class, so each class is an independent greedy
  // NMS: grouping the candidates by class (score order kept within each) lets every kept box scan
  // only its own class instead of all later candidates — with C balanced classes, about C× less
  // work on dense frames, and the same kept set.
  if (class_ids != nullptr) {
    std::stable_sort(ws.order.begin(), ws.order.end(),
                     [class_ids](std::int64_t a, std::int64_t b) { return class_ids[a] < class_ids[b]; });
  }
  gather_sorted(boxes, class_ids, n, ws);
  ws.suppressed.assign(n, 0);
  for (std::size_t begin = 0; begin < n;) {
    std::size_t end = begin + 1;
    while (end < n && ws.class_ids[end] == ws.class_ids[begin]) ++end;
    for (std::size_t i = begin; i < end; ++i) {
      if (ws.suppressed[i]) continue;
      keep.push_back(ws.order[i]);
      suppress_after(i, end, iou_threshold, ws);
    }
    begin = end;
  }
  // Back from class order to the documented output order: score descending, ties by index.
  if (class_ids != nullptr) {
    std::sort(keep.begin(), keep.end(), [scores](std::int64_t a, std::int64_t b) {
      return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
    });
  }
}

std::vector<std::int64_t> nms(const float* boxes, const float* scores, const std::int32_t* class_ids,
                              std::size_t n, float iou_threshold) {
  NmsWorkspace ws;
  std::vector<std::int64_t> keep;
  nms(boxes, scores, class_ids, n, iou_threshold, ws, keep);
  return keep;
}

void box_iou(const float* a, std::size_t n, const float* b, std::size_t m, float* out) {
  std::vector<float> area_b(m);
  for (std::size_t j = 0; j < m; ++j) area_b[j] = area(load_box(b, j));
  for (std::size_t i = 0; i < n; ++i) {
    const Box bi = load_box(a, i);
    const float area_a = area(bi);
    float* row = out + i * m;
    for (std::size_t j = 0; j < m; ++j) row[j] = iou_from(intersection(bi, load_box(b, j)), area_a, area_b[j]);
  }
}

}  // namespace fastcell::core
