// Internal to the circle segmentation (circle_mask*.cpp): the span rule and the span kernels'
// common signature, shared by the portable code and its AVX2 and AVX-512 twins, which live in
// files of their own (circle_mask_avx2.cpp, circle_mask_avx512.cpp) so each reads on its own.
// Not part of the core's interface: include circle_mask.hpp for that.
#pragma once
#include <cstdint>
#include <cstring>

#include "core/circle_mask.hpp"
#include "core/simd.hpp"

namespace fastcell::core::circle_detail {

// The HSV reciprocals of kHsvTables, computed in float by the SIMD span loops instead of looked up
// (a gather was measured slower): sat(v) = round(255·2¹²/v), hue(d) = round(180·2¹²/(6d)), both
// rounded half up. The float quotient is correctly rounded and no exact quotient lies within float
// rounding of a half, so these equal the tables bit for bit; the static_assert checks that for every
// index (constexpr float arithmetic is IEEE single precision, as at run time). Lanes with v = 0 or
// diff = 0 use 1 as divisor: their product with diff (or with the hue sector, 0 then) is 0 anyway.
inline constexpr float kSatNumerator = static_cast<float>(255 << kHsvShift);      // 1044480
inline constexpr float kHueNumerator = static_cast<float>((180 << kHsvShift) / 6);  // 122880, exact
inline constexpr bool reciprocals_match_tables() {
  for (int i = 1; i < 256; ++i) {
    const auto at = static_cast<std::size_t>(i);
    if (static_cast<int>(kSatNumerator / static_cast<float>(i) + 0.5f) != kHsvTables.saturation[at]) return false;
    if (static_cast<int>(kHueNumerator / static_cast<float>(i) + 0.5f) != kHsvTables.hue[at]) return false;
  }
  return true;
}
static_assert(reciprocals_match_tables(), "float HSV reciprocals must equal OpenCV's fixed-point tables");

// The saturation test as a bound on max − min per value V: S = round(diff · sat(V) / 2¹²) grows with
// diff, so low_s ≤ S ≤ high_s holds exactly when min_diff[V] ≤ diff ≤ max_diff[V]. Byte tables, so
// the AVX-512 span loop tests 64 pixels with two table lookups instead of a division per pixel.
struct SaturationBounds {
  std::uint8_t min_diff[256];  // V + 1 (never reached: diff ≤ V) where no diff gets S ≥ low_s
  std::uint8_t max_diff[256];
};

// The HSV range as given (for the scalar path), as plain ints (for the AVX2 lanes), and as the
// tests the AVX-512 byte loop needs.
struct SpanRule {
  HsvRange range;
  int low_h, high_h, low_s, high_s, low_v, high_v;
  bool hue_wraps;
  bool check_v, check_low_s, check_high_s;  // which bounds exclude something
  SaturationBounds saturation;
};

// The rule of one call's HSV range (the saturation tables are cached per thread).
SpanRule span_rule(const HsvRange& hsv);

// One row span of one detection, pixel by pixel: every pixel no higher-ranked detection has taken
// and that passes the HSV test (kHsv) gets `label` and, with kSegmented, its colour in `segmented`.
// The portable path, and the tail of spans shorter than one SIMD block.
template <bool kHsv, bool kHue, bool kSegmented>
inline void span_scalar(const std::uint8_t* src, std::int32_t* labels, std::uint8_t* segmented, int n,
                        std::int32_t label, const SpanRule& rule) {
  for (int i = 0; i < n; ++i) {
    if (labels[i] != 0) continue;
    const std::uint8_t* px = src + 3 * i;
    if constexpr (kHsv) {
      if (!bgr_in_hsv_range(px[0], px[1], px[2], rule.range, kHue, kHsvTables.saturation.data(),
                            kHsvTables.hue.data())) {
        continue;
      }
    }
    labels[i] = label;
    if constexpr (kSegmented) std::memcpy(segmented + 3 * i, px, 3);
  }
}

// Paints one row span of one detection: (src BGR, labels, segmented or null, pixels, label, rule).
using SpanFn = void (*)(const std::uint8_t*, std::int32_t*, std::uint8_t*, int, std::int32_t, const SpanRule&);

#if FASTCELL_X86_SIMD
// The twins of span_scalar<kHsv, kHue, kSegmented>: call only when simd() is at least their level.
SpanFn span_avx2(bool hsv, bool hue, bool segmented);
SpanFn span_avx512(bool hsv, bool hue, bool segmented);

// disc_row_span for `rows` consecutive rows from y_first (AVX-512): [first, last] per row written
// to spans (1, 0 for a row without pixels).
void disc_row_spans_avx512(const Disc& d, int y_first, int rows, int width, int* spans);
#endif

}  // namespace fastcell::core::circle_detail
