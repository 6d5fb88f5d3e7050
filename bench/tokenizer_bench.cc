// Tokenizer throughput, one core: encode and decode MB/s for the Llama 3 and
// Qwen 3 tokenizers on a mixed English / Chinese and other scripts / code
// corpus, beside the references in the same run:
//   - @lenml/tokenizers (transformers.js fork, npm) via bench/tokenizer_reference.mjs
//   - Hugging Face's Rust `tokenizers` (Python) via bench/tokenizer_reference.py
// A reference that is not installed on the machine is reported as skipped.
//
//   tokenizer_bench --tokenizers DIR[,DIR...] [--rounds 3]
//
// DIR holds tokenizer.json (and tokenizer_config.json). The corpus is built
// here, deterministically: the license texts in /usr/share/common-licenses
// (English prose), this repository's C++ sources (code), and the golden text
// corpus (tests/text/golden/llama3.json: Chinese, Japanese, Korean, Arabic,
// emoji, whitespace runs...), cut into documents of about 2 KB, as requests are.
// Every implementation starts each round with a freshly loaded tokenizer.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "text/tokenizer.h"

ABSL_FLAG(std::string, tokenizers, "", "comma-separated tokenizer folders");
ABSL_FLAG(int, rounds, 3, "timed rounds; the best is reported");
ABSL_FLAG(std::string, corpus_out, "/tmp/gantry_tokenizer_corpus.json", "where the corpus is written for the references");

