// Helpers shared by the CUDA twins (device code; included by .cu files only).
#pragma once
#include <cstddef>
#include <cstdint>

#include "cuda/device_buffer.hpp"

namespace fastcell::cuda {

inline unsigned blocks_for(std::size_t n, unsigned threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

// The visiting order of the CPU core: order[r] = the index of rank r, ranks by key descending, ties
// by index ascending (core::order_by_score). With `nan_last`, NaN keys rank below every number,
// tied with -inf (circle_mask.cpp's paint order). Counting ranks is O(n²) work but exact, stable and
// sort-free; the candidates of one image are at most a few thousand.
void order_by_score(const float* keys, std::size_t n, bool nan_last, std::int64_t* order, cudaStream_t stream);

// Checks the last kernel launch.
inline void check_launch(const char* kernel) { check_cuda(cudaGetLastError(), kernel); }

}  // namespace fastcell::cuda
