#include "core/coco_rle.hpp"

#include <stdexcept>

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
  std::int32_t current = 0;
  std::int64_t run_start = 0, p = 0;
  for (int x = 0; x < width; ++x) {
    const std::int32_t* column = labels + x;
    for (int y = 0; y < height; ++y, ++p) {
      const std::int32_t v = column[static_cast<std::ptrdiff_t>(y) * row_stride];
      if (v != current) {
        close_run(current, run_start, p);
        current = v;
        run_start = p;
      }
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
