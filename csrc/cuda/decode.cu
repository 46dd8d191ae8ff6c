// CUDA twin of core::decode: one block per image walks that image's candidates in the CPU's order
// (head, anchor, then cells row-major) in chunks of one candidate per thread; each chunk is
// compacted with a block-wide prefix count, so the kept boxes come out in exactly the CPU's order
// without a sort. The per-cell arithmetic is decode_math.hpp's decode_cell, shared with the CPU.
#include <cmath>
#include <stdexcept>
#include <string>

#include "core/decode_math.hpp"
#include "cuda/api.hpp"
#include "cuda/common.cuh"

namespace fastcell::cuda {
namespace {

constexpr int kMaxHeads = 8;
constexpr int kMaxAnchors = 16;
constexpr unsigned kThreads = 256;

struct Heads {
  int count;
  int num_classes;
  double score_threshold;
  float cutoff;
  const float* data[kMaxHeads];
  std::int64_t channels[kMaxHeads], height[kMaxHeads], width[kMaxHeads];
  std::int64_t first[kMaxHeads + 1];  // candidate index where head h starts; first[count] = total
  int num_anchors[kMaxHeads];
  double stride[kMaxHeads];
  float anchors[kMaxHeads][2 * kMaxAnchors];
};

// Index of the first NaN/inf of every head, in elements (INT64_MAX when all finite).
__global__ void first_non_finite_kernel(const float* data, std::int64_t n, unsigned long long* first_bad) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    if (!isfinite(data[i])) atomicMin(first_bad, static_cast<unsigned long long>(i));
  }
}

__device__ bool decode_candidate(const Heads& h, std::int64_t image, std::int64_t t, core::DecodedCell& out) {
  int k = 0;
  while (t >= h.first[k + 1]) ++k;
  const std::int64_t plane = h.height[k] * h.width[k];
  const std::int64_t local = t - h.first[k];
  const int a = static_cast<int>(local / plane);
  const std::int64_t i = local % plane;
  const std::int64_t per_anchor = static_cast<std::int64_t>(h.num_classes) + 5;
  const float* block = h.data[k] + image * h.channels[k] * plane + a * per_anchor * plane;
  return core::decode_cell(block, plane, i, h.width[k], h.num_classes, h.stride[k], h.anchors[k][2 * a],
                           h.anchors[k][2 * a + 1], h.cutoff, h.score_threshold, out);
}

// Block-wide exclusive prefix count of `flag`; returns this thread's offset, `total` the sum.
__device__ int block_prefix(bool flag, int& total) {
  __shared__ int warp_sums[kThreads / 32];
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const unsigned ballot = __ballot_sync(0xffffffffu, flag);
  const int in_warp = __popc(ballot & ((1u << lane) - 1u));
  if (lane == 0) warp_sums[warp] = __popc(ballot);
  __syncthreads();
  int before = 0;
  total = 0;
  for (unsigned w = 0; w < kThreads / 32; ++w) {
    if (w < warp) before += warp_sums[w];
    total += warp_sums[w];
  }
  __syncthreads();  // warp_sums is reused by the next chunk
  return before + in_warp;
}

__global__ void decode_kernel(Heads h, std::int64_t capacity, float* boxes, float* scores, std::int32_t* classes,
                              int* counts) {
  const std::int64_t image = blockIdx.x;
  const std::int64_t total = h.first[h.count];
  int kept = 0;
  for (std::int64_t base = 0; base < total; base += kThreads) {
    const std::int64_t t = base + threadIdx.x;
    core::DecodedCell cell{};
    const bool keep = t < total && decode_candidate(h, image, t, cell);
    int chunk_total = 0;
    const int offset = block_prefix(keep, chunk_total);
    if (keep) {
      const std::int64_t slot = image * capacity + kept + offset;
      boxes[4 * slot] = cell.box.x1;
      boxes[4 * slot + 1] = cell.box.y1;
      boxes[4 * slot + 2] = cell.box.x2;
      boxes[4 * slot + 3] = cell.box.y2;
      scores[slot] = cell.score;
      classes[slot] = cell.class_id;
    }
    kept += chunk_total;
  }
  if (threadIdx.x == 0) counts[image] = kept;
}

std::string head_name(std::size_t h) { return "heads[" + std::to_string(h) + "]"; }

