// Circle segmentation with HSV refinement: see circle_mask.hpp for the pixel rule.
//
// The work is proportional to the area of the discs, not of the frame (apart from clearing the two
// outputs): each disc is walked row by row over the exact span of pixels it covers, the HSV test is
// evaluated only there, and detections are painted from the highest score down, a pixel keeping
// the first label it gets. That makes "the higher score wins" where discs overlap, and the segmented
// image the union of all masks (the authors' code intersected them, losing every cell but one).
#include "core/circle_mask.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

namespace fastcell::core {
namespace {

// A double clamped into [lo, hi] before conversion, so huge or infinite coordinates stay defined.
int clamp_to_int(double v, int lo, int hi) {
  if (!(v >= lo)) return lo;  // also NaN
  if (v > hi) return hi;
  return static_cast<int>(v);
}

// The pixels [first, last] of row y that satisfy the pixel rule, clipped to [0, width). The span
// comes from the closed-form half-width and is then corrected by the exact test at its ends, so
// rounding in sqrt can never add or drop a pixel. Returns false when the row has no such pixel.
bool disc_row_span(const Disc& d, int y, int width, int& first, int& last) {
  const double dy = (y + 0.5 - d.cy) / d.b;
  const double half = d.a * std::sqrt(std::max(0.0, 1.0 - dy * dy));
  // Candidates come one pixel wide of the image on either side so that the correction can tell
  // "disc goes on past the edge" from "disc ends here".
  int lo = clamp_to_int(std::ceil(d.cx - half - 0.5), -1, width);
  int hi = clamp_to_int(std::floor(d.cx + half - 0.5), -1, width);
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

// Paint one detection's mask into the pixels no higher-ranked detection has taken.
void paint_disc(const ImageView<std::uint8_t>& image, const Disc& disc, std::int32_t label, const HsvRange& hsv,
                std::int32_t* labels, std::uint8_t* segmented) {
  const int y_first = clamp_to_int(std::floor(disc.cy - disc.b - 0.5), 0, image.height - 1);
  const int y_last = clamp_to_int(std::ceil(disc.cy + disc.b - 0.5), 0, image.height - 1);
  const int* sat_table = kHsvTables.saturation.data();
  const int* hue_table = kHsvTables.hue.data();
  const bool check_hue = hue_range_restricts(hsv);
  for (int y = y_first; y <= y_last; ++y) {
    int x_first = 0, x_last = -1;
    if (!disc_row_span(disc, y, image.width, x_first, x_last)) continue;
    const std::uint8_t* src = image.data + static_cast<std::ptrdiff_t>(y) * image.row_stride;
    const std::size_t row = static_cast<std::size_t>(y) * static_cast<std::size_t>(image.width);
    for (int x = x_first; x <= x_last; ++x) {
      std::int32_t& l = labels[row + static_cast<std::size_t>(x)];
      if (l != 0) continue;
      const std::uint8_t* px = src + 3 * x;
      if (hsv.enabled && !bgr_in_hsv_range(px[0], px[1], px[2], hsv, check_hue, sat_table, hue_table)) continue;
      l = label;
      if (segmented != nullptr) std::memcpy(segmented + 3 * (row + static_cast<std::size_t>(x)), px, 3);
    }
  }
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
  const std::size_t pixels = static_cast<std::size_t>(image.height) * static_cast<std::size_t>(image.width);
  // Labels are needed to resolve overlaps even when the caller only wants the segmented image.
  std::vector<std::int32_t> own_labels;
  if (labels == nullptr) {
    own_labels.assign(pixels, 0);
    labels = own_labels.data();
  } else {
    std::fill(labels, labels + pixels, 0);
  }
  if (segmented != nullptr) fill_background(segmented, pixels, fill);
  if (pixels == 0) return;

  for (const int i : paint_order(scores, count)) {
    const float* box = boxes + 4 * static_cast<std::size_t>(i);
    const Disc disc = disc_of_box(box[0], box[1], box[2], box[3], shape);
    if (!disc.empty) paint_disc(image, disc, i + 1, hsv, labels, segmented);
  }
}

}  // namespace fastcell::core
