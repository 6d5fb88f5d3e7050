// A client's grammar (the input: a JSON Schema, or after a leading 'r' a
// regular expression) compiled for a small byte vocabulary, then walked:
// every step's mask must allow the token taken, and a matcher never crashes
// on what its own mask allows.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "text/guided/grammar.h"
#include "text/guided/matcher.h"
#include "text/guided/vocabulary.h"

namespace {

std::shared_ptr<const gantry::guided::Vocabulary> SmallVocabulary() {
  // Single bytes, a few multi-byte pieces and one stop token (id 0).
  std::vector<std::string> tokens = {""};
  for (int c = 32; c < 127; ++c) tokens.push_back(std::string(1, static_cast<char>(c)));
  for (const char* piece : {"\":", "\",", "\"}", "true", "null", "{\"", "é", "中", "\\n", "  "}) tokens.push_back(piece);
  auto vocabulary = gantry::guided::Vocabulary::Create(tokens, {0}, static_cast<int32_t>(tokens.size()));
  return vocabulary.ok() ? *vocabulary : nullptr;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto vocabulary = SmallVocabulary();
  if (vocabulary == nullptr) __builtin_trap();
  const std::string input(reinterpret_cast<const char*>(data), size);
  gantry::guided::GrammarSpec spec;
  if (!input.empty() && input[0] == 'r') {
    spec.kind = gantry::guided::GrammarSpec::Kind::kRegex;
    spec.regex = input.substr(1);
  } else {
    spec.kind = gantry::guided::GrammarSpec::Kind::kJsonSchema;
    spec.json_schema = input;
  }
  auto grammar = gantry::guided::CompileGrammar(spec, vocabulary);
  if (!grammar.ok()) return 0;
  gantry::guided::GrammarMatcher matcher(*grammar);
  std::vector<uint32_t> mask(static_cast<size_t>(vocabulary->mask_words()));
  uint32_t pick = static_cast<uint32_t>(size);
  for (int step = 0; step < 64 && !matcher.IsCompleted(); ++step) {
    matcher.FillNextTokenMask(mask.data());
    std::vector<int32_t> allowed;
    for (int32_t t = 0; t < vocabulary->mask_size(); ++t) {
      if (mask[t / 32] >> (t % 32) & 1u) allowed.push_back(t);
    }
    if (allowed.empty()) break;
    pick = pick * 1103515245u + 12345u;
    if (!matcher.AcceptToken(allowed[pick % allowed.size()]).ok()) __builtin_trap();  // the mask allowed it
  }
  return 0;
}