// core::check_head_shapes (the values are checked on the device), and the twin's own limits.
Heads describe(const std::vector<core::HeadView>& heads, int num_classes, double score_threshold) {
  core::check_head_shapes(heads, num_classes);  // the CPU's checks and messages
  if (heads.size() > static_cast<std::size_t>(kMaxHeads))
    throw std::invalid_argument("the CUDA decode takes at most " + std::to_string(kMaxHeads) + " heads, got " +
                                std::to_string(heads.size()));
  Heads h{};
  h.count = static_cast<int>(heads.size());
  h.num_classes = num_classes;
  h.score_threshold = score_threshold;
  h.cutoff = core::decode_objectness_cutoff(score_threshold);
  for (std::size_t k = 0; k < heads.size(); ++k) {
    const core::HeadView& head = heads[k];
    if (head.num_anchors > kMaxAnchors)
      throw std::invalid_argument(head_name(k) + " has " + std::to_string(head.num_anchors) +
                                  " anchors; the CUDA decode takes at most " + std::to_string(kMaxAnchors));
    for (int j = 0; j < 2 * head.num_anchors; ++j) h.anchors[k][j] = head.anchors[j];
    h.data[k] = head.data;
    h.channels[k] = head.channels;
    h.height[k] = head.height;
    h.width[k] = head.width;
    h.num_anchors[k] = head.num_anchors;
    h.stride[k] = head.stride;
    h.first[k + 1] = h.first[k] + static_cast<std::int64_t>(head.num_anchors) * head.height * head.width;
  }
  return h;
}

// The CPU's message for the first non-finite value of head k.
void throw_non_finite(const core::HeadView& head, std::size_t k, std::int64_t bad) {
  const std::int64_t plane = head.height * head.width;
  const std::int64_t per_image = head.channels * plane;
  const std::int64_t in_plane = bad % plane;
  throw std::invalid_argument(head_name(k) + " contains NaN or infinity (image " + std::to_string(bad / per_image) +
                              ", channel " + std::to_string((bad % per_image) / plane) + ", y " +
                              std::to_string(in_plane / head.width) + ", x " + std::to_string(in_plane % head.width) +
                              "): the model output is broken");
}

}  // namespace

std::vector<core::Detections> decode(const std::vector<core::HeadView>& heads, int num_classes,
                                     double score_threshold, cudaStream_t stream) {
  const Heads h = describe(heads, num_classes, score_threshold);
  const std::int64_t batch = heads[0].batch;
  std::vector<core::Detections> result(static_cast<std::size_t>(batch > 0 ? batch : 0));
  if (batch <= 0) return result;

  DeviceBuffer<unsigned long long> first_bad(heads.size());
  std::vector<unsigned long long> bad_host(heads.size(), ~0ull);
  first_bad.upload(bad_host.data(), heads.size(), stream);
  for (std::size_t k = 0; k < heads.size(); ++k) {
    const std::int64_t n = heads[k].batch * heads[k].channels * heads[k].height * heads[k].width;
    if (n == 0) continue;
    const unsigned blocks = blocks_for(static_cast<std::size_t>(n), kThreads) < 1024u
                                ? blocks_for(static_cast<std::size_t>(n), kThreads) : 1024u;
    first_non_finite_kernel<<<blocks, kThreads, 0, stream>>>(heads[k].data, n, first_bad.data() + k);
    check_launch("first_non_finite_kernel");
  }

  const std::int64_t capacity = h.first[h.count];
  const std::size_t slots = static_cast<std::size_t>(batch * capacity);
  DeviceBuffer<float> boxes(4 * slots), scores(slots);
  DeviceBuffer<std::int32_t> classes(slots);
  DeviceBuffer<int> counts(static_cast<std::size_t>(batch));
  if (capacity > 0) {
    decode_kernel<<<static_cast<unsigned>(batch), kThreads, 0, stream>>>(h, capacity, boxes.data(), scores.data(),
                                                                        classes.data(), counts.data());
    check_launch("decode_kernel");
  }
  std::vector<int> count_host(static_cast<std::size_t>(batch), 0);
  first_bad.download(bad_host.data(), heads.size(), stream);
  if (capacity > 0) counts.download(count_host.data(), count_host.size(), stream);
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize(decode)");
  for (std::size_t k = 0; k < heads.size(); ++k)
    if (bad_host[k] != ~0ull) throw_non_finite(heads[k], k, static_cast<std::int64_t>(bad_host[k]));

  for (std::int64_t n = 0; n < batch; ++n) {
    core::Detections& d = result[static_cast<std::size_t>(n)];
    const std::size_t kept = static_cast<std::size_t>(count_host[static_cast<std::size_t>(n)]);
    d.boxes.resize(4 * kept);
    d.scores.resize(kept);
    d.class_ids.resize(kept);
    const std::size_t at = static_cast<std::size_t>(n * capacity);
    if (kept == 0) continue;
    check_cuda(cudaMemcpyAsync(d.boxes.data(), boxes.data() + 4 * at, 4 * kept * sizeof(float),
                               cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync(boxes)");
    check_cuda(cudaMemcpyAsync(d.scores.data(), scores.data() + at, kept * sizeof(float), cudaMemcpyDeviceToHost,
                               stream), "cudaMemcpyAsync(scores)");
    check_cuda(cudaMemcpyAsync(d.class_ids.data(), classes.data() + at, kept * sizeof(std::int32_t),
                               cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync(class_ids)");
  }
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize(decode results)");
  return result;
}

}  // namespace fastcell::cuda
