// Circle segmentation with HSV refinement (the paper's "circle segmentation").
//
// Each detection box becomes a mask: the central disc of the box (radius min(w, h)/2 at the box
// centre) or, as an option, the ellipse inscribed in the box, intersected with an HSV in-range test.
// The HSV values are computed on the fly for the pixels inside the disc only (no full-frame HSV
// image), exactly as cv2.cvtColor(COLOR_BGR2HSV) computes them for 8-bit images.
//
// Pixel rule. Pixel (x, y) covers [x, x+1) × [y, y+1); it belongs to the disc of box
// (x1, y1, x2, y2) when its centre (x + 0.5, y + 0.5) satisfies
//     ((x + 0.5 − cx) / a)² + ((y + 0.5 − cy) / b)² ≤ 1,
// with cx = (x1 + x2)/2, cy = (y1 + y2)/2 and a = b = min(w, h)/2 (circle) or a = w/2, b = h/2
// (ellipse). So every mask pixel's centre lies inside its box. Boxes with w ≤ 0, h ≤ 0 or a
// non-finite coordinate have an empty mask.
#pragma once
#include <array>
#include <cstdint>

#include "core/geometry.hpp"   // FASTCELL_HD, min_of, max_of
#include "core/letterbox.hpp"  // ImageView

namespace fastcell::core {

enum class DiscShape { circle, ellipse };

// Inclusive HSV bounds in OpenCV units (H 0–179, S and V 0–255). low_h > high_h means the hue
// range wraps through 0 (red: e.g. 170..10). `enabled = false` keeps the disc alone.
struct HsvRange {
  bool enabled = false;
  std::uint8_t low[3] = {0, 0, 0};
  std::uint8_t high[3] = {179, 255, 255};
};

// OpenCV's fixed-point reciprocals for 8-bit BGR→HSV (12 fractional bits), rounded to nearest:
// saturation uses 255·2¹²/v, hue (range 180) uses 180·2¹²/(6·diff). Integer rounding (2n + d)/(2d)
// equals OpenCV's cvRound here because no quotient is an exact half.
struct HsvTables {
  std::array<int, 256> saturation{};  // indexed by V = max(B, G, R)
  std::array<int, 256> hue{};         // indexed by max − min
};
constexpr int kHsvShift = 12;
constexpr HsvTables make_hsv_tables() {
  HsvTables t{};
  for (int i = 1; i < 256; ++i) {
    t.saturation[static_cast<std::size_t>(i)] = (2 * (255 << kHsvShift) + i) / (2 * i);
    t.hue[static_cast<std::size_t>(i)] = (2 * (180 << kHsvShift) + 6 * i) / (12 * i);
  }
  return t;
}
inline constexpr HsvTables kHsvTables = make_hsv_tables();

struct Hsv {
  int h, s, v;
};

// cv2.cvtColor(COLOR_BGR2HSV) for one 8-bit pixel (H in 0..179).
FASTCELL_HD inline Hsv bgr_to_hsv(int b, int g, int r, const int* saturation_table, const int* hue_table) {
  const int v = max_of(max_of(b, g), r);
  const int vmin = min_of(min_of(b, g), r);
  const int diff = v - vmin;
  const int s = (diff * saturation_table[v] + (1 << (kHsvShift - 1))) >> kHsvShift;
  int h;
  if (v == r) {
    h = g - b;
  } else if (v == g) {
    h = b - r + 2 * diff;
  } else {
    h = r - g + 4 * diff;
  }
  h = (h * hue_table[diff] + (1 << (kHsvShift - 1))) >> kHsvShift;
  if (h < 0) h += 180;
  return {h, s, v};
}

// cv2.inRange semantics (inclusive), plus the hue wrap when low > high.
FASTCELL_HD inline bool hsv_in_range(const Hsv& p, const std::uint8_t* low, const std::uint8_t* high) {
  const bool hue_ok = low[0] <= high[0] ? (p.h >= low[0] && p.h <= high[0]) : (p.h >= low[0] || p.h <= high[0]);
  return hue_ok && p.s >= low[1] && p.s <= high[1] && p.v >= low[2] && p.v <= high[2];
}

// The same test as hsv_in_range(bgr_to_hsv(...)), with early exits: V first, then S, and the hue
// (a branchy division-table step) only when the hue range excludes something (`check_hue`).
FASTCELL_HD inline bool bgr_in_hsv_range(int b, int g, int r, const HsvRange& range, bool check_hue,
                                         const int* saturation_table, const int* hue_table) {
  const int v = max_of(max_of(b, g), r);
  if (v < range.low[2] || v > range.high[2]) return false;
  const int diff = v - min_of(min_of(b, g), r);
  const int s = (diff * saturation_table[v] + (1 << (kHsvShift - 1))) >> kHsvShift;
  if (s < range.low[1] || s > range.high[1]) return false;
  return !check_hue || hsv_in_range(bgr_to_hsv(b, g, r, saturation_table, hue_table), range.low, range.high);
}

// Whether a hue range [low, high] (wrapping when low > high) excludes any of OpenCV's hues 0..179.
FASTCELL_HD inline bool hue_range_restricts(const HsvRange& range) {
  return !(range.low[0] == 0 && range.high[0] >= 179) && !(range.low[0] == range.high[0] + 1);
}

// The disc (or ellipse) of one box: centre and semi-axes in pixel coordinates.
struct Disc {
  double cx, cy, a, b;
  bool empty;
};

FASTCELL_HD inline Disc disc_of_box(double x1, double y1, double x2, double y2, DiscShape shape) {
  const double w = x2 - x1, h = y2 - y1;
  Disc d{0.5 * (x1 + x2), 0.5 * (y1 + y2), 0.0, 0.0, true};
  // !(w > 0) also catches NaN; the centre must be finite too (inf - inf is NaN, inf alone is not).
  if (!(w > 0.0) || !(h > 0.0) || !(d.cx - d.cx == 0.0) || !(d.cy - d.cy == 0.0) || !(w - w == 0.0) ||
      !(h - h == 0.0)) {
    return d;
  }
  if (shape == DiscShape::circle) {
    d.a = d.b = 0.5 * min_of(w, h);
  } else {
    d.a = 0.5 * w;
    d.b = 0.5 * h;
  }
  d.empty = false;
  return d;
}

// The pixel rule above, without a division: dx²·b² + dy²·a² ≤ a²·b².
FASTCELL_HD inline bool pixel_in_disc(const Disc& d, int x, int y) {
  const double dx = x + 0.5 - d.cx, dy = y + 0.5 - d.cy;
  return dx * dx * d.b * d.b + dy * dy * d.a * d.a <= d.a * d.a * d.b * d.b;
}

// Segment `image` (3-channel BGR) with `count` boxes (x1, y1, x2, y2 in image pixels, row-major
// count×4) and their scores. Writes:
//   labels     H×W int32: 0 background, i + 1 where detection i's mask holds; where masks overlap
//              the higher score wins (ties: the lower index); NaN scores rank below every number.
//   segmented  H×W×3 uint8: the image inside the union of all masks, `fill` elsewhere.
// Either output may be null to skip it. Throws std::invalid_argument on a non-3-channel image.
void segment_cells(const ImageView<std::uint8_t>& image, const float* boxes, const float* scores, int count,
                   DiscShape shape, const HsvRange& hsv, const std::uint8_t fill[3], std::int32_t* labels,
                   std::uint8_t* segmented);

}  // namespace fastcell::core
