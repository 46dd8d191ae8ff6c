// The AVX2 twin of the circle segmentation's span loop (span_scalar in circle_mask_span.hpp): 8
// pixels at a time, the same integer and float operations lane by lane, so the same answer bit for
// bit. A span's last partial block is done as the block ending at its last pixel, overlapping the
// one before: painting is idempotent (a pixel this call took now has a non-zero label and is left
// alone), so visiting a pixel twice changes nothing. Compiled with a target attribute and chosen at
// run time (simd() >= Simd::avx2).
#include "core/circle_mask_span.hpp"

#if FASTCELL_X86_SIMD
namespace fastcell::core::circle_detail {
namespace {

struct Avx2Rule {
  __m256i low_h, high_h, low_s, high_s, low_v, high_v;  // bounds widened by one: > low-1, < high+1
};

FASTCELL_TARGET_AVX2 inline __m256i within(__m256i x, __m256i below, __m256i above) {
  return _mm256_and_si256(_mm256_cmpgt_epi32(x, below), _mm256_cmpgt_epi32(above, x));
}

// round(numerator / max(x, 1)) half up: kHsvTables' entry for x (see kSatNumerator).
FASTCELL_TARGET_AVX2 inline __m256i reciprocal(float numerator, __m256i x) {
  const __m256 d = _mm256_cvtepi32_ps(_mm256_max_epi32(x, _mm256_set1_epi32(1)));
  const __m256 q = _mm256_div_ps(_mm256_set1_ps(numerator), d);
  return _mm256_cvttps_epi32(_mm256_add_ps(q, _mm256_set1_ps(0.5f)));
}

// (x · reciprocal + 2¹¹) >> 12, arithmetic shift as in the scalar code.
FASTCELL_TARGET_AVX2 inline __m256i fixed_point(__m256i x, __m256i rec) {
  return _mm256_srai_epi32(_mm256_add_epi32(_mm256_mullo_epi32(x, rec), _mm256_set1_epi32(1 << (kHsvShift - 1))),
                           kHsvShift);
}

template <bool kHue>
FASTCELL_TARGET_AVX2 inline __m256i hsv_lanes(__m256i b, __m256i g, __m256i r, const Avx2Rule& rule,
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
FASTCELL_TARGET_AVX2 void span_avx2_t(const std::uint8_t* src, std::int32_t* labels, std::uint8_t* segmented,
                                      int n, std::int32_t label, const SpanRule& r) {
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
  auto block = [&](int i) FASTCELL_TARGET_AVX2 {
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

}  // namespace

// The instantiation for one call's options (chosen once per call, not per pixel).
SpanFn span_avx2(bool hsv, bool hue, bool segmented) {
  if (!hsv) return segmented ? &span_avx2_t<false, false, true> : &span_avx2_t<false, false, false>;
  if (hue) return segmented ? &span_avx2_t<true, true, true> : &span_avx2_t<true, true, false>;
  return segmented ? &span_avx2_t<true, false, true> : &span_avx2_t<true, false, false>;
}

}  // namespace fastcell::core::circle_detail
#endif