namespace {

using Clock = std::chrono::steady_clock;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::vector<std::string> BuildCorpus() {
  const std::string root = GANTRY_SOURCE_DIR;
  std::string english, code, multilingual;
  for (const char* license : {"GPL-3", "Apache-2.0", "MPL-2.0", "LGPL-2.1", "GFDL-1.3", "Artistic"}) {
    english += ReadFile(std::string("/usr/share/common-licenses/") + license);
  }
  std::vector<std::filesystem::path> sources;
  for (const auto& dir : {"runtime", "bench", "tests"}) {
    for (const auto& entry : std::filesystem::recursive_directory_iterator(root + "/" + dir)) {
      const auto ext = entry.path().extension();
      if (entry.path().string().find("node_modules") == std::string::npos && (ext == ".cc" || ext == ".h")) {
        sources.push_back(entry.path());
      }
    }
  }
  std::sort(sources.begin(), sources.end());
  for (const auto& path : sources) code += ReadFile(path.string());
  auto golden = nlohmann::json::parse(ReadFile(root + "/tests/text/golden/llama3.json"));
  // Ten passes with the order rotated, so the multilingual share is not tiny.
  for (int pass = 0; pass < 10; ++pass) {
    for (size_t i = 0; i < golden.size(); ++i) {
      multilingual += golden[(i + pass * 37) % golden.size()]["text"].get<std::string>() + "\n";
    }
  }
  std::printf("corpus: %.0f KB English, %.0f KB code, %.0f KB multilingual\n", english.size() / 1e3,
              code.size() / 1e3, multilingual.size() / 1e3);
  // Documents of about 2 KB, cut at line ends.
  std::vector<std::string> documents;
  for (const std::string* part : {&english, &code, &multilingual}) {
    std::string current;
    for (absl::string_view line : absl::StrSplit(*part, '\n')) {
      current.append(line.data(), line.size());
      current.push_back('\n');
      if (current.size() >= 2048) documents.push_back(std::exchange(current, {}));
    }
    if (!current.empty()) documents.push_back(current);
  }
  return documents;
}

struct Figures {
  double encode_mbps = 0, decode_mbps = 0;
  long tokens = 0;
};

// Each round loads the tokenizer afresh (untimed), so word caches start cold
// in every round and implementation alike.
Figures BenchOurs(const std::string& dir, const std::vector<std::string>& documents, int rounds) {
  double bytes = 0;
  for (const auto& d : documents) bytes += d.size();
  Figures best;
  std::vector<std::vector<int32_t>> ids(documents.size());
  for (int round = 0; round < rounds; ++round) {
    auto loaded = gantry::text::Tokenizer::Load(dir);
    const gantry::text::Tokenizer& tokenizer = **loaded;
    auto start = Clock::now();
    long tokens = 0;
    for (size_t i = 0; i < documents.size(); ++i) {
      ids[i] = *tokenizer.Encode(documents[i], false);
      tokens += static_cast<long>(ids[i].size());
    }
    double encode_s = std::chrono::duration<double>(Clock::now() - start).count();
    start = Clock::now();
    double decoded = 0;
    for (const auto& doc_ids : ids) decoded += tokenizer.Decode(doc_ids).size();
    double decode_s = std::chrono::duration<double>(Clock::now() - start).count();
    best.tokens = tokens;
    best.encode_mbps = std::max(best.encode_mbps, bytes / 1e6 / encode_s);
    best.decode_mbps = std::max(best.decode_mbps, decoded / 1e6 / decode_s);
  }
  return best;
}

// Runs a reference script; it prints "encode_mbps decode_mbps tokens".
bool RunReference(const std::string& command, Figures* figures) {
  FILE* pipe = popen((command + " 2>/dev/null").c_str(), "r");
  if (pipe == nullptr) return false;
  char line[256] = {0};
  bool ok = std::fgets(line, sizeof(line), pipe) != nullptr &&
            std::sscanf(line, "%lf %lf %ld", &figures->encode_mbps, &figures->decode_mbps, &figures->tokens) == 3;
  return pclose(pipe) == 0 && ok;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::vector<std::string> dirs = absl::StrSplit(absl::GetFlag(FLAGS_tokenizers), ',', absl::SkipEmpty());
  if (dirs.empty()) {
    std::fprintf(stderr, "usage: tokenizer_bench --tokenizers DIR[,DIR...]\n");
    return 2;
  }
  const int rounds = absl::GetFlag(FLAGS_rounds);
  std::vector<std::string> documents = BuildCorpus();
  const std::string corpus_path = absl::GetFlag(FLAGS_corpus_out);
  std::ofstream(corpus_path) << nlohmann::json(documents).dump();
  double bytes = 0;
  for (const auto& d : documents) bytes += d.size();
  std::printf("%zu documents, %.2f MB; best of %d rounds, one core\n\n", documents.size(), bytes / 1e6, rounds);
  std::printf("%-40s %-22s %12s %12s %10s %14s\n", "tokenizer", "implementation", "encode MB/s", "decode MB/s",
              "tokens", "encode ratio");
  const std::string bench_dir = std::string(GANTRY_SOURCE_DIR) + "/bench";
  for (const auto& dir : dirs) {
    auto tokenizer = gantry::text::Tokenizer::Load(dir);
    if (!tokenizer.ok()) {
      std::fprintf(stderr, "%s\n", tokenizer.status().ToString().c_str());
      return 1;
    }
    const std::string name = std::filesystem::path(dir).parent_path().filename().string() + "/" +
                             std::filesystem::path(dir).filename().string();
    Figures ours = BenchOurs(dir, documents, rounds);
    std::printf("%-40s %-22s %12.2f %12.2f %10ld %14s\n", name.c_str(), "gantry (C++)", ours.encode_mbps,
                ours.decode_mbps, ours.tokens, "1.00x");
    struct Reference {
      const char* label;
      std::string command;
    };
    for (const Reference& ref : std::vector<Reference>{
             {"@lenml/tokenizers (JS)", "node " + bench_dir + "/tokenizer_reference.mjs " + corpus_path + " " + dir +
                                            " " + std::to_string(rounds)},
             {"HF tokenizers (Rust)", "TOKENIZERS_PARALLELISM=false RAYON_NUM_THREADS=1 python3 " + bench_dir +
                                          "/tokenizer_reference.py " + corpus_path + " " + dir + " " +
                                          std::to_string(rounds)},
         }) {
      Figures theirs;
      if (!RunReference(ref.command, &theirs)) {
        std::printf("%-40s %-22s %12s\n", "", ref.label, "skipped (not installed here)");
        continue;
      }
      char ratio[32];
      std::snprintf(ratio, sizeof(ratio), "%.2fx", ours.encode_mbps / theirs.encode_mbps);
      std::printf("%-40s %-22s %12.2f %12.2f %10ld %14s\n", "", ref.label, theirs.encode_mbps, theirs.decode_mbps,
                  theirs.tokens, ratio);
      if (theirs.tokens != ours.tokens) {
        std::printf("  note: token counts differ (%ld vs %ld)\n", theirs.tokens, ours.tokens);
      }
    }
  }
  return 0;
}
