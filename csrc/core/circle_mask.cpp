// Circle segmentation with HSV refinement: see circle_mask.hpp for the pixel rule.
//
// The work is proportional to the area of the discs, not of the frame (apart from clearing the two
// outputs): each disc is walked row by row over the exact span of pixels it covers, the HSV test is
// evaluated only there, and detections are painted from the highest score down, a pixel keeping
// the first label it gets. That makes "the higher score wins" where discs overlap, and the segmented
// image the union of all masks (the authors' code intersected them, losing every cell but one).
#include "core/circle_mask.hpp"

#include "core/circle_mask_span.hpp"
#include "core/simd.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

// The span loop has AVX-512 and AVX2 twins (circle_mask_avx512.cpp, circle_mask_avx2.cpp), compiled
// with target attributes and chosen at run time, so a portable (baseline x86-64) build still runs
// SIMD code on the CPUs that have it.

namespace fastcell::core {
namespace circle_detail {

namespace {

SaturationBounds saturation_bounds(int low_s, int high_s) {
  SaturationBounds t{};
  constexpr int half = 1 << (kHsvShift - 1);
  for (int v = 0; v < 256; ++v) {
    const int reciprocal = kHsvTables.saturation[static_cast<std::size_t>(v)];
    // S ≥ low_s ⟺ diff · reciprocal ≥ low_s · 2¹² − 2¹¹;
    // S ≤ high_s ⟺ diff · reciprocal < (high_s + 1) · 2¹² − 2¹¹.
    int lowest = v + 1, highest = v;
    if (reciprocal == 0) {  // V = 0: diff = 0 and S = 0
      lowest = low_s == 0 ? 0 : 1;
      highest = 0;
    } else {
      const int need = (low_s << kHsvShift) - half;
      lowest = need <= 0 ? 0 : std::min(v + 1, (need + reciprocal - 1) / reciprocal);
      highest = std::min(v, (((high_s + 1) << kHsvShift) - half - 1) / reciprocal);
    }
    t.min_diff[v] = static_cast<std::uint8_t>(std::min(lowest, 255));
    t.max_diff[v] = static_cast<std::uint8_t>(highest);
  }
  return t;
}

}  // namespace

SpanRule span_rule(const HsvRange& hsv) {
  SpanRule rule{hsv, hsv.low[0], hsv.high[0], hsv.low[1], hsv.high[1], hsv.low[2], hsv.high[2],
                hsv.low[0] > hsv.high[0], hsv.low[2] > 0 || hsv.high[2] < 255, hsv.low[1] > 0, hsv.high[1] < 255,
                {}};
  if (hsv.enabled && (rule.check_low_s || rule.check_high_s)) {
    // The tables depend on the S bounds only; a stream keeps the same ones, so they are kept.
    thread_local int cached_low = -1, cached_high = -1;
    thread_local SaturationBounds cached{};
    if (cached_low != hsv.low[1] || cached_high != hsv.high[1]) {
      cached = saturation_bounds(hsv.low[1], hsv.high[1]);
      cached_low = hsv.low[1];
      cached_high = hsv.high[1];
    }
    rule.saturation = cached;
  }
  return rule;
}

}  // namespace circle_detail

namespace {

using namespace circle_detail;

// A double clamped into [lo, hi] before conversion, so huge or infinite coordinates stay defined.
int clamp_to_int(double v, int lo, int hi) {
  if (!(v >= lo)) return lo;  // also NaN
  if (v > hi) return hi;
  return static_cast<int>(v);
}

// floor(v) and ceil(v) clamped into [lo, hi], without a libm call (baseline x86-64 has no
// rounding instruction, and these run for every row of every disc).
int floor_clamped(double v, int lo, int hi) {
  if (!(v >= lo)) return lo;  // also NaN
  if (v > hi) return hi;
  const int t = static_cast<int>(v);  // truncation: one too high for negative non-integers
  return t - (static_cast<double>(t) > v ? 1 : 0);
}
int ceil_clamped(double v, int lo, int hi) {
  if (!(v >= lo)) return lo;
  if (v > hi) return hi;
  const int t = static_cast<int>(v);
  return t + (static_cast<double>(t) < v ? 1 : 0);
}

// The pixels [first, last] of row y that satisfy the pixel rule, clipped to [0, width). The span
// comes from the closed-form half-width and is then corrected by the exact test at its ends, so
// rounding in sqrt can never add or drop a pixel. Returns false when the row has no such pixel.
bool disc_row_span(const Disc& d, int y, int width, int& first, int& last) {
  const double dy = (y + 0.5 - d.cy) / d.b;
  const double half = d.a * std::sqrt(std::max(0.0, 1.0 - dy * dy));
  // Candidates come one pixel wide of the image on either side so that the correction can tell
  // "disc goes on past the edge" from "disc ends here".
  int lo = ceil_clamped(d.cx - half - 0.5, -1, width);
  int hi = floor_clamped(d.cx + half - 0.5, -1, width);
  while (lo > -1 && pixel_in_disc(d, lo - 1, y)) --lo;
  while (lo <= hi && !pixel_in_disc(d, lo, y)) ++lo;
  while (hi < width && hi >= lo && pixel_in_disc(d, hi + 1, y)) ++hi;
  while (hi >= lo && !pixel_in_disc(d, hi, y)) --hi;
  first = std::max(lo, 0);
  last = std::min(hi, width - 1);
  return first <= last;
}

// Detection order for painting: score descending, NaN last, ties by index.
std::vector<int> paint_order(const float* scores, int count) {
  std::vector<int> order(static_cast<std::size_t>(count));
  std::iota(order.begin(), order.end(), 0);
  auto key = [&](int i) {
    const float s = scores[i];
    return std::isnan(s) ? -INFINITY : s;
  };
  std::stable_sort(order.begin(), order.end(), [&](int i, int j) { return key(i) > key(j); });
  return order;
}

void fill_background(std::uint8_t* segmented, std::size_t pixels, const std::uint8_t fill[3]) {
  if (fill[0] == fill[1] && fill[1] == fill[2]) {
    std::memset(segmented, fill[0], pixels * 3);
    return;
  }
  for (std::size_t p = 0; p < pixels; ++p) {
    segmented[3 * p] = fill[0];
    segmented[3 * p + 1] = fill[1];
    segmented[3 * p + 2] = fill[2];
  }
}

template <bool kHsv, bool kHue>
SpanFn scalar_kernel(bool segmented) {
  return segmented ? &span_scalar<kHsv, kHue, true> : &span_scalar<kHsv, kHue, false>;
}

// The span kernel for this call's options and CPU, chosen once rather than tested per pixel.
SpanFn choose_span_kernel(const HsvRange& hsv, bool with_segmented) {
  const bool hue = hsv.enabled && hue_range_restricts(hsv);
#if FASTCELL_X86_SIMD
  const Simd level = simd();
  if (level >= Simd::avx512) return span_avx512(hsv.enabled, hue, with_segmented);
  if (level >= Simd::avx2) return span_avx2(hsv.enabled, hue, with_segmented);
#endif
  if (!hsv.enabled) return scalar_kernel<false, false>(with_segmented);
  return hue ? scalar_kernel<true, true>(with_segmented) : scalar_kernel<true, false>(with_segmented);
}

// One detection to paint: its disc, the image rows it may touch, its label, and where its row
// spans start in the span table.
struct PaintJob {
  Disc disc;
  int y_first, y_last;
  std::int32_t label;
  std::size_t spans;
};

// The non-empty detections in painting order (score descending, NaN last, ties by index), and the
// pixel span [first, last] of each on each of its rows (first > last: none), 8 bytes per disc row.
// The spans are worked out job by job in a tight loop before painting, where the out-of-order core
// can overlap the independent rows' division/sqrt chains.
std::vector<PaintJob> paint_jobs(const ImageView<std::uint8_t>& image, const float* boxes, const float* scores,
                                 int count, DiscShape shape, std::vector<int>& spans) {
  std::vector<PaintJob> jobs;
  jobs.reserve(static_cast<std::size_t>(count));
  std::size_t rows = 0;
  for (const int i : paint_order(scores, count)) {
    const float* box = boxes + 4 * static_cast<std::size_t>(i);
    const Disc disc = disc_of_box(box[0], box[1], box[2], box[3], shape);
    if (disc.empty) continue;
    const int y_first = clamp_to_int(std::floor(disc.cy - disc.b - 0.5), 0, image.height - 1);
    const int y_last = clamp_to_int(std::ceil(disc.cy + disc.b - 0.5), 0, image.height - 1);
    jobs.push_back({disc, y_first, y_last, i + 1, 2 * rows});
    rows += static_cast<std::size_t>(y_last - y_first + 1);
  }
  spans.resize(2 * rows);
#if FASTCELL_X86_SIMD
  const bool avx512 = simd() >= Simd::avx512;
#endif
  for (const PaintJob& job : jobs) {
    int* span = spans.data() + job.spans;
#if FASTCELL_X86_SIMD
    if (avx512) {
      disc_row_spans_avx512(job.disc, job.y_first, job.y_last - job.y_first + 1, image.width, span);
      continue;
    }
#endif
    for (int y = job.y_first; y <= job.y_last; ++y, span += 2) {
      if (!disc_row_span(job.disc, y, image.width, span[0], span[1])) span[0] = 1, span[1] = 0;
    }
  }
  return jobs;
}

}  // namespace

void segment_cells(const ImageView<std::uint8_t>& image, const float* boxes, const float* scores, int count,
                   DiscShape shape, const HsvRange& hsv, const std::uint8_t fill[3], std::int32_t* labels,
                   std::uint8_t* segmented) {
  if (image.channels != 3) {
    throw std::invalid_argument("segment_cells: expected a 3-channel BGR image, got " +
                                std::to_string(image.channels) + " channels");
  }
  if (count < 0) throw std::invalid_argument("segment_cells: negative box count");
  if (image.height < 1 || image.width < 1) return;
  const std::size_t width = static_cast<std::size_t>(image.width);
  std::vector<int> spans;
  const std::vector<PaintJob> jobs = paint_jobs(image, boxes, scores, count, shape, spans);
  // Jobs by first row, so each row only looks at the discs that cross it.
  std::vector<int> by_first_row(jobs.size());
  std::iota(by_first_row.begin(), by_first_row.end(), 0);
  auto first_row = [&](int j) { return jobs[static_cast<std::size_t>(j)].y_first; };
  std::stable_sort(by_first_row.begin(), by_first_row.end(), [&](int i, int j) { return first_row(i) < first_row(j); });
  const SpanFn paint_span = choose_span_kernel(hsv, segmented != nullptr);
  const SpanRule rule = span_rule(hsv);
  // Labels are needed to resolve overlaps even when the caller only wants the segmented image;
  // painting goes row by row, so one row of them is enough then.
  std::vector<std::int32_t> own_row(labels == nullptr ? width : 0);
  // One clear of each whole output (measured ~15 % faster than clearing row by row before painting).
  const std::size_t pixels = width * static_cast<std::size_t>(image.height);
  if (labels != nullptr) std::memset(labels, 0, pixels * sizeof(std::int32_t));
  if (segmented != nullptr) fill_background(segmented, pixels, fill);

  // Row by row, detections in painting order within a row.
  std::vector<int> active;  // indices into jobs, ascending = painting order
  std::size_t next = 0;
  for (int y = 0; y < image.height; ++y) {
    const std::size_t row = static_cast<std::size_t>(y) * width;
    std::int32_t* label_row = labels != nullptr ? labels + row : own_row.data();
    std::uint8_t* segmented_row = segmented != nullptr ? segmented + 3 * row : nullptr;
    if (labels == nullptr) std::memset(label_row, 0, width * sizeof(std::int32_t));

    active.erase(std::remove_if(active.begin(), active.end(),
                                [&](int j) { return jobs[static_cast<std::size_t>(j)].y_last < y; }),
                 active.end());
    for (; next < by_first_row.size() && first_row(by_first_row[next]) == y; ++next) {
      const int j = by_first_row[next];
      active.insert(std::lower_bound(active.begin(), active.end(), j), j);
    }
    const std::uint8_t* src_row = image.data + static_cast<std::ptrdiff_t>(y) * image.row_stride;
    for (const int j : active) {
      const PaintJob& job = jobs[static_cast<std::size_t>(j)];
      const int* span = spans.data() + job.spans + 2 * static_cast<std::size_t>(y - job.y_first);
      const int x_first = span[0], x_last = span[1];
      if (x_first > x_last) continue;
      const std::size_t x = static_cast<std::size_t>(x_first);
      paint_span(src_row + 3 * x, label_row + x, segmented_row != nullptr ? segmented_row + 3 * x : nullptr,
                 x_last - x_first + 1, job.label, rule);
    }
  }
}

}  // namespace fastcell::core
