#include "core/coco_rle.hpp"

#include <algorithm>
#include <stdexcept>

#include "core/simd.hpp"

// The row-by-row change scan has an AVX-512 twin, chosen at run time like circle_mask.cpp's.

namespace fastcell::core {

std::string compress_rle(const std::vector<std::int64_t>& counts) {
  std::string s;
  s.reserve(counts.size() * 2);
  for (std::size_t i = 0; i < counts.size(); ++i) {
    std::int64_t x = counts[i];
    if (i > 2) x -= counts[i - 2];
    bool more = true;
    while (more) {
      std::int64_t c = x & 0x1f;
      x >>= 5;  // arithmetic, as for the C long
      more = (c & 0x10) ? x != -1 : x != 0;
      if (more) c |= 0x20;
      s.push_back(static_cast<char>(c + 48));
    }
  }
  return s;
}

namespace {

// Where the flat column-major sequence changes value: pixel (x, y) differs from the pixel before it
// in that order, (x, y − 1), or for y = 0 the bottom of column x − 1. Found row by row (sequential
// reads; the column-major walk read one cache line per pixel) and bucketed by column, so the
// changes come out in flat order. Returns them as (column start offsets, rows).
struct Changes {
  std::vector<std::int64_t> column_start;  // width + 1 offsets into `rows`
  std::vector<std::int32_t> rows;
};

// Bit k set when a[k] != b[k], k < n (≤ 16).
using DiffScan = std::uint32_t (*)(const std::int32_t* a, const std::int32_t* b, int n);

std::uint32_t differ_portable(const std::int32_t* a, const std::int32_t* b, int n) {
  std::uint32_t bits = 0;
  for (int k = 0; k < n; ++k) bits |= static_cast<std::uint32_t>(a[k] != b[k]) << k;
  return bits;
}

#if FASTCELL_X86_SIMD
FASTCELL_TARGET_AVX512 std::uint32_t differ_avx512(const std::int32_t* a, const std::int32_t* b, int n) {
  const auto lanes = static_cast<__mmask16>(_bzhi_u32(0xFFFF, static_cast<unsigned>(n)));
  return _mm512_mask_cmpneq_epi32_mask(lanes, _mm512_maskz_loadu_epi32(lanes, a), _mm512_maskz_loadu_epi32(lanes, b));
}
#endif

Changes value_changes(const std::int32_t* labels, int height, int width, std::ptrdiff_t row_stride) {
  DiffScan differ = &differ_portable;
#if FASTCELL_X86_SIMD
  if (simd() >= Simd::avx512) differ = &differ_avx512;
#endif
  Changes out;
  out.column_start.assign(static_cast<std::size_t>(width) + 1, 0);
  if (height == 0 || width == 0) return out;
  std::vector<std::int32_t> xs, ys;  // in row-major order
  auto at = [&](int y, int x) { return labels[static_cast<std::ptrdiff_t>(y) * row_stride + x]; };
  // Row 0 against the bottom of the previous column (and the start value 0 before pixel (0, 0)).
  for (int x = 0; x < width; ++x) {
    if (at(0, x) != (x > 0 ? at(height - 1, x - 1) : 0)) xs.push_back(x), ys.push_back(0);
  }
  for (int y = 1; y < height; ++y) {
    const std::int32_t* row = labels + static_cast<std::ptrdiff_t>(y) * row_stride;
    const std::int32_t* above = row - row_stride;
    for (int x0 = 0; x0 < width; x0 += 16) {
      for (std::uint32_t bits = differ(row + x0, above + x0, std::min(16, width - x0)); bits; bits &= bits - 1) {
        xs.push_back(x0 + lowest_bit(bits));
        ys.push_back(y);
      }
    }
  }
  // Counting sort by column keeps each column's rows in order.
  for (const std::int32_t x : xs) ++out.column_start[static_cast<std::size_t>(x) + 1];
  for (int x = 0; x < width; ++x) out.column_start[x + 1] += out.column_start[x];
  out.rows.resize(xs.size());
  std::vector<std::int64_t> next(out.column_start.begin(), out.column_start.end() - 1);
  for (std::size_t k = 0; k < xs.size(); ++k) out.rows[static_cast<std::size_t>(next[xs[k]]++)] = ys[k];
  return out;
}

}  // namespace

std::vector<InstanceRle> instance_rles(const std::int32_t* labels, int height, int width, std::ptrdiff_t row_stride,
                                       int count) {
  if (height < 0 || width < 0 || count < 0) throw std::invalid_argument("instance_rles: negative size or count");
  const auto n = static_cast<std::size_t>(count);
  std::vector<std::vector<std::int64_t>> counts(n);
  std::vector<std::int64_t> last_end(n, 0), area(n, 0);  // where each instance's last run ended
  const std::int64_t total = static_cast<std::int64_t>(height) * width;
  // Close the run of `value` over flat positions [start, end).
  auto close_run = [&](std::int32_t value, std::int64_t start, std::int64_t end) {
    if (value < 1 || value > count) return;
    const auto i = static_cast<std::size_t>(value - 1);
    counts[i].push_back(start - last_end[i]);
    counts[i].push_back(end - start);
    area[i] += end - start;
    last_end[i] = end;
  };
  const Changes changes = value_changes(labels, height, width, row_stride);
  std::int32_t current = 0;
  std::int64_t run_start = 0;
  for (int x = 0; x < width; ++x) {
    for (std::int64_t k = changes.column_start[x]; k < changes.column_start[x + 1]; ++k) {
      const int y = changes.rows[static_cast<std::size_t>(k)];
      const std::int64_t p = static_cast<std::int64_t>(x) * height + y;
      close_run(current, run_start, p);
      current = labels[static_cast<std::ptrdiff_t>(y) * row_stride + x];
      run_start = p;
    }
  }
  close_run(current, run_start, total);
  std::vector<InstanceRle> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    // The background after the last run, unless the mask reaches the last pixel; an empty mask is
    // all background.
    if (counts[i].empty() || last_end[i] < total) counts[i].push_back(total - last_end[i]);
    out[i] = {compress_rle(counts[i]), area[i]};
  }
  return out;
}

}  // namespace fastcell::core
