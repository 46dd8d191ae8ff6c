// CUDA twin of core::segment_cells: one thread per pixel.
//
// The CPU paints detections from the highest score down and a pixel keeps the first label it gets,
// where "gets" means: inside that detection's disc and (when enabled) inside the HSV range. As the
// HSV test depends on the pixel only, that is the same as: a pixel's label is the first detection in
// paint order whose disc holds it, provided the pixel passes the HSV test at all. So each thread
// tests its pixel's HSV once (circle_mask.hpp's bgr_in_hsv_range) and then the discs in
// paint order (disc_of_box / pixel_in_disc, the CPU's own functions), staged through shared memory,
// stopping at the first hit. No atomics, deterministic, and exact.
#include <stdexcept>
#include <string>

#include "core/circle_mask.hpp"
#include "cuda/api.hpp"
#include "cuda/common.cuh"

namespace fastcell::cuda {
namespace {

constexpr int kTileX = 32, kTileY = 8, kDiscsPerStage = kTileX * kTileY;

__device__ int g_saturation[256];
__device__ int g_hue[256];

// Discs in paint order, with the pixel bounding rows/columns that can hold them (clamped).
struct PaintedDisc {
  core::Disc disc;
  int label;  // detection index + 1
  int x0, x1, y0, y1;
};

__device__ int clamp_to_int(double v, int lo, int hi) {
  if (!(v >= lo)) return lo;  // also NaN
  if (v > hi) return hi;
  return static_cast<int>(v);
}

__global__ void discs_kernel(const float* boxes, const std::int64_t* order, int count, core::DiscShape shape, int width,
                             int height, PaintedDisc* discs) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= count) return;
  const std::int64_t i = order[r];
  const float* b = boxes + 4 * i;
  PaintedDisc p;
  p.disc = core::disc_of_box(b[0], b[1], b[2], b[3], shape);
  p.label = static_cast<int>(i) + 1;
  // The pixels whose centres can lie in the disc: |x + 0.5 − cx| <= a, |y + 0.5 − cy| <= b.
  p.x0 = clamp_to_int(floor(p.disc.cx - p.disc.a - 0.5), 0, width - 1);
  p.x1 = clamp_to_int(ceil(p.disc.cx + p.disc.a - 0.5), -1, width - 1);
  p.y0 = clamp_to_int(floor(p.disc.cy - p.disc.b - 0.5), 0, height - 1);
  p.y1 = clamp_to_int(ceil(p.disc.cy + p.disc.b - 0.5), -1, height - 1);
  if (p.disc.empty) p.x1 = p.y1 = -1;
  discs[r] = p;
}

__global__ void paint_kernel(const std::uint8_t* image, std::ptrdiff_t row_stride, int width, int height,
                             const PaintedDisc* discs, int count, core::HsvRange hsv, bool check_hue, std::uint8_t fill0,
                             std::uint8_t fill1, std::uint8_t fill2, std::int32_t* labels, std::uint8_t* segmented) {
  __shared__ PaintedDisc stage[kDiscsPerStage];
  const int x = blockIdx.x * kTileX + threadIdx.x;
  const int y = blockIdx.y * kTileY + threadIdx.y;
  const int t = threadIdx.y * kTileX + threadIdx.x;
  const bool inside = x < width && y < height;
  const std::uint8_t* px = inside ? image + static_cast<std::ptrdiff_t>(y) * row_stride + 3 * x : nullptr;
  bool eligible = inside;
  if (inside && hsv.enabled)
    eligible = core::bgr_in_hsv_range(px[0], px[1], px[2], hsv, check_hue, g_saturation, g_hue);
  int label = 0;
  for (int base = 0; base < count; base += kDiscsPerStage) {
    // The whole block stages the next discs, even threads that have found their label already.
    if (base + t < count) stage[t] = discs[base + t];
    __syncthreads();
    const int n = count - base < kDiscsPerStage ? count - base : kDiscsPerStage;
    for (int k = 0; eligible && label == 0 && k < n; ++k) {
      const PaintedDisc& p = stage[k];
      if (x >= p.x0 && x <= p.x1 && y >= p.y0 && y <= p.y1 && core::pixel_in_disc(p.disc, x, y)) label = p.label;
    }
    __syncthreads();
  }
  if (!inside) return;
  const std::size_t at = static_cast<std::size_t>(y) * width + x;
  if (labels != nullptr) labels[at] = label;
  if (segmented != nullptr) {
    std::uint8_t* out = segmented + 3 * at;
    out[0] = label ? px[0] : fill0;
    out[1] = label ? px[1] : fill1;
    out[2] = label ? px[2] : fill2;
  }
}

}  // namespace

void segment_cells(const core::ImageView<std::uint8_t>& image, const float* boxes, const float* scores, int count,
                   core::DiscShape shape, const core::HsvRange& hsv, const std::uint8_t fill[3], std::int32_t* labels,
                   std::uint8_t* segmented, cudaStream_t stream) {
  if (image.channels != 3)
    throw std::invalid_argument("segment_cells: expected a 3-channel BGR image, got " +
                                std::to_string(image.channels) + " channels");
  if (count < 0) throw std::invalid_argument("segment_cells: negative box count");
  if (image.height < 1 || image.width < 1) return;
  if (hsv.enabled) {
    check_cuda(cudaMemcpyToSymbolAsync(g_saturation, core::kHsvTables.saturation.data(), sizeof(g_saturation), 0,
                                       cudaMemcpyHostToDevice, stream), "cudaMemcpyToSymbolAsync(saturation)");
    check_cuda(cudaMemcpyToSymbolAsync(g_hue, core::kHsvTables.hue.data(), sizeof(g_hue), 0, cudaMemcpyHostToDevice,
                                       stream), "cudaMemcpyToSymbolAsync(hue)");
  }
  const std::size_t n = static_cast<std::size_t>(count);
  DeviceBuffer<std::int64_t> order(n);
  DeviceBuffer<PaintedDisc> discs(n);
  if (count > 0) {
    order_by_score(scores, n, true, order.data(), stream);
    discs_kernel<<<blocks_for(n, 128), 128, 0, stream>>>(boxes, order.data(), count, shape, image.width, image.height,
                                                         discs.data());
    check_launch("discs_kernel");
  }
  const dim3 threads(kTileX, kTileY);
  const dim3 blocks(blocks_for(static_cast<std::size_t>(image.width), kTileX),
                    blocks_for(static_cast<std::size_t>(image.height), kTileY));
  paint_kernel<<<blocks, threads, 0, stream>>>(image.data, image.row_stride, image.width, image.height, discs.data(),
                                               count, hsv, hsv.enabled && core::hue_range_restricts(hsv), fill[0],
                                               fill[1], fill[2], labels, segmented);
  check_launch("paint_kernel");
  // The temporary buffers are freed on return; wait for the kernels that read them.
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize(segment_cells)");
}

}  // namespace fastcell::cuda
