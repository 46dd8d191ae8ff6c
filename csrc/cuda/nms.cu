// CUDA twins of core::nms and core::gbciou_merge.
//
// NMS: candidates are put in the CPU's visiting order (common.cuh's order_by_score), then every pair
// (i, j > i) is tested in parallel and recorded as one bit of a 64-bit word ("box i suppresses box
// j"), and one block walks the boxes in order, keeping a box no kept box has suppressed and OR-ing
// its row into the suppressed set: the greedy CPU loop, with the quadratic IoU work done in parallel.
// GBCIOU: one block walks the boxes in score order; for each box the block searches the kept cells
// in parallel for the first one it overlaps (IoU > merge_iou), then one thread merges or appends.
// Both use geometry.hpp's area / intersection / iou_from / gbciou_penalty / enclosing, the CPU's
// own functions, so every threshold decides identically.
#include <stdexcept>
#include <string>

#include "core/geometry.hpp"
#include "cuda/api.hpp"
#include "cuda/common.cuh"

namespace fastcell::cuda {
namespace {

constexpr int kWord = 64;
constexpr unsigned kThreads = 256;

__device__ inline core::Box box_at(const float* boxes, std::int64_t i) {
  return core::Box{boxes[4 * i], boxes[4 * i + 1], boxes[4 * i + 2], boxes[4 * i + 3]};
}

// sorted[k] = boxes[order[k]], with its area and class (0 when class-agnostic).
__global__ void gather_kernel(const float* boxes, const std::int32_t* class_ids, const std::int64_t* order,
                              std::int64_t n, float* sorted, float* areas, std::int32_t* classes) {
  const std::int64_t k = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (k >= n) return;
  const core::Box b = box_at(boxes, order[k]);
  sorted[4 * k] = b.x1;
  sorted[4 * k + 1] = b.y1;
  sorted[4 * k + 2] = b.x2;
  sorted[4 * k + 3] = b.y2;
  areas[k] = core::area(b);
  classes[k] = class_ids ? class_ids[order[k]] : 0;
}

// mask[i · words + w] bit b: sorted box i suppresses sorted box j = 64·w + b (j > i, same class,
// IoU > threshold), exactly the test of nms.cpp's suppress_after.
__global__ void mask_kernel(const float* sorted, const float* areas, const std::int32_t* classes, std::int64_t n,
                            float iou_threshold, int words, unsigned long long* mask) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int w = blockIdx.y;
  if (i >= n) return;
  const core::Box a = box_at(sorted, i);
  const float area_a = areas[i];
  const std::int32_t cls = classes[i];
  unsigned long long bits = 0;
  const std::int64_t j0 = static_cast<std::int64_t>(w) * kWord;
  for (int b = 0; b < kWord; ++b) {
    const std::int64_t j = j0 + b;
    if (j >= n) break;
    if (j <= i) continue;
    const float overlap = core::iou_from(core::intersection(a, box_at(sorted, j)), area_a, areas[j]);
    if (overlap > iou_threshold && classes[j] == cls) bits |= 1ull << b;
  }
  mask[i * words + w] = bits;
}

// The greedy pass: one block, the suppressed set in global memory (one bit per box).
__global__ void select_kernel(const unsigned long long* mask, const std::int64_t* order, std::int64_t n, int words,
                              unsigned long long* removed, std::int64_t* keep, std::int64_t* keep_count) {
  for (int w = threadIdx.x; w < words; w += blockDim.x) removed[w] = 0;
  __syncthreads();
  std::int64_t kept = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const bool suppressed = (removed[i / kWord] >> (i % kWord)) & 1ull;
    __syncthreads();  // everyone has read the bit before anyone updates the words
    if (!suppressed) {
      if (threadIdx.x == 0) keep[kept] = order[i];
      ++kept;
      const unsigned long long* row = mask + i * words;
      for (int w = static_cast<int>(i / kWord) + static_cast<int>(threadIdx.x); w < words; w += blockDim.x)
        removed[w] |= row[w];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) *keep_count = kept;
}

// GBCIOU, the three modes of gbciou.cpp, over boxes in visiting order (`sorted`, `order`).
__global__ void merge_kernel(const float* sorted, const std::int64_t* order, std::int64_t n, int mode, double threshold,
                             float merge_iou, float* kept_boxes, float* kept_areas, std::int64_t* kept_index,
                             std::int64_t* kept_count) {
  __shared__ unsigned long long match;
  __shared__ std::int64_t count;
  if (threadIdx.x == 0) count = 0;
  __syncthreads();
  for (std::int64_t k = 0; k < n; ++k) {
    const core::Box a = box_at(sorted, k);
    if (mode == static_cast<int>(core::MergeMode::none)) {
      if (threadIdx.x == 0) {
        kept_boxes[4 * k] = a.x1, kept_boxes[4 * k + 1] = a.y1, kept_boxes[4 * k + 2] = a.x2,
        kept_boxes[4 * k + 3] = a.y2, kept_index[k] = order[k];
        count = k + 1;
      }
      continue;
    }
    const float area_a = core::area(a);
    if (threadIdx.x == 0) match = ~0ull;
    __syncthreads();
    if (mode == static_cast<int>(core::MergeMode::single)) {
      if (threadIdx.x == 0 && count > 0) match = 0;  // everything folds into the top box
    } else {
      for (std::int64_t m = threadIdx.x; m < count; m += blockDim.x) {
        if (core::iou_from(core::intersection(box_at(kept_boxes, m), a), kept_areas[m], area_a) > merge_iou)
          atomicMin(&match, static_cast<unsigned long long>(m));
      }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      if (match == ~0ull) {  // a cell of its own
        kept_boxes[4 * count] = a.x1, kept_boxes[4 * count + 1] = a.y1, kept_boxes[4 * count + 2] = a.x2,
        kept_boxes[4 * count + 3] = a.y2;
        kept_areas[count] = area_a;
        kept_index[count] = order[k];
        ++count;
      } else {
        core::Box b = box_at(kept_boxes, static_cast<std::int64_t>(match));
        if (core::gbciou_penalty(b, a) < threshold) b = core::enclosing(b, a);  // gbciou.cpp's absorb
        kept_boxes[4 * match] = b.x1, kept_boxes[4 * match + 1] = b.y1, kept_boxes[4 * match + 2] = b.x2,
        kept_boxes[4 * match + 3] = b.y2;
        kept_areas[match] = core::area(b);
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) *kept_count = count;
}

void check_count(std::size_t n, const char* what) {
  if (n > kMaxNmsBoxes)
    throw std::invalid_argument(std::string(what) + " on the GPU takes at most " + std::to_string(kMaxNmsBoxes) +
                                " boxes, got " + std::to_string(n) + " (raise the score threshold, or use the CPU core)");
}

// Visiting order and the boxes gathered in it.
struct Sorted {
  DeviceBuffer<std::int64_t> order;
  DeviceBuffer<float> boxes, areas;
  DeviceBuffer<std::int32_t> classes;
};

void sort_boxes(const float* boxes, const float* scores, const std::int32_t* class_ids, std::size_t n,
                cudaStream_t stream, Sorted& s) {
  s.order.resize(n);
  s.boxes.resize(4 * n);
  s.areas.resize(n);
  s.classes.resize(n);
  order_by_score(scores, n, false, s.order.data(), stream);
  gather_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(boxes, class_ids, s.order.data(),
                                                                  static_cast<std::int64_t>(n), s.boxes.data(),
                                                                  s.areas.data(), s.classes.data());
  check_launch("gather_kernel");
}

}  // namespace

std::vector<std::int64_t> nms(const float* boxes, const float* scores, const std::int32_t* class_ids, std::size_t n,
                              float iou_threshold, cudaStream_t stream) {
  check_count(n, "nms");
  if (n == 0) return {};
  Sorted s;
  sort_boxes(boxes, scores, class_ids, n, stream, s);
  const int words = static_cast<int>((n + kWord - 1) / kWord);
  DeviceBuffer<unsigned long long> mask(n * static_cast<std::size_t>(words)), removed(static_cast<std::size_t>(words));
  DeviceBuffer<std::int64_t> keep(n), keep_count(1);
  const dim3 grid(blocks_for(n, kThreads), static_cast<unsigned>(words));
  mask_kernel<<<grid, kThreads, 0, stream>>>(s.boxes.data(), s.areas.data(), s.classes.data(),
                                             static_cast<std::int64_t>(n), iou_threshold, words, mask.data());
  check_launch("mask_kernel");
  select_kernel<<<1, kThreads, 0, stream>>>(mask.data(), s.order.data(), static_cast<std::int64_t>(n), words,
                                            removed.data(), keep.data(), keep_count.data());
  check_launch("select_kernel");
  std::int64_t kept = 0;
  keep_count.download(&kept, 1, stream);
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize(nms)");
  std::vector<std::int64_t> result(static_cast<std::size_t>(kept));
  keep.download(result.data(), result.size(), stream);
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize(nms keep)");
  return result;
}

core::Detections gbciou_merge(const float* boxes, const float* scores, const std::int32_t* class_ids, std::size_t n,
                              const core::MergeOptions& options, cudaStream_t stream) {
  check_count(n, "gbciou_merge");
  core::Detections out;
  if (n == 0) return out;
  Sorted s;
  sort_boxes(boxes, scores, nullptr, n, stream, s);
  DeviceBuffer<float> kept_boxes(4 * n), kept_areas(n);
  DeviceBuffer<std::int64_t> kept_index(n), kept_count(1);
  merge_kernel<<<1, kThreads, 0, stream>>>(s.boxes.data(), s.order.data(), static_cast<std::int64_t>(n),
                                           static_cast<int>(options.mode), options.threshold, options.merge_iou,
                                           kept_boxes.data(), kept_areas.data(), kept_index.data(), kept_count.data());
  check_launch("merge_kernel");
  std::int64_t kept = 0;
  kept_count.download(&kept, 1, stream);
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize(gbciou_merge)");
  const std::size_t k = static_cast<std::size_t>(kept);
  std::vector<float> merged(4 * k), all_scores(n);
  std::vector<std::int64_t> index(k);
  std::vector<std::int32_t> all_classes(class_ids ? n : 0);
  kept_boxes.download(merged.data(), merged.size(), stream);
  kept_index.download(index.data(), k, stream);
  // Score and class of each kept cell are those of the box that founded it (read back by index).
  check_cuda(cudaMemcpyAsync(all_scores.data(), scores, n * sizeof(float), cudaMemcpyDeviceToHost, stream),
             "cudaMemcpyAsync(scores)");
  if (class_ids)
    check_cuda(cudaMemcpyAsync(all_classes.data(), class_ids, n * sizeof(std::int32_t), cudaMemcpyDeviceToHost,
                               stream), "cudaMemcpyAsync(class_ids)");
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize(gbciou_merge results)");
  for (std::size_t m = 0; m < k; ++m) {
    const std::size_t i = static_cast<std::size_t>(index[m]);
    out.push_back(core::Box{merged[4 * m], merged[4 * m + 1], merged[4 * m + 2], merged[4 * m + 3]}, all_scores[i],
                  class_ids ? all_classes[i] : 0);
  }
  return out;
}

}  // namespace fastcell::cuda
