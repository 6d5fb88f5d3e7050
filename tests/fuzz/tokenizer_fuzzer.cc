// Input starting with '{': a tokenizer.json to load. Otherwise text for the
// demo model's tokenizer, which must round-trip: Decode(Encode(text)) == text
// for valid UTF-8, with and without special tokens split.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "text/tokenizer.h"
#include "text/utf8.h"

namespace {

const gantry::text::Tokenizer& Demo() {
  static const auto* tokenizer = [] {
    auto loaded = gantry::text::Tokenizer::Load(std::string(GANTRY_SOURCE_DIR) + "/models/demo");
    if (!loaded.ok()) std::abort();
    return loaded->release();
  }();
  return *tokenizer;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  if (!input.empty() && input[0] == '{') {
    auto tokenizer = gantry::text::Tokenizer::FromJson(input, "", "");
    if (tokenizer.ok()) {
      auto ids = (*tokenizer)->Encode("Hello, world! <s> 你好");
      if (ids.ok()) (void)(*tokenizer)->Decode(*ids);
    }
    return 0;
  }
  const gantry::text::Tokenizer& demo = Demo();
  for (bool split : {false, true}) {
    auto ids = demo.Encode(input, /*add_special_tokens=*/false, split);
    if (!ids.ok()) return 0;  // not UTF-8: refused, as it must be
    if (demo.Decode(*ids) != input) std::abort();
  }
  return 0;
}
