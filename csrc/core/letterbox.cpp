// Letterbox: separable bilinear resampling straight into planar RGB float32.
//
// Each output row is made in two passes over small buffers that stay in L1:
//   1. vertical: blend the two source rows it falls between into one float row (contiguous,
//      vectorised), already scaled to [0, 1];
//   2. horizontal: gather the two neighbouring source columns of each output column from that row
//      and write R, G and B to their own planes (the HWC→CHW and BGR→RGB steps cost nothing extra).
// Doing the vertical pass first means only the output's rows are ever blended, which is the cheap
// order for the usual case of shrinking a camera frame to 416×416.
//
// The sampling grid is exactly cv2.resize(INTER_LINEAR)'s: source coordinate (d + 0.5)·(src/dst) − 0.5,
// clamped to the edge pixel. OpenCV's 8-bit path then rounds weights to 11 bits and the result to an
// integer; we keep floats, so the two agree within one 8-bit step (tested).
#include "core/letterbox.hpp"

#include "core/letterbox_math.hpp"
#include "core/simd.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

// The 8-bit BGR path (what cameras deliver) has an AVX-512 twin, compiled with a target attribute
// and chosen at run time, so a portable build still runs it where the CPU has AVX-512 VBMI
// (640×480 → 416: ~0.14 ms against ~0.31 ms for the portable code on the dev machine's Zen 4).
// An AVX2 twin of it was measured no faster than the portable code there, so there is none.

// Hot loops are compiled several times and the best one for the running CPU is picked at load time
// (GCC/Clang function multi-versioning), so a portable wheel still uses AVX2/AVX-512 gathers.
#if defined(__x86_64__) && defined(__has_attribute) && !defined(__NVCC__)
#if __has_attribute(target_clones) && defined(__linux__)
#define FASTCELL_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#endif
#ifndef FASTCELL_MULTIVERSION
#define FASTCELL_MULTIVERSION
#endif

