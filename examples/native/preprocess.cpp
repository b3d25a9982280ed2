#include "preprocess.h"

#include <png.h>
#include <jpeglib.h>

#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>

namespace edgefuse {
namespace {

struct File {
  FILE* f;
  explicit File(const std::string& path) : f(std::fopen(path.c_str(), "rb")) {
    if (!f) throw std::runtime_error("cannot open " + path);
  }
  ~File() { std::fclose(f); }
};

Image8 decode_png(const std::string& path) {
  File file(path);
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw std::runtime_error("unreadable PNG " + path);
  }
  png_init_io(png, file.f);
  png_read_info(png, info);
  int depth = png_get_bit_depth(png, info), type = png_get_color_type(png, info);
  bool grey16 = depth == 16 && (type == PNG_COLOR_TYPE_GRAY);
  if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
  if (depth == 16 && !grey16) png_set_strip_16(png);  // Pillow reads 48/64-bit PNGs as their high bytes
  if (grey16) png_set_swap(png);                      // little-endian uint16 in memory
  png_read_update_info(png, info);
  int w = png_get_image_width(png, info), h = png_get_image_height(png, info);
  int channels = png_get_channels(png, info);
  std::vector<uint8_t> raw(png_get_rowbytes(png, info) * h);
  std::vector<png_bytep> rows(h);
  for (int y = 0; y < h; y++) rows[y] = raw.data() + y * png_get_rowbytes(png, info);
  png_read_image(png, rows.data());
  png_destroy_read_struct(&png, &info, nullptr);
  Image8 out{w, h, channels, {}};
  if (grey16) {  // the contract's rule for 16-bit grey: round(value / 257), half to even as NumPy rounds
    out.bands = 1;
    out.pixels.resize(size_t(w) * h);
    const uint16_t* v = reinterpret_cast<const uint16_t*>(raw.data());
    for (size_t i = 0; i < out.pixels.size(); i++) out.pixels[i] = uint8_t(std::nearbyint(v[i] / 257.0));
    return out;
  }
  if (channels == 2) {  // grey + alpha: as RGBA (Pillow composites LA through RGBA)
    out.bands = 4;
    out.pixels.resize(size_t(w) * h * 4);
    for (size_t i = 0; i < size_t(w) * h; i++) {
      uint8_t g = raw[2 * i], a = raw[2 * i + 1];
      out.pixels[4 * i] = out.pixels[4 * i + 1] = out.pixels[4 * i + 2] = g;
      out.pixels[4 * i + 3] = a;
    }
    return out;
  }
  out.pixels = std::move(raw);
  return out;
}

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
};

Image8 decode_jpeg(const std::string& path) {
  File file(path);
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = [](j_common_ptr c) { std::longjmp(reinterpret_cast<JpegError*>(c->err)->jump, 1); };
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    throw std::runtime_error("unreadable JPEG " + path);
  }
  jpeg_create_decompress(&cinfo);
  jpeg_stdio_src(&cinfo, file.f);
  jpeg_read_header(&cinfo, TRUE);
  // Pillow's defaults: islow IDCT, fancy upsampling; CMYK is not supported here
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK)
    throw std::runtime_error("CMYK JPEGs are not supported by this runner: " + path);
  cinfo.out_color_space = cinfo.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  Image8 out{int(cinfo.output_width), int(cinfo.output_height), int(cinfo.output_components), {}};
  out.pixels.resize(size_t(out.width) * out.height * out.bands);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = out.pixels.data() + size_t(cinfo.output_scanline) * out.width * out.bands;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return out;
}

// Pillow's DIV255 and L24 (Paste.c, Convert.c): the exact integer arithmetic of paste-with-mask and RGB -> L.
inline uint8_t div255(int a) {
  int t = a + 128;
  return uint8_t(((t >> 8) + t) >> 8);
}
inline uint8_t luma(const uint8_t* rgb) {
  return uint8_t((rgb[0] * 19595 + rgb[1] * 38470 + rgb[2] * 7471 + 0x8000) >> 16);
}

// Resample.c: fixed-point convolution with PRECISION_BITS = 32 - 8 - 2.
constexpr int kPrecisionBits = 32 - 8 - 2;

