#include "core/decode.hpp"

#include "core/decode_math.hpp"
#include "core/simd.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

// The two scans over every head value (the non-finite check, and the objectness cutoff that
// skips background cells) have AVX-512 twins, chosen at run time like circle_mask.cpp's.

namespace fastcell::core {

namespace {

std::string head_name(std::size_t h) { return "heads[" + std::to_string(h) + "]"; }

#if FASTCELL_X86_SIMD
FASTCELL_TARGET_AVX512 bool any_non_finite_avx512(const float* p, std::size_t n) {
  const __m512i exponent = _mm512_set1_epi32(0x7f800000);
  __mmask16 bad = 0;
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i bits = _mm512_loadu_si512(p + i);
    bad |= _mm512_cmpeq_epi32_mask(_mm512_and_si512(bits, exponent), exponent);
  }
  const auto rest = static_cast<__mmask16>(_bzhi_u32(0xFFFF, static_cast<unsigned>(n - i)));
  const __m512i bits = _mm512_maskz_loadu_epi32(rest, p + i);
  bad |= _mm512_mask_cmpeq_epi32_mask(rest, _mm512_and_si512(bits, exponent), exponent);
  return bad != 0;
}
#endif

bool any_non_finite(const float* p, std::size_t n) {
#if FASTCELL_X86_SIMD
  if (simd() >= Simd::avx512) return any_non_finite_avx512(p, n);
#endif
  return first_non_finite(p, n) != n;
}

void check_head_values(const HeadView& head, std::size_t h) {
  const std::size_t plane = static_cast<std::size_t>(head.height * head.width);
  const std::size_t n = static_cast<std::size_t>(head.batch * head.channels) * plane;
  if (!any_non_finite(head.data, n)) return;
  const std::size_t bad = first_non_finite(head.data, n);
  const std::size_t per_image = static_cast<std::size_t>(head.channels) * plane;
  const std::size_t in_plane = bad % plane;
  throw std::invalid_argument(
      head_name(h) + " contains NaN or infinity (image " + std::to_string(bad / per_image) + ", channel " +
      std::to_string((bad % per_image) / plane) + ", y " + std::to_string(in_plane / head.width) + ", x " +
      std::to_string(in_plane % head.width) + "): the model output is broken");
}

// Bit k set when cell k of the `count` (≤ 16) at `objectness` is not below the cutoff (NaN is not
// below it either: decode_cell's own test). Most cells are background; this finds the others
// without a branch per cell.
using CandidateScan = std::uint32_t (*)(const float* objectness, int count, float cutoff);

std::uint32_t candidates_portable(const float* objectness, int count, float cutoff) {
  std::uint32_t bits = 0;
  for (int k = 0; k < count; ++k) bits |= static_cast<std::uint32_t>(!(objectness[k] < cutoff)) << k;
  return bits;
}

#if FASTCELL_X86_SIMD
FASTCELL_TARGET_AVX512 std::uint32_t candidates_avx512(const float* objectness, int count, float cutoff) {
  const auto lanes = static_cast<__mmask16>(_bzhi_u32(0xFFFF, static_cast<unsigned>(count)));
  return _mm512_mask_cmp_ps_mask(lanes, _mm512_maskz_loadu_ps(lanes, objectness), _mm512_set1_ps(cutoff), _CMP_NLT_UQ);
}
#endif

CandidateScan candidate_scan() {
#if FASTCELL_X86_SIMD
  if (simd() >= Simd::avx512) return &candidates_avx512;
#endif
  return &candidates_portable;
}

// One cell's formulas (and the objectness cutoff that skips background cells before any exp) live in
// decode_math.hpp, shared with the CUDA twin, so the two cannot drift apart.
void decode_head(const HeadView& head, int num_classes, double score_threshold, float cutoff,
                 std::int64_t image, Detections& out) {
  const std::int64_t plane = head.height * head.width;
  const std::int64_t per_anchor = static_cast<std::int64_t>(num_classes) + 5;
  const float* img = head.data + image * head.channels * plane;
  const double stride = head.stride;
  const CandidateScan candidates = candidate_scan();
  DecodedCell cell;
  for (int a = 0; a < head.num_anchors; ++a) {
    const float* block = img + a * per_anchor * plane;
    const double anchor_w = head.anchors[2 * a], anchor_h = head.anchors[2 * a + 1];
    for (std::int64_t first = 0; first < plane; first += 16) {
      const int count = static_cast<int>(std::min<std::int64_t>(16, plane - first));
      for (std::uint32_t bits = candidates(block + 4 * plane + first, count, cutoff); bits != 0; bits &= bits - 1) {
        const std::int64_t i = first + lowest_bit(bits);
        if (decode_cell(block, plane, i, head.width, num_classes, stride, anchor_w, anchor_h, cutoff, score_threshold,
                        cell))
          out.push_back(cell.box, cell.score, cell.class_id);
      }
    }
  }
}

}  // namespace