namespace fastcell::core {
namespace {

// The two taps and the weight of the second one, for every output coordinate along one axis.
struct AxisTaps {
  std::vector<int> first, second;  // source indices (times `step`, so they are element offsets)
  std::vector<float> weight;       // weight of `second`; `first` gets 1 - weight
};

// cv2.resize's INTER_LINEAR grid, tap by tap as letterbox_math.hpp's axis_tap (shared with the CUDA
// twin) computes it, tabulated once per call and pre-multiplied by `step`.
AxisTaps axis_taps(int src, int dst, int step) {
  AxisTaps taps;
  taps.first.resize(static_cast<std::size_t>(dst));
  taps.second.resize(static_cast<std::size_t>(dst));
  taps.weight.resize(static_cast<std::size_t>(dst));
  const double src_per_dst = 1.0 / (static_cast<double>(dst) / src);
  for (int d = 0; d < dst; ++d) {
    const AxisTap tap = axis_tap(d, src, src_per_dst);
    taps.first[static_cast<std::size_t>(d)] = tap.first * step;
    taps.second[static_cast<std::size_t>(d)] = tap.second * step;
    taps.weight[static_cast<std::size_t>(d)] = tap.weight;
  }
  return taps;
}

// Both axes' taps for one frame geometry. They depend only on the frame's size, the output size and
// the channel count, and a camera sends frames of one size, so each thread keeps the last ones it
// made (a 640×480 frame's cost 4 µs to make, 3 % of its letterbox).
struct FrameTaps {
  int width = -1, height = -1, new_width = -1, new_height = -1, channels = -1;
  AxisTaps xs, ys;
};

const FrameTaps& frame_taps(int width, int height, int new_width, int new_height, int channels) {
  thread_local FrameTaps taps;
  if (taps.width != width || taps.height != height || taps.new_width != new_width ||
      taps.new_height != new_height || taps.channels != channels) {
    taps.xs = axis_taps(width, new_width, channels);
    taps.ys = axis_taps(height, new_height, 1);
    taps.width = width, taps.height = height, taps.new_width = new_width, taps.new_height = new_height;
    taps.channels = channels;
  }
  return taps;
}

// The padding: a constant store, multi-versioned so it is done with the widest stores the CPU has
// (it is a quarter of a 640×480 frame's output).
FASTCELL_MULTIVERSION
void fill_floats(float* __restrict out, std::size_t n, float value) {
  for (std::size_t i = 0; i < n; ++i) out[i] = value;
}

// row = (top + (bottom - top)·w) · norm, over n packed elements.
FASTCELL_MULTIVERSION
void blend_rows(const std::uint8_t* __restrict top, const std::uint8_t* __restrict bottom, float w, float norm,
                float* __restrict row, int n) {
  for (int i = 0; i < n; ++i) {
    const float a = static_cast<float>(top[i]);
    const float b = static_cast<float>(bottom[i]);
    row[i] = (a + (b - a) * w) * norm;
  }
}

FASTCELL_MULTIVERSION
void blend_rows(const std::uint16_t* __restrict top, const std::uint16_t* __restrict bottom, float w, float norm,
                float* __restrict row, int n) {
  for (int i = 0; i < n; ++i) {
    const float a = static_cast<float>(top[i]);
    const float b = static_cast<float>(bottom[i]);
    row[i] = (a + (b - a) * w) * norm;
  }
}

// Gray: one output channel of one row, out[x] = row[first[x]] + (row[second[x]] - row[first[x]])·w[x].
FASTCELL_MULTIVERSION
void resample_row(const float* __restrict row, const int* __restrict first, const int* __restrict second,
                  const float* __restrict weight, float* __restrict out, int n) {
  for (int x = 0; x < n; ++x) {
    const float a = row[first[x]];
    const float b = row[second[x]];
    out[x] = a + (b - a) * weight[x];
  }
}

// Colour: the same for B, G and R at once, written to three planes. The taps of one output pixel
// are two runs of 3 (or 4) adjacent floats, so with SSE2 each is one unaligned 4-float load (the 4th
// lane is the next pixel's blue, or alpha, and is dropped); a 4×4 transpose of four output pixels
// then yields four blues, four greens and four reds, stored straight into their planes. `row` must
// be readable one float past its last pixel.
void resample_color_row(const float* __restrict row, const int* __restrict first, const int* __restrict second,
                        const float* __restrict weight, int n, float* __restrict red, float* __restrict green,
                        float* __restrict blue) {
  int x = 0;
#if defined(__SSE2__)
  for (; x + 4 <= n; x += 4) {
    __m128 p[4];
    for (int k = 0; k < 4; ++k) {
      const __m128 a = _mm_loadu_ps(row + first[x + k]);
      const __m128 b = _mm_loadu_ps(row + second[x + k]);
      p[k] = _mm_add_ps(a, _mm_mul_ps(_mm_sub_ps(b, a), _mm_set1_ps(weight[x + k])));
    }
    _MM_TRANSPOSE4_PS(p[0], p[1], p[2], p[3]);  // now p[0] = 4 blues, p[1] = 4 greens, p[2] = 4 reds
    _mm_storeu_ps(blue + x, p[0]);
    _mm_storeu_ps(green + x, p[1]);
    _mm_storeu_ps(red + x, p[2]);
  }
#endif
  for (; x < n; ++x) {
    const float* a = row + first[x];
    const float* b = row + second[x];
    const float w = weight[x];
    blue[x] = a[0] + (b[0] - a[0]) * w;
    green[x] = a[1] + (b[1] - a[1]) * w;
    red[x] = a[2] + (b[2] - a[2]) * w;
  }
}

#if FASTCELL_X86_SIMD
// 8-bit BGR with AVX-512 (F, BW, VBMI), in the same two passes and with the same float operations
// per element as the portable code (so the same result bit for bit), but on planar rows:
//   1. vertical: one byte permute per channel takes the 16 blues (greens, reds) of 16 pixels
//      (48 bytes) of each source row straight into 32-bit lanes; they are blended as floats and
//      stored to that channel's row buffer (no separate deinterleave step);
//   2. horizontal: 16 output pixels of one channel draw on a window of at most 32 consecutive
//      source pixels whenever the image is not shrunk by more than about 2× (the usual case), so
//      both taps of all 16 come from two loads and one two-table permute each, instead of 32
//      scattered loads. Images shrunk more than that take the portable path.
constexpr int kLanes = 16;
constexpr int kWindow = 2 * kLanes;

// The horizontal taps of one block of 16 output pixels, relative to the block's first tap
// (cache-line aligned so each index vector is one aligned load).
struct alignas(64) TapBlock {
  int first[kLanes], second[kLanes];
  int base;  // first source pixel of the window
};

// The blocks of `count` output pixels; false when some block's taps do not fit its window.
bool tap_blocks(const AxisTaps& xs, int channels, int count, std::vector<TapBlock>& blocks) {
  blocks.resize(static_cast<std::size_t>((count + kLanes - 1) / kLanes));
  for (std::size_t k = 0; k < blocks.size(); ++k) {
    TapBlock& b = blocks[k];
    const int x0 = static_cast<int>(k) * kLanes;
    b.base = xs.first[static_cast<std::size_t>(x0)] / channels;
    for (int lane = 0; lane < kLanes; ++lane) {
      const int x = std::min(x0 + lane, count - 1);  // lanes past the end repeat the last pixel
      b.first[lane] = xs.first[static_cast<std::size_t>(x)] / channels - b.base;
      b.second[lane] = xs.second[static_cast<std::size_t>(x)] / channels - b.base;
      if (b.first[lane] < 0 || b.second[lane] >= kWindow) return false;
    }
  }
  return true;
}

// Byte permutes that pick channel c (0 = B, 1 = G, 2 = R) of 16 BGR pixels (48 bytes) into the
// low byte of 16 int32 lanes; the other three bytes of each lane are zeroed by the mask kLowBytes.
struct ChannelPick {
  __m512i index[3];
};
constexpr __mmask64 kLowBytes = 0x1111111111111111ULL;
constexpr __mmask64 kPixelBytes = (1ULL << 48) - 1;  // 16 pixels × 3 bytes

FASTCELL_TARGET_AVX512 ChannelPick make_channel_pick() {
  ChannelPick pick{};
  for (int c = 0; c < 3; ++c) {
    alignas(64) std::uint8_t index[64] = {};
    for (int k = 0; k < kLanes; ++k) index[4 * k] = static_cast<std::uint8_t>(3 * k + c);
    pick.index[c] = _mm512_load_si512(index);
  }
  return pick;
}

// Vertical pass into three planar rows (B, G, R) of `width` pixels:
// (a + (b − a)·w)·norm per element, blend_rows' arithmetic. The permute drops each byte into the
// low mantissa bits of the float 2²³ (whose other bytes it keeps), giving 2²³ + a exactly, so
// a = that − 2²³ and b − a = (2²³ + b) − (2²³ + a) are two exact subtractions: the same values as
// converting a and b and subtracting, one instruction fewer than two conversions and a subtraction.
FASTCELL_TARGET_AVX512 void blend_rows_planar(
    const std::uint8_t* top, const std::uint8_t* bottom, float w, float norm, int width, const ChannelPick& pick,
    float* const planes[3]) {
  const __m512 wv = _mm512_set1_ps(w), nv = _mm512_set1_ps(norm);
  const __m512 two23 = _mm512_set1_ps(8388608.0f);
  const __m512i two23_bits = _mm512_castps_si512(two23);  // 0x4B000000: the low byte is free
  int x = 0;
  for (; x + kLanes <= width; x += kLanes) {
    const std::size_t at = 3 * static_cast<std::size_t>(x);
    // Masked loads read exactly the 48 bytes of these 16 pixels (nothing past the row).
    const __m512i t = _mm512_maskz_loadu_epi8(kPixelBytes, top + at);
    const __m512i u = _mm512_maskz_loadu_epi8(kPixelBytes, bottom + at);
    for (int c = 0; c < 3; ++c) {
      const __m512i a_bits = _mm512_mask_permutexvar_epi8(two23_bits, kLowBytes, pick.index[c], t);
      const __m512i b_bits = _mm512_mask_permutexvar_epi8(two23_bits, kLowBytes, pick.index[c], u);
      const __m512 a_biased = _mm512_castsi512_ps(a_bits), b_biased = _mm512_castsi512_ps(b_bits);
      const __m512 a = _mm512_sub_ps(a_biased, two23);
      const __m512 b_minus_a = _mm512_sub_ps(b_biased, a_biased);
      _mm512_storeu_ps(planes[c] + x, _mm512_mul_ps(_mm512_add_ps(a, _mm512_mul_ps(b_minus_a, wv)), nv));
    }
  }
  for (; x < width; ++x) {
    for (int c = 0; c < 3; ++c) {
      const float a = static_cast<float>(top[3 * x + c]);
      const float b = static_cast<float>(bottom[3 * x + c]);
      planes[c][x] = (a + (b - a) * w) * norm;
    }
  }
}

// Horizontal pass of the three planar rows (B, G, R): out[x] = row[first] + (row[second] − row[first])·w[x]
// for each channel. The three channels share each block's taps and weights. `rows` must be readable
// kWindow floats past their last pixel.
FASTCELL_TARGET_AVX512 inline void resample_block(float* const rows[3], const TapBlock& b,
                                                  const float* __restrict weight, float* const out[3], std::size_t at,
                                                  __mmask16 lanes) {
  const __m512i first = _mm512_load_si512(b.first), second = _mm512_load_si512(b.second);
  const __m512 w = _mm512_maskz_loadu_ps(lanes, weight);
  for (int c = 0; c < 3; ++c) {
    const __m512 lo = _mm512_loadu_ps(rows[c] + b.base);
    const __m512 hi = _mm512_loadu_ps(rows[c] + b.base + kLanes);
    const __m512 p = _mm512_permutex2var_ps(lo, first, hi);
    const __m512 q = _mm512_permutex2var_ps(lo, second, hi);
    _mm512_mask_storeu_ps(out[c] + at, lanes, _mm512_add_ps(p, _mm512_mul_ps(_mm512_sub_ps(q, p), w)));
  }
}

FASTCELL_TARGET_AVX512 void resample_planes(float* const rows[3], const TapBlock* blocks,
                                            const float* __restrict weight, float* const out[3], int count) {
  const int full = count / kLanes;
  for (int k = 0; k < full; ++k) {
    resample_block(rows, blocks[k], weight + k * kLanes, out, static_cast<std::size_t>(k) * kLanes, 0xFFFF);
  }
  const int rest = count - full * kLanes;
  if (rest > 0) {
    const auto lanes = static_cast<__mmask16>((1u << rest) - 1);
    resample_block(rows, blocks[full], weight + full * kLanes, out, static_cast<std::size_t>(full) * kLanes, lanes);
  }
}

// The whole image part of the letterbox for 8-bit BGR (padding is done by the caller). Returns
// false, having written nothing, when the image is shrunk too much for the horizontal windows.
bool letterbox_bgr8_avx512(const ImageView<std::uint8_t>& image, const LetterboxGeometry& g, const AxisTaps& xs,
                           const AxisTaps& ys, float norm, int size, float* out) {
  const std::size_t plane = static_cast<std::size_t>(size) * static_cast<std::size_t>(size);
  // Kept per thread for the last geometry, as frame_taps' taps are.
  thread_local std::vector<TapBlock> blocks;
  thread_local int blocks_width = -1, blocks_new_width = -1;
  thread_local bool blocks_fit = false;
  if (blocks_width != image.width || blocks_new_width != g.new_width) {
    blocks_fit = tap_blocks(xs, 3, g.new_width, blocks);
    blocks_width = image.width, blocks_new_width = g.new_width;
  }
  if (!blocks_fit) return false;
  const ChannelPick pick = make_channel_pick();
  const std::size_t stride = static_cast<std::size_t>(image.width) + kWindow;  // padded: window loads
  std::vector<float> rows(3 * stride, 0.0f);
  float* const planes[3] = {rows.data(), rows.data() + stride, rows.data() + 2 * stride};  // B, G, R
  for (int y = 0; y < g.new_height; ++y) {
    const std::size_t yi = static_cast<std::size_t>(y);
    const std::uint8_t* top = image.data + static_cast<std::ptrdiff_t>(ys.first[yi]) * image.row_stride;
    const std::uint8_t* bottom = image.data + static_cast<std::ptrdiff_t>(ys.second[yi]) * image.row_stride;
    blend_rows_planar(top, bottom, ys.weight[yi], norm, image.width, pick, planes);
    const std::size_t at = static_cast<std::size_t>(g.pad_y + y) * size + static_cast<std::size_t>(g.pad_x);
    float* const lines[3] = {out + 2 * plane + at, out + plane + at, out + at};  // B, G, R → planes 2, 1, 0 (RGB)
    resample_planes(planes, blocks.data(), xs.weight.data(), lines, g.new_width);
  }
  return true;
}
#endif

template <typename T>
void check_view(const ImageView<T>& image, int size) {
  if (image.data == nullptr || image.height < 1 || image.width < 1) {
    throw std::invalid_argument("letterbox: the image is empty (" + std::to_string(image.height) + "x" +
                                std::to_string(image.width) + ")");
  }
  if (image.channels != 1 && image.channels != 3 && image.channels != 4) {
    throw std::invalid_argument("letterbox: expected 1, 3 or 4 channels, got " + std::to_string(image.channels));
  }
  if (size < 1) throw std::invalid_argument("letterbox: size must be >= 1, got " + std::to_string(size));
}

template <typename T>
LetterboxParams params_of(const ImageView<T>& image, const LetterboxGeometry& g) {
  LetterboxParams params;
  params.scale = static_cast<float>(g.scale);
  params.pad_x = static_cast<float>(g.pad_x);
  params.pad_y = static_cast<float>(g.pad_y);
  params.width = static_cast<float>(image.width);
  params.height = static_cast<float>(image.height);
  return params;
}

template <typename T>
LetterboxParams letterbox_impl(const ImageView<T>& image, int size, float pad_value, float* out) {
  check_view(image, size);
  const LetterboxGeometry g = letterbox_geometry(image.width, image.height, size);
  const std::size_t plane = static_cast<std::size_t>(size) * static_cast<std::size_t>(size);
  const float pad = pad_value / 255.0f;
  const float norm = 1.0f / static_cast<float>(sizeof(T) == 1 ? 255 : 65535);
  const int channels = image.channels;
  const int row_elems = image.width * channels;

  const FrameTaps& taps = frame_taps(image.width, image.height, g.new_width, g.new_height, channels);
  const AxisTaps& xs = taps.xs;
  const AxisTaps& ys = taps.ys;
  // One float past the row: the colour resampler reads its taps 4 floats at a time.
  std::vector<float> row(static_cast<std::size_t>(row_elems) + 4, 0.0f);

  // Padding above and below the image, in all three planes.
  for (int c = 0; c < 3; ++c) {
    float* p = out + static_cast<std::size_t>(c) * plane;
    fill_floats(p, static_cast<std::size_t>(g.pad_y) * size, pad);
    fill_floats(p + static_cast<std::size_t>(g.pad_y + g.new_height) * size,
                static_cast<std::size_t>(size - g.pad_y - g.new_height) * size, pad);
  }

  // Padding left and right of the image rows.
  for (int c = 0; c < 3; ++c) {
    float* p = out + static_cast<std::size_t>(c) * plane;
    for (int y = g.pad_y; y < g.pad_y + g.new_height; ++y) {
      float* line = p + static_cast<std::size_t>(y) * size;
      fill_floats(line, static_cast<std::size_t>(g.pad_x), pad);
      fill_floats(line + g.pad_x + g.new_width, static_cast<std::size_t>(size - g.pad_x - g.new_width), pad);
    }
  }

#if FASTCELL_X86_SIMD
  if constexpr (sizeof(T) == 1) {
    if (channels == 3 && simd() >= Simd::avx512 && letterbox_bgr8_avx512(image, g, xs, ys, norm, size, out)) {
      return params_of(image, g);
    }
  }
#endif
  for (int y = 0; y < g.new_height; ++y) {
    const std::size_t yi = static_cast<std::size_t>(y);
    const T* top = image.data + static_cast<std::ptrdiff_t>(ys.first[yi]) * image.row_stride;
    const T* bottom = image.data + static_cast<std::ptrdiff_t>(ys.second[yi]) * image.row_stride;
    blend_rows(top, bottom, ys.weight[yi], norm, row.data(), row_elems);

    const std::size_t out_row = static_cast<std::size_t>(g.pad_y + y) * size;
    float* lines[3];  // R, G, B
    for (int c = 0; c < 3; ++c) lines[c] = out + static_cast<std::size_t>(c) * plane + out_row + g.pad_x;
    if (channels == 1) {  // gray: G and B repeat R
      resample_row(row.data(), xs.first.data(), xs.second.data(), xs.weight.data(), lines[0], g.new_width);
      std::copy(lines[0], lines[0] + g.new_width, lines[1]);
      std::copy(lines[0], lines[0] + g.new_width, lines[2]);
    } else {  // BGR or BGRA: the planes come out reversed, as RGB
      resample_color_row(row.data(), xs.first.data(), xs.second.data(), xs.weight.data(), g.new_width, lines[0],
                         lines[1], lines[2]);
    }
  }

  return params_of(image, g);
}

}  // namespace

LetterboxGeometry letterbox_geometry(int width, int height, int size) {
  LetterboxGeometry g{};
  g.scale = std::min(static_cast<double>(size) / width, static_cast<double>(size) / height);
  // Rounded half up (not to even), then kept within [1, size]: a 4000×1 strip still gets one row.
  auto resized = [&](int n) {
    const double v = std::floor(n * g.scale + 0.5);
    return static_cast<int>(std::clamp(v, 1.0, static_cast<double>(size)));
  };
  g.new_width = resized(width);
  g.new_height = resized(height);
  g.pad_x = (size - g.new_width) / 2;
  g.pad_y = (size - g.new_height) / 2;
  return g;
}

LetterboxParams letterbox(const ImageView<std::uint8_t>& image, int size, float pad_value, float* out) {
  return letterbox_impl(image, size, pad_value, out);
}

LetterboxParams letterbox(const ImageView<std::uint16_t>& image, int size, float pad_value, float* out) {
  return letterbox_impl(image, size, pad_value, out);
}

}  // namespace fastcell::core
