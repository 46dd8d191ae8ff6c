// The CUDA twins of the core kernels: same contracts as csrc/core, on device memory, on a stream.
//
// Declared only when the build compiled them (FASTCELL_WITH_CUDA, set by CMakeLists.txt when a CUDA
// toolkit is found or FASTCELL_CUDA=ON); code that calls them must be guarded by the same macro, and
// a build without them says so through core::has_cuda() / fastcell.sys_info().
//
// Conventions. Pointers documented "device" point to device memory; everything else is host memory.
// Each function queues its work on `stream` and returns when its host-side results are ready (those
// returning host values synchronise the stream; `letterbox*` only queues). The per-element
// arithmetic is the CPU core's own FASTCELL_HD code (geometry.hpp, circle_mask.hpp,
// letterbox_math.hpp, decode_math.hpp), compiled without FMA contraction, so results equal the CPU
// core's bit for bit except where float64 exp differs in its last bit between libm and CUDA
// (decode: a score on the threshold to within 1 ulp).
// Errors: std::invalid_argument for bad arguments (the CPU core's messages), std::runtime_error
// naming the CUDA error for a failed CUDA call.
#pragma once
#ifdef FASTCELL_WITH_CUDA
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/circle_mask.hpp"
#include "core/decode.hpp"
#include "core/gbciou.hpp"
#include "core/letterbox.hpp"
#include "core/types.hpp"

namespace fastcell::cuda {

// Visible CUDA devices; 0 when there is no driver or no GPU (never throws).
int device_count() noexcept;
// "13.0" — the CUDA runtime compiled in (linked statically).
std::string runtime_version();

// core::letterbox on the device. image.data: device (rows may be strided, pixels packed);
// out: device, 3·size·size floats (R, G, B planes). The params are computed on the host.
core::LetterboxParams letterbox(const core::ImageView<std::uint8_t>& image, int size, float pad_value, float* out,
                                cudaStream_t stream);
core::LetterboxParams letterbox(const core::ImageView<std::uint16_t>& image, int size, float pad_value, float* out,
                                cudaStream_t stream);

// `count` frames of one size, frame i starting `image_stride` elements after frame i − 1 (frames
// uploaded once as one uint8 buffer). out: device, count·3·size·size floats; params: host, count.
void letterbox_batch(const core::ImageView<std::uint8_t>& first, std::ptrdiff_t image_stride, int count, int size,
                     float pad_value, float* out, core::LetterboxParams* params, cudaStream_t stream);

// core::decode. heads[h].data: device; heads[h].anchors: host. Same validation (including the
// NaN/inf check of every head value, done on the device) and the same output order.
std::vector<core::Detections> decode(const std::vector<core::HeadView>& heads, int num_classes,
                                     double score_threshold, cudaStream_t stream);

// core::nms. boxes (n × 4), scores (n), class_ids (n, or null): device, finite. At most
// kMaxNmsBoxes candidates (the suppression matrix has n²/64 words).
constexpr std::size_t kMaxNmsBoxes = 32768;
std::vector<std::int64_t> nms(const float* boxes, const float* scores, const std::int32_t* class_ids, std::size_t n,
                              float iou_threshold, cudaStream_t stream);

// core::gbciou_merge. boxes, scores, class_ids (or null): device, finite; at most kMaxNmsBoxes.
core::Detections gbciou_merge(const float* boxes, const float* scores, const std::int32_t* class_ids, std::size_t n,
                              const core::MergeOptions& options, cudaStream_t stream);

// core::segment_cells. image.data, boxes (count × 4), scores, labels (H·W) and segmented (H·W·3):
// device; labels or segmented may be null. fill: host.
void segment_cells(const core::ImageView<std::uint8_t>& image, const float* boxes, const float* scores, int count,
                   core::DiscShape shape, const core::HsvRange& hsv, const std::uint8_t fill[3], std::int32_t* labels,
                   std::uint8_t* segmented, cudaStream_t stream);

}  // namespace fastcell::cuda
#endif  // FASTCELL_WITH_CUDA
