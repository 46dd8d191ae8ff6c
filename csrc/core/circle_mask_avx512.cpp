// The AVX-512 twins of the circle segmentation's span loop (span_scalar in circle_mask_span.hpp) and
// disc spans (disc_row_span in circle_mask.cpp). AVX-512 (BW, VBMI) and BMI2, 64 pixels (192 BGR
// bytes, three registers) at a time:
// byte permutes split the channels, V and S are tested in bytes (S through the SaturationBounds
// tables), and the stores are masked, so a span's partial last block needs no special case and
// nothing outside the span is touched. Ranges that restrict the hue compute it in 32-bit lanes, 16
// pixels at a time, with the same arithmetic as the scalar code.
// Compiled with a target attribute and chosen at run time (simd() >= Simd::avx512).
#include "core/circle_mask_span.hpp"

#include <algorithm>

#if FASTCELL_X86_SIMD
// GCC 12's AVX-512 headers start many intrinsics from _mm512_undefined_epi32(), which its
// -Wmaybe-uninitialized then reports once inlined here: a known false positive, silenced locally.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace fastcell::core::circle_detail {
namespace {

constexpr __mmask16 kAllLanes = 0xFFFF;
constexpr __mmask64 kLowBytes = 0x1111111111111111ULL;  // byte 0 of each 32-bit lane

FASTCELL_TARGET_AVX512 inline __mmask16 within(__m512i x, __m512i low, __m512i high) {
  return _mm512_cmpge_epi32_mask(x, low) & _mm512_cmple_epi32_mask(x, high);
}

// round(numerator / max(x, 1)) half up: kHsvTables' entry for x (see kSatNumerator).
FASTCELL_TARGET_AVX512 inline __m512i reciprocal(float numerator, __m512i x) {
  const __m512 d = _mm512_maskz_cvtepi32_ps(kAllLanes, _mm512_max_epi32(x, _mm512_set1_epi32(1)));
  const __m512 q = _mm512_div_ps(_mm512_set1_ps(numerator), d);
  return _mm512_maskz_cvttps_epi32(kAllLanes, _mm512_add_ps(q, _mm512_set1_ps(0.5f)));
}

FASTCELL_TARGET_AVX512 inline __m512i fixed_point(__m512i x, __m512i rec) {
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
FASTCELL_TARGET_AVX512 inline __mmask16 hsv_lanes_with_hue(const std::uint8_t* src, int n, const HsvRange& range) {
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

FASTCELL_TARGET_AVX512 inline ByteTable load_table(const std::uint8_t* table) {
  return {{_mm512_loadu_si512(table), _mm512_loadu_si512(table + 64), _mm512_loadu_si512(table + 128),
           _mm512_loadu_si512(table + 192)}};
}

FASTCELL_TARGET_AVX512 inline __m512i lookup(const ByteTable& table, __m512i index) {
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

FASTCELL_TARGET_AVX512 inline ByteRule byte_rule(const SpanRule& rule) {
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
FASTCELL_TARGET_AVX512 inline __m512i channel(const __m512i bytes[3], const ByteRule& r, int c) {
  return _mm512_mask_permutexvar_epi8(_mm512_permutex2var_epi8(bytes[0], r.pick[c], bytes[1]),
                                      kChannelPicks.from_third[c], r.pick[c], bytes[2]);
}

// V and S of the 64 pixels tested in bytes; bit p = pixel p passes.
FASTCELL_TARGET_AVX512 inline __mmask64 value_saturation_ok(const __m512i bytes[3], const ByteRule& r) {
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
FASTCELL_TARGET_AVX512 inline void paint_block(const std::uint8_t* src, std::int32_t* labels, std::uint8_t* segmented,
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
FASTCELL_TARGET_AVX512 void span_avx512_t(const std::uint8_t* src, std::int32_t* labels, std::uint8_t* segmented,
                                          int n, std::int32_t label, const SpanRule& rule) {
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

}  // namespace

// The instantiation for one call's options (chosen once per call, not per pixel).
SpanFn span_avx512(bool hsv, bool hue, bool segmented) {
  if (!hsv) return segmented ? &span_avx512_t<false, false, true> : &span_avx512_t<false, false, false>;
  if (hue) return segmented ? &span_avx512_t<true, true, true> : &span_avx512_t<true, true, false>;
  return segmented ? &span_avx512_t<true, false, true> : &span_avx512_t<true, false, false>;
}

// disc_row_span for `rows` consecutive rows from y_first, 8 rows at a time in double lanes: the same
// closed form and the same exact corrections, each lane stepping until its ends are right, so the
// same spans as the scalar loop. Writes [first, last] per row (1, 0 for a row without pixels).
FASTCELL_TARGET_AVX512 void disc_row_spans_avx512(const Disc& d, int y_first, int rows, int width, int* spans) {
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
    auto inside = [&](__m512d x) FASTCELL_TARGET_AVX512 {
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

}  // namespace fastcell::core::circle_detail

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif
