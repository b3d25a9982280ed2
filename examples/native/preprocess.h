// The edgefuse preprocessing contract in C++, step for step as edgefuse (Pillow + NumPy) does it, so an app
// linking this computes the same input tensor bit for bit:
//   decode (libpng / libjpeg-turbo) -> 8-bit colour per the contract's image-mode rules -> Pillow's resize
//   (nearest, bilinear or bicubic: its fixed-point two-pass convolution) -> float32 (x * scale - mean) / std
//   -> NCHW.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace edgefuse {

struct Contract {
  int height = 0, width = 0;
  int channels = 0;            // 1 ("L") or 3 ("RGB")
  std::vector<float> mean, std;
  float scale = 1.0f / 255.0f;
  std::string resize = "stretch";           // stretch | shorter-side | letterbox
  std::string interpolation = "bilinear";   // nearest | bilinear | bicubic
  double crop_pct = 1.0;                    // shorter-side
  int pad_value = 0;                        // letterbox
  std::vector<std::string> class_names;
};

// An 8-bit image, interleaved: bands = 1 (L), 3 (RGB) or 4 (RGBA).
struct Image8 {
  int width = 0, height = 0, bands = 0;
  std::vector<uint8_t> pixels;
};

// Decode a PNG or JPEG file as Pillow opens it (16-bit grey -> round(v / 257); 48/64-bit PNG -> high byte;
// palette -> RGB, or RGBA with its transparency). Throws std::runtime_error with a one-line reason.
Image8 decode_image(const std::string& path);

// Convert to the contract's colour (alpha composited over black, RGB -> L with Pillow's weights).
Image8 to_contract_colour(const Image8& in, int channels);

// Pillow's Image.resize(size, filter) for 8-bit images.
Image8 resize(const Image8& in, int width, int height, const std::string& filter);

// The contract's resize mode: stretch, shorter-side (+ centre crop) or letterbox, to width x height.
Image8 fit(const Image8& in, const Contract& c);

// The whole contract: file -> float32 CHW tensor of channels x height x width.
std::vector<float> preprocess(const std::string& path, const Contract& c);

}  // namespace edgefuse
