// The score order shared by NMS, GBCIOU merging and circle painting, and the runtime facts.
#include <string>

#include "cuda/api.hpp"
#include "cuda/common.cuh"

namespace fastcell::cuda {
namespace {

constexpr unsigned kRankThreads = 256;

__device__ inline float rank_key(float s, bool nan_last) { return (nan_last && s != s) ? -INFINITY : s; }

// rank(i) = #{j : key[j] > key[i]} + #{j < i : key[j] == key[i]}; keys are staged through shared
// memory one tile at a time.
__global__ void rank_kernel(const float* keys, std::int64_t n, bool nan_last, std::int64_t* order) {
  __shared__ float tile[kRankThreads];
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const float ki = i < n ? rank_key(keys[i], nan_last) : 0.0f;
  std::int64_t rank = 0;
  for (std::int64_t base = 0; base < n; base += kRankThreads) {
    const std::int64_t j = base + threadIdx.x;
    tile[threadIdx.x] = j < n ? rank_key(keys[j], nan_last) : 0.0f;
    __syncthreads();
    const std::int64_t limit = n - base < static_cast<std::int64_t>(kRankThreads) ? n - base : kRankThreads;
    for (std::int64_t t = 0; t < limit; ++t) {
      const float kj = tile[t];
      rank += (kj > ki) || (kj == ki && base + t < i);
    }
    __syncthreads();
  }
  if (i < n) order[rank] = i;
}

}  // namespace

void order_by_score(const float* keys, std::size_t n, bool nan_last, std::int64_t* order, cudaStream_t stream) {
  if (n == 0) return;
  rank_kernel<<<blocks_for(n, kRankThreads), kRankThreads, 0, stream>>>(keys, static_cast<std::int64_t>(n),
                                                                        nan_last, order);
  check_launch("rank_kernel");
}

int device_count() noexcept {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error so later calls report their own
    return 0;
  }
  return count;
}

std::string runtime_version() {
  int v = 0;
  cudaRuntimeGetVersion(&v);
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

}  // namespace fastcell::cuda
