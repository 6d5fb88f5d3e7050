// Helpers for the guided decoding tests: vocabularies (hand-made and the real
// Qwen3 one), a brute-force mask (every token simulated byte by byte, without
// the mask cache), mask comparison and pseudo-random walks through a grammar.
#ifndef GANTRY_TESTS_GUIDED_GUIDED_TEST_UTIL_H_
#define GANTRY_TESTS_GUIDED_GUIDED_TEST_UTIL_H_

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "text/guided/grammar.h"
#include "text/guided/matcher.h"
#include "text/guided/vocabulary.h"

namespace gantry::guided::testing {

// tests/text/node_modules is filled by `npm ci` in tests/text.
std::string TokenizerDir(const std::string& name);
// The Qwen3 vocabulary (loaded once), or null with a test failure.
std::shared_ptr<const Vocabulary> QwenVocabulary();
// A small vocabulary: single bytes, JSON punctuation runs, words, UTF-8
// pieces (whole and split code points), one stop token (the last id) and one
// special token without bytes; mask_size leaves a few ids past the end.
std::shared_ptr<const Vocabulary> SmallVocabulary();

std::shared_ptr<const Grammar> MustCompile(const GrammarSpec& spec, std::shared_ptr<const Vocabulary> vocabulary);
GrammarSpec SchemaSpec(const std::string& schema);
GrammarSpec RegexSpec(const std::string& regex);
// The message of the INVALID_ARGUMENT that compiling `spec` must give.
std::string CompileError(const GrammarSpec& spec);

std::vector<uint32_t> Mask(const GrammarMatcher& matcher, const Vocabulary& vocabulary);
// Allowed iff the token's bytes can be read (stop tokens iff CanStop()).
std::vector<uint32_t> BruteForceMask(const GrammarMatcher& matcher, const Vocabulary& vocabulary);
// "" when equal, else the first differing token ids with their bytes.
std::string DiffMasks(const std::vector<uint32_t>& got, const std::vector<uint32_t>& want,
                      const Vocabulary& vocabulary);
bool IsSet(const std::vector<uint32_t>& mask, int32_t id);

// Whether the whole text matches: fed as single-byte tokens (ids 0..255 of
// SmallVocabulary), then CanStop.
bool Matches(const std::shared_ptr<const Grammar>& grammar, const std::string& text);

struct WalkOptions {
  uint64_t seed = 1;
  int max_tokens = 600;
  double stop_probability = 0.3;  // when CanStop and other tokens are allowed
  int brute_force_every = 0;      // compare with BruteForceMask every n steps (0: never)
};
struct WalkResult {
  std::string text;
  bool completed = false;  // stopped or IsCompleted
  int tokens = 0;
  std::string mask_error;  // the first brute-force mismatch
};
WalkResult RandomWalk(const std::shared_ptr<const Grammar>& grammar, const WalkOptions& options);

// Appends one JSON line to GANTRY_GUIDED_OUT_DIR/<file> (read by validate_outputs.mjs).
void WriteOutputLine(const std::string& file, const std::string& json_line, bool truncate);

}  // namespace gantry::guided::testing

#endif  // GANTRY_TESTS_GUIDED_GUIDED_TEST_UTIL_H_
