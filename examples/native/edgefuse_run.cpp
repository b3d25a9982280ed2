// edgefuse_run: an exported .pte, run as an app runs it -- ExecuTorch's Module API, the XNNPACK delegate and
// the kernels from the executorch wheel's SDK, the preprocessing contract from the .pte.json sidecar.
//
//   edgefuse_run model.int8.pte image.png [image2.jpg ...] [--topk K] [--logits] [--dump-input] [--preprocess-only]
//
// One JSON line per image: {"image", "top": [[index, name, logit], ...]} plus "logits" (--logits) and the
// preprocessed tensor "input" (--dump-input). --preprocess-only prints only the inputs (the program is not
// loaded). Exit 2 with one line on stderr for bad input.
#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "preprocess.h"

using executorch::extension::from_blob;
using executorch::extension::Module;
using executorch::runtime::Error;

namespace {

[[noreturn]] void fail(const std::string& msg) {
  std::cerr << "edgefuse_run: error: " << msg << std::endl;
  std::exit(2);
}

edgefuse::Contract read_contract(const std::string& model) {
  std::ifstream f(model + ".json");
  if (!f) fail("no sidecar " + model + ".json (edgefuse export writes it beside the .pte)");
  nlohmann::json side;
  try {
    side = nlohmann::json::parse(f);
  } catch (const std::exception& e) {
    fail(model + ".json is not JSON: " + e.what());
  }
  if (side.value("schema", "") != "edgefuse.sidecar") fail(model + ".json is not an edgefuse sidecar");
  const auto& c = side.at("contract");
  edgefuse::Contract out;
  const auto& size = c.at("input_size");  // a side, or [height, width] (contract v2)
  out.height = size.is_array() ? size.at(0).get<int>() : size.get<int>();
  out.width = size.is_array() ? size.at(1).get<int>() : size.get<int>();
  out.channels = c.at("channels").get<int>();
  for (double v : c.at("mean")) out.mean.push_back(float(v));
  for (double v : c.at("std")) out.std.push_back(float(v));
  out.scale = float(c.at("scale").get<double>());
  if (c.value("version", 1) == 1) {  // v1: "resize" named the interpolation, and every image was stretched
    out.interpolation = c.value("resize", "bilinear");
  } else {
    out.resize = c.value("resize", "stretch");
    out.interpolation = c.value("interpolation", "bilinear");
    out.crop_pct = c.value("crop_pct", 1.0);
    out.pad_value = c.value("pad_value", 0);
  }
  if (c.value("layout", "NCHW") != "NCHW") fail("only NCHW contracts are supported");
  for (const auto& n : c.value("class_names", nlohmann::json::array())) out.class_names.push_back(n.get<std::string>());
  if ((out.channels != 1 && out.channels != 3) || int(out.mean.size()) != out.channels || int(out.std.size()) != out.channels)
    fail(model + ".json: a contract needs 1 or 3 channels with one mean and std each");
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> images;
  std::string model;
  int topk = 3;
  bool logits = false, dump = false, only_preprocess = false;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--topk" && i + 1 < argc) topk = std::max(1, std::atoi(argv[++i]));
    else if (a == "--logits") logits = true;
    else if (a == "--dump-input") dump = true;
    else if (a == "--preprocess-only") dump = only_preprocess = true;
    else if (model.empty()) model = a;
    else images.push_back(a);
  }
  if (model.empty() || images.empty()) fail("usage: edgefuse_run MODEL.pte IMAGE [IMAGE ...] [--topk K] [--logits] [--dump-input] [--preprocess-only]");
  const edgefuse::Contract contract = read_contract(model);
  Module module(model, Module::LoadMode::MmapUseMlock);
  if (!only_preprocess && module.load_method("forward") != Error::Ok)
    fail("ExecuTorch cannot load the forward method of " + model);

  for (const auto& path : images) {
    std::vector<float> x;
    try {
      x = edgefuse::preprocess(path, contract);
    } catch (const std::exception& e) {
      fail(e.what());
    }
    if (only_preprocess) {
      std::cout << nlohmann::json{{"image", path}, {"input", x}}.dump() << "\n";
      continue;
    }
    auto tensor = from_blob(x.data(), {1, contract.channels, contract.height, contract.width});
    auto result = module.forward(tensor);
    if (!result.ok()) fail("forward failed on " + path);
    const auto out = result->at(0).toTensor();
    const float* y = out.const_data_ptr<float>();
    std::vector<float> v(y, y + out.numel());
    std::vector<int> order(v.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return v[a] > v[b]; });
    nlohmann::json line{{"image", path}};
    for (int i = 0; i < std::min<int>(topk, int(v.size())); i++) {
      int c = order[i];
      line["top"].push_back({c, c < int(contract.class_names.size()) ? contract.class_names[c] : std::to_string(c), v[c]});
    }
    if (logits) line["logits"] = v;
    if (dump) line["input"] = x;
    std::cout << line.dump() << "\n";
  }
  return 0;
}
