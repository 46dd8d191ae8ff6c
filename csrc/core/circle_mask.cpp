// Circle segmentation with HSV refinement: see circle_mask.hpp for the pixel rule.
//
// The work is proportional to the area of the discs, not of the frame (apart from clearing the two
// outputs): each disc is walked row by row over the exact span of pixels it covers, the HSV test is
// evaluated only there, and detections are painted from the highest score down, a pixel keeping
// the first label it gets. That makes "the higher score wins" where discs overlap, and the segmented
// image the union of all masks (the authors' code intersected them, losing every cell but one).
#include "core/circle_mask.hpp"

#include "core/simd.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

// The span loop has AVX-512 and AVX2 twins, compiled with target attributes and chosen at run time,
// so a portable (baseline x86-64) build still runs SIMD code on the CPUs that have it.

namespace fastcell::core {
namespace {

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

// The HSV reciprocals of kHsvTables, computed in float by the SIMD span loops instead of looked up
// (a gather was measured slower): sat(v) = round(255·2¹²/v), hue(d) = round(180·2¹²/(6d)), both
// rounded half up. The float quotient is correctly rounded and no exact quotient lies within float
// rounding of a half, so these equal the tables bit for bit; the static_assert checks that for every
// index (constexpr float arithmetic is IEEE single precision, as at run time). Lanes with v = 0 or
// diff = 0 use 1 as divisor: their product with diff (or with the hue sector, 0 then) is 0 anyway.
constexpr float kSatNumerator = static_cast<float>(255 << kHsvShift);      // 1044480
constexpr float kHueNumerator = static_cast<float>((180 << kHsvShift) / 6);  // 122880, exact
constexpr bool reciprocals_match_tables() {
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

// The HSV range as given (for the scalar path), as plain ints (for the AVX2 lanes), and as the
// tests the AVX-512 byte loop needs.
struct SpanRule {
  HsvRange range;
  int low_h, high_h, low_s, high_s, low_v, high_v;
  bool hue_wraps;
  bool check_v, check_low_s, check_high_s;  // which bounds exclude something
  SaturationBounds saturation;
};

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

// One row span of one detection, pixel by pixel: every pixel no higher-ranked detection has taken
// and that passes the HSV test (kHsv) gets `label` and, with kSegmented, its colour in `segmented`.
// The portable path, and the tail of spans shorter than one SIMD block.
template <bool kHsv, bool kHue, bool kSegmented>
void span_scalar(const std::uint8_t* src, std::int32_t* labels, std::uint8_t* segmented, int n, std::int32_t label,
                 const SpanRule& rule) {
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

#if FASTCELL_X86_SIMD
// The same, 8 pixels at a time with AVX2 (the same integer and float operations lane by lane, so
// the same answer bit for bit). A span's last partial block is done as the block ending at its last
// pixel, overlapping the one before: painting is idempotent (a pixel this call took now has a
// non-zero label and is left alone), so visiting a pixel twice changes nothing.
struct Avx2Rule {
  __m256i low_h, high_h, low_s, high_s, low_v, high_v;  // bounds widened by one: > low-1, < high+1
};

__attribute__((target("avx2"))) inline __m256i within(__m256i x, __m256i below, __m256i above) {
  return _mm256_and_si256(_mm256_cmpgt_epi32(x, below), _mm256_cmpgt_epi32(above, x));
}

// round(numerator / max(x, 1)) half up: kHsvTables' entry for x (see kSatNumerator).
__attribute__((target("avx2"))) inline __m256i reciprocal(float numerator, __m256i x) {
  const __m256 d = _mm256_cvtepi32_ps(_mm256_max_epi32(x, _mm256_set1_epi32(1)));
  const __m256 q = _mm256_div_ps(_mm256_set1_ps(numerator), d);
  return _mm256_cvttps_epi32(_mm256_add_ps(q, _mm256_set1_ps(0.5f)));
}

// (x · reciprocal + 2¹¹) >> 12, arithmetic shift as in the scalar code.
__attribute__((target("avx2"))) inline __m256i fixed_point(__m256i x, __m256i rec) {
  return _mm256_srai_epi32(_mm256_add_epi32(_mm256_mullo_epi32(x, rec), _mm256_set1_epi32(1 << (kHsvShift - 1))),
                           kHsvShift);
}

template <bool kHue>
__attribute__((target("avx2"))) inline __m256i hsv_lanes(__m256i b, __m256i g, __m256i r, const Avx2Rule& rule,
                                                         bool hue_wraps) {
  const __m256i v = _mm256_max_epi32(_mm256_max_epi32(b, g), r);
  const __m256i diff = _mm256_sub_epi32(v, _mm256_min_epi32(_mm256_min_epi32(b, g), r));
  const __m256i s = fixed_point(diff, reciprocal(kSatNumerator, v));
  __m256i ok = _mm256_and_si256(within(v, rule.low_v, rule.high_v), within(s, rule.low_s, rule.high_s));
  if constexpr (kHue) {
    const __m256i max_is_r = _mm256_cmpeq_epi32(v, r), max_is_g = _mm256_cmpeq_epi32(v, g);
    const __m256i from_r = _mm256_sub_epi32(g, b);
    const __m256i from_g = _mm256_add_epi32(_mm256_sub_epi32(b, r), _mm256_slli_epi32(diff, 1));
    const __m256i from_b = _mm256_add_epi32(_mm256_sub_epi32(r, g), _mm256_slli_epi32(diff, 2));
    const __m256i sector = _mm256_blendv_epi8(_mm256_blendv_epi8(from_b, from_g, max_is_g), from_r, max_is_r);
    __m256i h = fixed_point(sector, reciprocal(kHueNumerator, diff));
    h = _mm256_add_epi32(h, _mm256_and_si256(_mm256_cmpgt_epi32(_mm256_setzero_si256(), h), _mm256_set1_epi32(180)));
    const __m256i above = _mm256_cmpgt_epi32(h, rule.low_h), below = _mm256_cmpgt_epi32(rule.high_h, h);
    ok = _mm256_and_si256(ok, hue_wraps ? _mm256_or_si256(above, below) : _mm256_and_si256(above, below));
  }
  return ok;
}

template <bool kHsv, bool kHue, bool kSegmented>
__attribute__((target("avx2"))) void span_avx2(const std::uint8_t* src, std::int32_t* labels,
                                               std::uint8_t* segmented, int n, std::int32_t label,
                                               const SpanRule& r) {
  if (n < 8) return span_scalar<kHsv, kHue, kSegmented>(src, labels, segmented, n, label, r);
  const Avx2Rule rule{_mm256_set1_epi32(r.low_h - 1), _mm256_set1_epi32(r.high_h + 1),
                      _mm256_set1_epi32(r.low_s - 1), _mm256_set1_epi32(r.high_s + 1),
                      _mm256_set1_epi32(r.low_v - 1), _mm256_set1_epi32(r.high_v + 1)};
  // 8 BGR pixels = 24 bytes: `lo` holds bytes 0..15, `hi` bytes 16..23. Shuffles gather the blues
  // and greens into one register (bytes 0..7, 8..15) and the reds into another.
  const __m128i blue_green_lo = _mm_setr_epi8(0, 3, 6, 9, 12, 15, -1, -1, 1, 4, 7, 10, 13, -1, -1, -1);
  const __m128i blue_green_hi = _mm_setr_epi8(-1, -1, -1, -1, -1, -1, 2, 5, -1, -1, -1, -1, -1, 0, 3, 6);
  const __m128i red_lo = _mm_setr_epi8(2, 5, 8, 11, 14, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  const __m128i red_hi = _mm_setr_epi8(-1, -1, -1, -1, -1, 1, 4, 7, -1, -1, -1, -1, -1, -1, -1, -1);
  // Pixel k's bit of the take mask, repeated over its 3 bytes, to widen the mask to BGR bytes.
  const __m128i bits_lo = _mm_setr_epi8(1, 1, 1, 2, 2, 2, 4, 4, 4, 8, 8, 8, 16, 16, 16, 32);
  const __m128i bits_hi = _mm_setr_epi8(32, 32, 64, 64, 64, -128, -128, -128, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m256i label_lanes = _mm256_set1_epi32(label);
  auto block = [&](int i) __attribute__((target("avx2"))) {
    const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 3 * i));
    const __m128i hi = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + 3 * i + 16));
    __m256i* label_at = reinterpret_cast<__m256i*>(labels + i);
    const __m256i old = _mm256_loadu_si256(label_at);
    __m256i take = _mm256_cmpeq_epi32(old, _mm256_setzero_si256());
    if constexpr (kHsv) {
      const __m128i bg = _mm_or_si128(_mm_shuffle_epi8(lo, blue_green_lo), _mm_shuffle_epi8(hi, blue_green_hi));
      const __m128i rr = _mm_or_si128(_mm_shuffle_epi8(lo, red_lo), _mm_shuffle_epi8(hi, red_hi));
      const __m256i b = _mm256_cvtepu8_epi32(bg), g = _mm256_cvtepu8_epi32(_mm_srli_si128(bg, 8));
      take = _mm256_and_si256(take, hsv_lanes<kHue>(b, g, _mm256_cvtepu8_epi32(rr), rule, r.hue_wraps));
    }
    _mm256_storeu_si256(label_at, _mm256_or_si256(old, _mm256_and_si256(label_lanes, take)));
    if constexpr (kSegmented) {
      const __m128i bits = _mm_set1_epi8(static_cast<char>(_mm256_movemask_ps(_mm256_castsi256_ps(take))));
      const __m128i mask_lo = _mm_cmpeq_epi8(_mm_and_si128(bits, bits_lo), bits_lo);
      const __m128i mask_hi = _mm_cmpeq_epi8(_mm_and_si128(bits, bits_hi), bits_hi);
      __m128i* out = reinterpret_cast<__m128i*>(segmented + 3 * i);
      __m128i* out_hi = reinterpret_cast<__m128i*>(segmented + 3 * i + 16);
      _mm_storeu_si128(out, _mm_blendv_epi8(_mm_loadu_si128(out), lo, mask_lo));
      _mm_storel_epi64(out_hi, _mm_blendv_epi8(_mm_loadl_epi64(out_hi), hi, mask_hi));
    }
  };
  int i = 0;
  for (; i + 8 <= n; i += 8) block(i);
  if (i < n) block(n - 8);
}
#endif

#if FASTCELL_X86_SIMD
// The same with AVX-512 (BW, VBMI) and BMI2, 64 pixels (192 BGR bytes, three registers) at a time:
// byte permutes split the channels, V and S are tested in bytes (S through the SaturationBounds
// tables), and the stores are masked, so a span's partial last block needs no special case and
// nothing outside the span is touched. Ranges that restrict the hue compute it in 32-bit lanes, 16
// pixels at a time, with the same arithmetic as the scalar code.
#define FASTCELL_AVX512 __attribute__((target("avx512f,avx512bw,avx512vbmi,bmi2")))
// GCC 12's AVX-512 headers start many intrinsics from _mm512_undefined_epi32(), which its
// -Wmaybe-uninitialized then reports once inlined here: a known false positive, silenced locally.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

constexpr __mmask16 kAllLanes = 0xFFFF;
constexpr __mmask64 kLowBytes = 0x1111111111111111ULL;  // byte 0 of each 32-bit lane

FASTCELL_AVX512 inline __mmask16 within(__m512i x, __m512i low, __m512i high) {
  return _mm512_cmpge_epi32_mask(x, low) & _mm512_cmple_epi32_mask(x, high);
}

// round(numerator / max(x, 1)) half up: kHsvTables' entry for x (see kSatNumerator).
FASTCELL_AVX512 inline __m512i reciprocal(float numerator, __m512i x) {
  const __m512 d = _mm512_maskz_cvtepi32_ps(kAllLanes, _mm512_max_epi32(x, _mm512_set1_epi32(1)));
  const __m512 q = _mm512_div_ps(_mm512_set1_ps(numerator), d);
  return _mm512_maskz_cvttps_epi32(kAllLanes, _mm512_add_ps(q, _mm512_set1_ps(0.5f)));
}

FASTCELL_AVX512 inline __m512i fixed_point(__m512i x, __m512i rec) {
  return _mm512_srai_epi32(_mm512_add_epi32(_mm512_mullo_epi32(x, rec), _mm512_set1_epi32(1 << (kHsvShift - 1))),
                           kHsvShift);
}

// Where channel c of pixel p lies among a block's 192 bytes: byte 3p + c, in the first two
// registers (index < 128) or the third (`from_third`).
// `lane` is the same for 16 pixels in 32-bit lanes: lane j's low byte picks byte 3j + c.
struct ChannelPicks {
  std::uint8_t index[3][64];
  std::uint64_t from_third[3];
  std::uint8_t lane[3][64];
};
constexpr ChannelPicks make_channel_picks() {
  ChannelPicks picks{};
  for (int c = 0; c < 3; ++c) {
    for (int p = 0; p < 64; ++p) {
      picks.index[c][p] = static_cast<std::uint8_t>(3 * p + c);
      if (3 * p + c >= 128) picks.from_third[c] |= 1ULL << p;
    }
    for (int j = 0; j < 16; ++j) picks.lane[c][4 * j] = static_cast<std::uint8_t>(3 * j + c);
  }
  return picks;
}
constexpr ChannelPicks kChannelPicks = make_channel_picks();

// The full HSV test (hue included) of the 16 pixels at `src` (the first `n` of them), in 32-bit lanes.
FASTCELL_AVX512 inline __mmask16 hsv_lanes_with_hue(const std::uint8_t* src, int n, const HsvRange& range) {
  const __mmask16 lanes = static_cast<__mmask16>(_bzhi_u32(0xFFFF, static_cast<unsigned>(n)));
  const __m512i bgr = _mm512_maskz_loadu_epi8(_bzhi_u64(~0ULL, static_cast<unsigned>(3 * n)), src);
  const __m512i b = _mm512_maskz_permutexvar_epi8(kLowBytes, _mm512_loadu_si512(kChannelPicks.lane[0]), bgr);
  const __m512i g = _mm512_maskz_permutexvar_epi8(kLowBytes, _mm512_loadu_si512(kChannelPicks.lane[1]), bgr);
  const __m512i r = _mm512_maskz_permutexvar_epi8(kLowBytes, _mm512_loadu_si512(kChannelPicks.lane[2]), bgr);
  const __m512i v = _mm512_max_epi32(_mm512_max_epi32(b, g), r);
  const __m512i diff = _mm512_sub_epi32(v, _mm512_min_epi32(_mm512_min_epi32(b, g), r));
  const __m512i s = fixed_point(diff, reciprocal(kSatNumerator, v));
  __mmask16 ok = lanes & within(v, _mm512_set1_epi32(range.low[2]), _mm512_set1_epi32(range.high[2])) &
                 within(s, _mm512_set1_epi32(range.low[1]), _mm512_set1_epi32(range.high[1]));
  const __mmask16 max_is_r = _mm512_cmpeq_epi32_mask(v, r), max_is_g = _mm512_cmpeq_epi32_mask(v, g);
  __m512i sector = _mm512_add_epi32(_mm512_sub_epi32(r, g), _mm512_slli_epi32(diff, 2));
  const __m512i from_g = _mm512_add_epi32(_mm512_sub_epi32(b, r), _mm512_slli_epi32(diff, 1));
  sector = _mm512_mask_mov_epi32(sector, max_is_g, from_g);
  sector = _mm512_mask_mov_epi32(sector, max_is_r, _mm512_sub_epi32(g, b));
  __m512i h = fixed_point(sector, reciprocal(kHueNumerator, diff));
  h = _mm512_mask_add_epi32(h, _mm512_cmplt_epi32_mask(h, _mm512_setzero_si512()), h, _mm512_set1_epi32(180));
  const __mmask16 above = _mm512_cmpge_epi32_mask(h, _mm512_set1_epi32(range.low[0]));
  const __mmask16 below = _mm512_cmple_epi32_mask(h, _mm512_set1_epi32(range.high[0]));
  return ok & (range.low[0] > range.high[0] ? (above | below) : (above & below));
}

// A 256-entry byte table held in four registers, looked up for 64 byte indices at once.
struct ByteTable {
  __m512i part[4];
};

FASTCELL_AVX512 inline ByteTable load_table(const std::uint8_t* table) {
  return {{_mm512_loadu_si512(table), _mm512_loadu_si512(table + 64), _mm512_loadu_si512(table + 128),
           _mm512_loadu_si512(table + 192)}};
}

FASTCELL_AVX512 inline __m512i lookup(const ByteTable& table, __m512i index) {
  const __m512i low = _mm512_permutex2var_epi8(table.part[0], index, table.part[1]);
  const __m512i high = _mm512_permutex2var_epi8(table.part[2], index, table.part[3]);
  return _mm512_mask_blend_epi8(_mm512_movepi8_mask(index), low, high);
}

// What the byte loop needs for a whole span, in registers. Loaded once per span, not per block:
// the loop stores through uint8_t pointers, which may alias anything, so the compiler would
// otherwise reload every constant for every block.
struct ByteRule {
  __m512i pick[3];                // kChannelPicks.index
  __m512i low_v, high_v;
  ByteTable min_diff, max_diff;   // SaturationBounds
  bool check_v, check_low_s, check_high_s;
};

FASTCELL_AVX512 inline ByteRule byte_rule(const SpanRule& rule) {
  ByteRule r;
  for (int c = 0; c < 3; ++c) {
    r.pick[c] = _mm512_loadu_si512(kChannelPicks.index[c]);
  }
  r.low_v = _mm512_set1_epi8(static_cast<char>(rule.range.low[2]));
  r.high_v = _mm512_set1_epi8(static_cast<char>(rule.range.high[2]));
  r.min_diff = load_table(rule.saturation.min_diff);
  r.max_diff = load_table(rule.saturation.max_diff);
  r.check_v = rule.check_v, r.check_low_s = rule.check_low_s, r.check_high_s = rule.check_high_s;
  return r;
}

// Channel c of 64 pixels held in three registers (192 BGR bytes): byte 3p + c, from the first two
// registers (index < 128) or the third.
FASTCELL_AVX512 inline __m512i channel(const __m512i bytes[3], const ByteRule& r, int c) {
  return _mm512_mask_permutexvar_epi8(_mm512_permutex2var_epi8(bytes[0], r.pick[c], bytes[1]),
                                      kChannelPicks.from_third[c], r.pick[c], bytes[2]);
}

// V and S of the 64 pixels tested in bytes; bit p = pixel p passes.
FASTCELL_AVX512 inline __mmask64 value_saturation_ok(const __m512i bytes[3], const ByteRule& r) {
  const __m512i b = channel(bytes, r, 0), g = channel(bytes, r, 1), red = channel(bytes, r, 2);
  const __m512i v = _mm512_max_epu8(_mm512_max_epu8(b, g), red);
  const __m512i diff = _mm512_sub_epi8(v, _mm512_min_epu8(_mm512_min_epu8(b, g), red));
  __mmask64 ok = ~0ULL;
  if (r.check_v) ok &= _mm512_cmpge_epu8_mask(v, r.low_v) & _mm512_cmple_epu8_mask(v, r.high_v);
  if (r.check_low_s) ok &= _mm512_cmpge_epu8_mask(diff, lookup(r.min_diff, v));
  if (r.check_high_s) ok &= _mm512_cmple_epu8_mask(diff, lookup(r.max_diff, v));
  return ok;
}

// One block of `count` (≤ 64) pixels of a span; kFull: exactly 64, so no load or store needs a mask
// for the span's end.
template <bool kHsv, bool kHue, bool kSegmented, bool kFull>
FASTCELL_AVX512 inline void paint_block(const std::uint8_t* src, std::int32_t* labels, std::uint8_t* segmented,
                                        int count, __m512i label_lanes, const ByteRule& r, const SpanRule& rule) {
  __m512i bytes[3];
  for (int k = 0; k < 3; ++k) {
    if constexpr (kFull) {
      bytes[k] = _mm512_loadu_si512(src + 64 * k);
    } else {
      const int in_register = std::clamp(3 * count - 64 * k, 0, 64);
      bytes[k] = _mm512_maskz_loadu_epi8(_bzhi_u64(~0ULL, static_cast<unsigned>(in_register)), src + 64 * k);
    }
  }
  std::uint64_t ok = kFull ? ~0ULL : _bzhi_u64(~0ULL, static_cast<unsigned>(count));
  if constexpr (kHue) {
    ok = 0;
    for (int c = 0; 16 * c < count; ++c) {
      const __mmask16 passed = hsv_lanes_with_hue(src + 48 * c, std::min(16, count - 16 * c), rule.range);
      ok |= static_cast<std::uint64_t>(passed) << (16 * c);
    }
  } else if constexpr (kHsv) {
    ok &= value_saturation_ok(bytes, r);
  }
  // A pixel is taken when it passes and no higher-ranked detection has it yet.
  std::uint64_t take = 0;
  for (int c = 0; c < 4; ++c) {
    if (!kFull && 16 * c >= count) break;
    const auto lanes = static_cast<__mmask16>(ok >> (16 * c));
    const __m512i old = _mm512_maskz_loadu_epi32(lanes, labels + 16 * c);
    const __mmask16 free = _mm512_mask_cmpeq_epi32_mask(lanes, old, _mm512_setzero_si512());
    _mm512_mask_storeu_epi32(labels + 16 * c, free, label_lanes);
    take |= static_cast<std::uint64_t>(free) << (16 * c);
  }
  if constexpr (kSegmented) {
    // Each taken pixel's bit spread over its three bytes (pixel p owns bytes 3p..3p+2): register 0
    // holds pixels 0..20 and the first byte of 21, register 1 the rest of 21, 22..41 and two bytes of
    // 42, register 2 the last byte of 42 and 43..63. Scalar bit work: the vector units are the
    // busy ones here (spreading with byte permutes was measured slower).
    const __mmask64 keep[3] = {_pdep_u64(take, 0x9249249249249249ULL) * 7,
                               _pdep_u64(take >> 22, 0x4924924924924924ULL) * 7 | ((take >> 21) & 1) * 3,
                               _pdep_u64(take >> 43, 0x2492492492492492ULL) * 7 | ((take >> 42) & 1)};
    for (int k = 0; k < 3; ++k) {
      if (keep[k] != 0) _mm512_mask_storeu_epi8(segmented + 64 * k, keep[k], bytes[k]);
    }
  }
}

template <bool kHsv, bool kHue, bool kSegmented>
FASTCELL_AVX512 void span_avx512(const std::uint8_t* src, std::int32_t* labels, std::uint8_t* segmented, int n,
                                 std::int32_t label, const SpanRule& rule) {
  const ByteRule r = byte_rule(rule);
  const __m512i label_lanes = _mm512_set1_epi32(label);
  int i = 0;
  for (; i + 64 <= n; i += 64) {
    paint_block<kHsv, kHue, kSegmented, true>(src + 3 * i, labels + i, kSegmented ? segmented + 3 * i : nullptr, 64,
                                              label_lanes, r, rule);
  }
  if (i < n) {
    paint_block<kHsv, kHue, kSegmented, false>(src + 3 * i, labels + i, kSegmented ? segmented + 3 * i : nullptr,
                                               n - i, label_lanes, r, rule);
  }
}

// disc_row_span for `rows` consecutive rows from y_first, 8 rows at a time in double lanes: the same
// closed form and the same exact corrections, each lane stepping until its ends are right, so the
// same spans as the scalar loop. Writes [first, last] per row (1, 0 for a row without pixels).
FASTCELL_AVX512 void disc_row_spans_avx512(const Disc& d, int y_first, int rows, int width, int* spans) {
  const __m512d cx = _mm512_set1_pd(d.cx), cy = _mm512_set1_pd(d.cy);
  const __m512d a = _mm512_set1_pd(d.a), b = _mm512_set1_pd(d.b);
  const __m512d half_pixel = _mm512_set1_pd(0.5), one = _mm512_set1_pd(1.0);
  const __m512d left_edge = _mm512_set1_pd(-1.0), right_edge = _mm512_set1_pd(width);
  // pixel_in_disc's sides, in its order of operations: dx·dx·b·b + dy·dy·a·a ≤ a·a·b·b.
  const __m512d radius_term = _mm512_mul_pd(_mm512_mul_pd(_mm512_mul_pd(a, a), b), b);
  for (int r = 0; r < rows; r += 8) {
    const auto lanes = static_cast<__mmask8>(_bzhi_u32(0xFF, static_cast<unsigned>(std::min(rows - r, 8))));
    const __m512d y = _mm512_add_pd(_mm512_set1_pd(y_first + r), _mm512_setr_pd(0, 1, 2, 3, 4, 5, 6, 7));
    const __m512d dy = _mm512_sub_pd(_mm512_add_pd(y, half_pixel), cy);
    const __m512d row_term = _mm512_mul_pd(_mm512_mul_pd(_mm512_mul_pd(dy, dy), a), a);
    auto inside = [&](__m512d x) FASTCELL_AVX512 {
      const __m512d dx = _mm512_sub_pd(_mm512_add_pd(x, half_pixel), cx);
      const __m512d lhs = _mm512_add_pd(_mm512_mul_pd(_mm512_mul_pd(_mm512_mul_pd(dx, dx), b), b), row_term);
      return _mm512_cmp_pd_mask(lhs, radius_term, _CMP_LE_OQ);
    };
    const __m512d t = _mm512_div_pd(dy, b);
    const __m512d under_root = _mm512_max_pd(_mm512_sub_pd(one, _mm512_mul_pd(t, t)), _mm512_setzero_pd());
    const __m512d half = _mm512_mul_pd(a, _mm512_sqrt_pd(under_root));
    // ceil/floor clamped into [-1, width]; max_pd returns its second operand for NaN, as the scalar code.
    const __m512d lo_guess = _mm512_sub_pd(_mm512_sub_pd(cx, half), half_pixel);
    const __m512d hi_guess = _mm512_sub_pd(_mm512_add_pd(cx, half), half_pixel);
    const __m512d lo_ceil = _mm512_roundscale_pd(lo_guess, _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC);
    const __m512d hi_floor = _mm512_roundscale_pd(hi_guess, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512d lo = _mm512_min_pd(_mm512_max_pd(lo_ceil, left_edge), right_edge);
    __m512d hi = _mm512_min_pd(_mm512_max_pd(hi_floor, left_edge), right_edge);
    for (__mmask8 m = lanes & _mm512_cmp_pd_mask(lo, left_edge, _CMP_GT_OQ) & inside(_mm512_sub_pd(lo, one)); m;
         m &= _mm512_cmp_pd_mask(lo, left_edge, _CMP_GT_OQ) & inside(_mm512_sub_pd(lo, one))) {
      lo = _mm512_mask_sub_pd(lo, m, lo, one);
    }
    for (__mmask8 m = lanes & _mm512_cmp_pd_mask(lo, hi, _CMP_LE_OQ) & ~inside(lo); m;
         m &= _mm512_cmp_pd_mask(lo, hi, _CMP_LE_OQ) & ~inside(lo)) {
      lo = _mm512_mask_add_pd(lo, m, lo, one);
    }
    for (__mmask8 m = lanes & _mm512_cmp_pd_mask(hi, right_edge, _CMP_LT_OQ) & _mm512_cmp_pd_mask(hi, lo, _CMP_GE_OQ) &
                      inside(_mm512_add_pd(hi, one));
         m; m &= _mm512_cmp_pd_mask(hi, right_edge, _CMP_LT_OQ) & inside(_mm512_add_pd(hi, one))) {
      hi = _mm512_mask_add_pd(hi, m, hi, one);
    }
    for (__mmask8 m = lanes & _mm512_cmp_pd_mask(hi, lo, _CMP_GE_OQ) & ~inside(hi); m;
         m &= _mm512_cmp_pd_mask(hi, lo, _CMP_GE_OQ) & ~inside(hi)) {
      hi = _mm512_mask_sub_pd(hi, m, hi, one);
    }
    const __m512d first = _mm512_max_pd(lo, _mm512_setzero_pd());
    const __m512d last = _mm512_min_pd(hi, _mm512_sub_pd(right_edge, one));
    const __mmask8 empty = _mm512_cmp_pd_mask(first, last, _CMP_GT_OQ);
    alignas(32) int firsts[8], lasts[8];
    const __m512d first_or_1 = _mm512_mask_mov_pd(first, empty, one);
    const __m512d last_or_0 = _mm512_maskz_mov_pd(static_cast<__mmask8>(~empty), last);
    _mm256_store_si256(reinterpret_cast<__m256i*>(firsts), _mm512_cvttpd_epi32(first_or_1));
    _mm256_store_si256(reinterpret_cast<__m256i*>(lasts), _mm512_cvttpd_epi32(last_or_0));
    const int n = std::min(8, rows - r);
    for (int k = 0; k < n; ++k) {
      spans[2 * (r + k)] = firsts[k];
      spans[2 * (r + k) + 1] = lasts[k];
    }
  }
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#undef FASTCELL_AVX512
#endif

using SpanFn = void (*)(const std::uint8_t*, std::int32_t*, std::uint8_t*, int, std::int32_t, const SpanRule&);

template <bool kHsv, bool kHue, bool kSegmented>
SpanFn span_kernel() {
#if FASTCELL_X86_SIMD
  const Simd level = simd();
  if (level >= Simd::avx512) return &span_avx512<kHsv, kHue, kSegmented>;
  if (level >= Simd::avx2) return &span_avx2<kHsv, kHue, kSegmented>;
#endif
  return &span_scalar<kHsv, kHue, kSegmented>;
}

template <bool kSegmented>
SpanFn span_kernel(const HsvRange& hsv) {
  if (!hsv.enabled) return span_kernel<false, false, kSegmented>();
  return hue_range_restricts(hsv) ? span_kernel<true, true, kSegmented>() : span_kernel<true, false, kSegmented>();
}

// The span kernel for this call's options and CPU, chosen once rather than tested per pixel.
SpanFn choose_span_kernel(const HsvRange& hsv, bool with_segmented) {
  return with_segmented ? span_kernel<true>(hsv) : span_kernel<false>(hsv);
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
