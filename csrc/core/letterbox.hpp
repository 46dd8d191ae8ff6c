// Letterbox: any microscope frame → the network's square float32 planar RGB input.
//
// The image is resized with bilinear interpolation (half-pixel centres, the sampling grid of
// cv2.resize(INTER_LINEAR)) so that it fits an S×S square with its aspect kept, centred, and the
// rest padded. The parameters needed to map a network-input point back to the original image are
// returned beside it: original = (network - pad) / scale.
#pragma once
#include <cstddef>
#include <cstdint>

namespace fastcell::core {

// A read-only view of one image: rows may be strided (a crop of a larger frame, or a vertically
// flipped view with a negative stride) but pixels within a row are packed, channel after channel.
template <typename T>
struct ImageView {
  const T* data = nullptr;      // first pixel of row 0
  int height = 0;
  int width = 0;
  int channels = 0;             // 1 (gray), 3 (BGR) or 4 (BGRA; alpha ignored)
  std::ptrdiff_t row_stride = 0;  // elements (not bytes) from one row to the next; may be < 0
};

// Where the resized image sits inside the square, as in the ops contract.
struct LetterboxParams {
  float scale = 1.0f;  // min(S / width, S / height)
  float pad_x = 0.0f;  // (S - new_width) // 2
  float pad_y = 0.0f;  // (S - new_height) // 2
  float width = 0.0f;  // original width, pixels
  float height = 0.0f; // original height, pixels
};

// The integer geometry behind LetterboxParams: new size rounded half up and kept within [1, S].
struct LetterboxGeometry {
  double scale;
  int new_width, new_height, pad_x, pad_y;
};
LetterboxGeometry letterbox_geometry(int width, int height, int size);

// Fill `out` (3 planes of size×size float32, R then G then B, values in [0, 1]) from `image`.
// 8-bit values are divided by 255, 16-bit values by 65535; the padding is pad_value / 255.
// Throws std::invalid_argument on an empty image, a bad channel count or size < 1.
LetterboxParams letterbox(const ImageView<std::uint8_t>& image, int size, float pad_value, float* out);
LetterboxParams letterbox(const ImageView<std::uint16_t>& image, int size, float pad_value, float* out);

}  // namespace fastcell::core