void check_head_shapes(const std::vector<HeadView>& heads, int num_classes) {
  if (heads.empty()) throw std::invalid_argument("heads must hold at least one head output, got none");
  if (num_classes < 1 || num_classes > kMaxClasses)
    throw std::invalid_argument("num_classes must be in [1, " + std::to_string(kMaxClasses) + "], got " +
                                std::to_string(num_classes));
  // In 64 bits: A·(C+5) overflows int for a large C (2^31 - 1 printed a negative channel count).
  const std::int64_t per_anchor = static_cast<std::int64_t>(num_classes) + 5;
  for (std::size_t h = 0; h < heads.size(); ++h) {
    const HeadView& head = heads[h];
    if (head.batch != heads[0].batch)
      throw std::invalid_argument(head_name(h) + " has batch size " + std::to_string(head.batch) + " but heads[0] has " +
                                  std::to_string(heads[0].batch));
    if (head.num_anchors < 1 || head.channels != head.num_anchors * per_anchor)
      throw std::invalid_argument(head_name(h) + " has " + std::to_string(head.channels) + " channels, expected " +
                                  std::to_string(head.num_anchors) + " anchors × (" + std::to_string(num_classes) +
                                  " classes + 5) = " + std::to_string(head.num_anchors * per_anchor));
    // Decoded boxes must lie within ±kMaxCoordinate, where box geometry stays finite: centres reach
    // stride·side <= kMaxCoordinate / 2, half-sizes 31.25·anchor <= kMaxCoordinate / 2.
    const double side = static_cast<double>(std::max(head.height, head.width));
    const double max_stride = side > 0 ? kMaxCoordinate / 2 / side : kMaxCoordinate / 2;
    if (!(head.stride > 0.0f) || !(head.stride <= max_stride))
      throw std::invalid_argument("strides[" + std::to_string(h) + "] must be positive, finite and at most " +
                                  format_number(max_stride) + " pixels for a head " +
                                  format_number(side) + " cells wide (decoded boxes must lie within ±2^62), got " +
                                  format_number(head.stride));
    for (int k = 0; k < 2 * head.num_anchors; ++k)
      if (!(head.anchors[k] > 0.0f) || !(head.anchors[k] <= kMaxAnchor))
        throw std::invalid_argument("anchors[" + std::to_string(h) + "] must be positive, finite and at most " +
                                    format_number(kMaxAnchor) + " pixels (2^56: a decoded box, up to 62.5× its " +
                                    "anchor, must lie within ±2^62), got " + format_number(head.anchors[k]) +
                                    " at row " + std::to_string(k / 2));
  }
}

void check_heads(const std::vector<HeadView>& heads, int num_classes) {
  check_head_shapes(heads, num_classes);
  for (std::size_t h = 0; h < heads.size(); ++h) check_head_values(heads[h], h);
}

void decode_image(const std::vector<HeadView>& heads, int num_classes, double score_threshold,
                  std::int64_t image, Detections& out) {
  out.clear();
  const float cutoff = decode_objectness_cutoff(score_threshold);
  for (const HeadView& head : heads) decode_head(head, num_classes, score_threshold, cutoff, image, out);
}

std::vector<Detections> decode(const std::vector<HeadView>& heads, int num_classes, double score_threshold) {
  check_heads(heads, num_classes);
  std::vector<Detections> out(static_cast<std::size_t>(heads[0].batch));
  for (std::int64_t n = 0; n < heads[0].batch; ++n)
    decode_image(heads, num_classes, score_threshold, n, out[static_cast<std::size_t>(n)]);
  return out;
}

}  // namespace fastcell::core