double bilinear(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}
double bicubic(double x) {
  const double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

struct Coeffs {
  int ksize;
  std::vector<int> bounds;  // (min, count) per output pixel
  std::vector<int> k;       // ksize fixed-point weights per output pixel
};

Coeffs precompute(int in_size, int out_size, double (*filter)(double), double support0) {
  double scale = double(in_size) / out_size, filterscale = scale < 1.0 ? 1.0 : scale;
  double support = support0 * filterscale;
  int ksize = int(std::ceil(support)) * 2 + 1;
  Coeffs c{ksize, std::vector<int>(out_size * 2), std::vector<int>(size_t(out_size) * ksize)};
  std::vector<double> kk(ksize);
  for (int xx = 0; xx < out_size; xx++) {
    double center = (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
    int xmin = int(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = int(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    for (int x = 0; x < xmax; x++) {
      kk[x] = filter((x + xmin - center + 0.5) * ss);
      ww += kk[x];
    }
    for (int x = 0; x < ksize; x++) {
      double w = x < xmax ? (ww != 0.0 ? kk[x] / ww : kk[x]) : 0.0;
      c.k[size_t(xx) * ksize + x] = w < 0 ? int(-0.5 + w * (1 << kPrecisionBits)) : int(0.5 + w * (1 << kPrecisionBits));
    }
    c.bounds[xx * 2] = xmin;
    c.bounds[xx * 2 + 1] = xmax;
  }
  return c;
}

inline uint8_t clip8(int v) {
  v >>= kPrecisionBits;
  return uint8_t(v < 0 ? 0 : v > 255 ? 255 : v);
}

Image8 pass(const Image8& in, const Coeffs& c, int out_len, bool horizontal) {
  Image8 out{horizontal ? out_len : in.width, horizontal ? in.height : out_len, in.bands, {}};
  out.pixels.resize(size_t(out.width) * out.height * out.bands);
  for (int y = 0; y < out.height; y++)
    for (int x = 0; x < out.width; x++) {
      int i = horizontal ? x : y, lo = c.bounds[i * 2], n = c.bounds[i * 2 + 1];
      const int* k = &c.k[size_t(i) * c.ksize];
      for (int b = 0; b < in.bands; b++) {
        int ss = 1 << (kPrecisionBits - 1);
        for (int t = 0; t < n; t++) {
          int sx = horizontal ? lo + t : x, sy = horizontal ? y : lo + t;
          ss += in.pixels[(size_t(sy) * in.width + sx) * in.bands + b] * k[t];
        }
        out.pixels[(size_t(y) * out.width + x) * out.bands + b] = clip8(ss);
      }
    }
  return out;
}

// Geometry.c's ImagingScaleAffine: source positions accumulate by repeated addition, as Pillow does.
Image8 nearest(const Image8& in, int width, int height) {
  Image8 out{width, height, in.bands, std::vector<uint8_t>(size_t(width) * height * in.bands)};
  double ax = double(in.width) / width, ay = double(in.height) / height;
  std::vector<int> xin(width);
  double xo = ax * 0.5;
  for (int x = 0; x < width; x++, xo += ax) xin[x] = xo < 0.0 ? -1 : int(xo);
  double yo = ay * 0.5;
  for (int y = 0; y < height; y++, yo += ay) {
    int sy = yo < 0.0 ? -1 : int(yo);
    for (int x = 0; x < width; x++)
      std::memcpy(&out.pixels[(size_t(y) * width + x) * in.bands],
                  &in.pixels[(size_t(sy) * in.width + xin[x]) * in.bands], in.bands);
  }
  return out;
}

bool ends_with(const std::string& s, const std::string& tail) {
  if (s.size() < tail.size()) return false;
  std::string end = s.substr(s.size() - tail.size());
  for (auto& ch : end) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  return end == tail;
}

}  // namespace

Image8 decode_image(const std::string& path) {
  if (ends_with(path, ".png")) return decode_png(path);
  if (ends_with(path, ".jpg") || ends_with(path, ".jpeg")) return decode_jpeg(path);
  throw std::runtime_error("not a .png or .jpg/.jpeg file: " + path);
}

Image8 to_contract_colour(const Image8& in, int channels) {
  Image8 rgb = in;
  if (in.bands == 4) {  // composite over black: Image.new("RGB").paste(rgba, mask=alpha)
    rgb = Image8{in.width, in.height, 3, std::vector<uint8_t>(size_t(in.width) * in.height * 3)};
    for (size_t i = 0; i < size_t(in.width) * in.height; i++)
      for (int b = 0; b < 3; b++) rgb.pixels[3 * i + b] = div255(in.pixels[4 * i + b] * in.pixels[4 * i + 3]);
  }
  if (channels == 3 && rgb.bands == 1) {
    Image8 out{rgb.width, rgb.height, 3, std::vector<uint8_t>(rgb.pixels.size() * 3)};
    for (size_t i = 0; i < rgb.pixels.size(); i++) out.pixels[3 * i] = out.pixels[3 * i + 1] = out.pixels[3 * i + 2] = rgb.pixels[i];
    return out;
  }
  if (channels == 1 && rgb.bands == 3) {
    Image8 out{rgb.width, rgb.height, 1, std::vector<uint8_t>(size_t(rgb.width) * rgb.height)};
    for (size_t i = 0; i < out.pixels.size(); i++) out.pixels[i] = luma(&rgb.pixels[3 * i]);
    return out;
  }
  return rgb;
}

Image8 resize(const Image8& in, int width, int height, const std::string& filter) {
  if (in.width == width && in.height == height) return in;
  if (filter == "nearest") return nearest(in, width, height);
  double (*f)(double) = filter == "bicubic" ? bicubic : bilinear;
  double support = filter == "bicubic" ? 2.0 : 1.0;
  if (filter != "bilinear" && filter != "bicubic") throw std::runtime_error("unknown resize filter " + filter);
  Image8 img = in;
  if (width != in.width) img = pass(img, precompute(in.width, width, f, support), width, true);  // horizontal first
  if (height != in.height) img = pass(img, precompute(in.height, height, f, support), height, false);
  return img;
}

Image8 fit(const Image8& in, const Contract& c) {
  const int h = c.height, w = c.width, w0 = in.width, h0 = in.height;
  if (c.resize == "stretch") return resize(in, w, h, c.interpolation);
  if (c.resize == "letterbox") {  // fit inside (round(side * r), half to even as Python), centre on pad_value
    double r = std::min(double(h) / h0, double(w) / w0);
    int nw = std::max(1, std::min(w, int(std::nearbyint(w0 * r)))), nh = std::max(1, std::min(h, int(std::nearbyint(h0 * r))));
    Image8 small = resize(in, nw, nh, c.interpolation);
    Image8 out{w, h, in.bands, std::vector<uint8_t>(size_t(w) * h * in.bands, uint8_t(c.pad_value))};
    int left = (w - nw) / 2, top = (h - nh) / 2;
    for (int y = 0; y < nh; y++)
      std::memcpy(&out.pixels[(size_t(y + top) * w + left) * in.bands], &small.pixels[size_t(y) * nw * in.bands],
                  size_t(nw) * in.bands);
    return out;
  }
  if (c.resize != "shorter-side") throw std::runtime_error("unknown resize mode " + c.resize);
  int sh = int(std::floor(h / c.crop_pct)), sw = int(std::floor(w / c.crop_pct)), nw, nh;
  if (sh == sw) {  // torchvision Resize(int)
    int shorter = std::min(w0, h0), longer = std::max(w0, h0);
    int new_long = int(double(sh) * longer / shorter);
    nw = w0 <= h0 ? sh : new_long;
    nh = w0 <= h0 ? new_long : sh;
  } else {  // timm ResizeKeepRatio
    double ratio = std::min(double(h0) / sh, double(w0) / sw);
    nw = int(std::nearbyint(w0 / ratio));
    nh = int(std::nearbyint(h0 / ratio));
  }
  Image8 big = resize(in, nw, nh, c.interpolation);
  int top = int(std::nearbyint((nh - h) / 2.0)), left = int(std::nearbyint((nw - w) / 2.0));  // CenterCrop
  Image8 out{w, h, in.bands, std::vector<uint8_t>(size_t(w) * h * in.bands)};
  for (int y = 0; y < h; y++)
    std::memcpy(&out.pixels[size_t(y) * w * in.bands], &big.pixels[(size_t(y + top) * nw + left) * in.bands],
                size_t(w) * in.bands);
  return out;
}

std::vector<float> preprocess(const std::string& path, const Contract& c) {
  Image8 img = fit(to_contract_colour(decode_image(path), c.channels), c);
  const int hw = c.height * c.width;
  std::vector<float> out(size_t(c.channels) * hw);
  for (int ch = 0; ch < c.channels; ch++)
    for (int i = 0; i < hw; i++)  // float32 throughout, as NumPy computes (x * scale - mean) / std
      out[size_t(ch) * hw + i] = (float(img.pixels[size_t(i) * c.channels + ch]) * c.scale - c.mean[ch]) / c.std[ch];
  return out;
}

}  // namespace edgefuse
