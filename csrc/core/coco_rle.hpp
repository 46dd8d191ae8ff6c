// COCO run-length encoding of every instance of a label image, as pycocotools writes it.
//
// pycocotools (maskApi.c) reads a mask in column-major order; its counts alternate background and
// foreground run lengths, background first (0 when the first pixel is set), and stop after the last
// foreground run unless background follows it. The compressed string stores each count — minus the
// count two places before it, from the fourth on — in 5-bit groups, least significant first, each
// group + 48 one ASCII character, 0x20 meaning "more groups follow" (rleToString).
//
// All instances are encoded together from the places where the column-major sequence of labels
// changes value (found row by row, then put in column order): there a run ends for one instance and
// starts for another, and each instance's background is whatever lies between its own runs (runs
// continue from the bottom of a column to the top of the next, as the flat order does).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace fastcell::core {

struct InstanceRle {
  std::string counts;  // pycocotools' compressed string
  std::int64_t area;   // foreground pixels
};

// Instances 1..count of `labels` (height × width int32, rows `row_stride` elements apart; 0 is
// background, values outside 1..count are background for every instance). Result i is instance i + 1.
std::vector<InstanceRle> instance_rles(const std::int32_t* labels, int height, int width, std::ptrdiff_t row_stride,
                                       int count);

// pycocotools' rleToString of uncompressed counts.
std::string compress_rle(const std::vector<std::int64_t>& counts);

}  // namespace fastcell::core
