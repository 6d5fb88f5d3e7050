// config.json and generation_config.json, split at the first NUL byte; the
// config also as an encoder's (BERT, XLM-R).
#include <cstdint>
#include <string>

#include "runtime/encoder_config.h"
#include "runtime/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t split = input.find('\0');
  const std::string config = input.substr(0, split);
  const std::string generation = split == std::string::npos ? "" : input.substr(split + 1);
  (void)gantry::runtime::ParseModelConfig(config, generation, "fuzz");
  (void)gantry::runtime::ParseEncoderConfig(config, "fuzz");
  return 0;
}
