// CompileGrammar: front end (grammar IR) -> automaton -> token mask cache.
#include "text/guided/grammar.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "text/guided/json_schema.h"
#include "text/guided/regex_grammar.h"

namespace gantry::guided {

std::string GrammarSpec::CacheKey() const {
  switch (kind) {
    case Kind::kJsonSchema:
      return absl::StrCat("schema:", json_schema);
    case Kind::kAnyJson:
      return "json";
    case Kind::kRegex:
      return absl::StrCat("regex:", regex);
    case Kind::kChoice: {
      std::string key = "choice";
      // Length-prefixed so no two lists share a key.
      for (const std::string& c : choices) absl::StrAppend(&key, ":", c.size(), ":", c);
      return key;
    }
  }
  return "";
}

Grammar::Grammar(std::shared_ptr<const Vocabulary> vocabulary, internal::Automaton automaton,
                 internal::TokenMaskCache cache, double compile_seconds)
    : vocabulary_(std::move(vocabulary)),
      automaton_(std::move(automaton)),
      cache_(std::move(cache)),
      compile_seconds_(compile_seconds) {}

absl::StatusOr<std::shared_ptr<const Grammar>> CompileGrammar(const GrammarSpec& spec,
                                                              std::shared_ptr<const Vocabulary> vocabulary) {
  if (vocabulary == nullptr) return absl::InvalidArgumentError("no vocabulary");
  auto begin = std::chrono::steady_clock::now();
  internal::GrammarIr ir;
  switch (spec.kind) {
    case GrammarSpec::Kind::kJsonSchema: {
      absl::Status status = internal::JsonSchemaToGrammar(spec.json_schema, &ir);
      if (!status.ok()) return status;
      break;
    }
    case GrammarSpec::Kind::kAnyJson:
      internal::AnyJsonObjectGrammar(&ir);
      break;
    case GrammarSpec::Kind::kRegex: {
      absl::Status status = internal::RegexToGrammar(spec.regex, &ir);
      if (!status.ok()) return status;
      break;
    }
    case GrammarSpec::Kind::kChoice: {
      if (spec.choices.empty()) return absl::InvalidArgumentError("the choice list is empty");
      std::vector<internal::ExprPtr> options;
      for (const std::string& c : spec.choices) options.push_back(internal::Literal(c));
      ir.Define(ir.AddRule("choice"), internal::Alt(std::move(options)));
      break;
    }
  }
  absl::StatusOr<internal::Automaton> automaton = internal::BuildAutomaton(ir);
  if (!automaton.ok()) return automaton.status();
  internal::TokenMaskCache cache = internal::TokenMaskCache::Build(*automaton, *vocabulary);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  return std::make_shared<const Grammar>(std::move(vocabulary), *std::move(automaton), std::move(cache), seconds);
}

}  // namespace gantry::guided
