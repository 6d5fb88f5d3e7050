// Streaming detokenizer for generation. Text is released only when it is
// settled: complete UTF-8 (a character split across tokens or byte-fallback
// pieces waits until whole) and not possibly the start of a stop string. The
// concatenation of everything released equals Tokenizer::Decode of all the
// tokens, cut before the first stop string.
#ifndef GANTRY_TEXT_STREAM_DECODER_H_
#define GANTRY_TEXT_STREAM_DECODER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "text/tokenizer.h"

namespace gantry::text {

class StreamDecoder {
 public:
  struct Output {
    std::string text;      // newly released text (may be empty)
    bool stopped = false;  // a stop string matched; `text` ends just before it
    std::string stop;      // the stop string that matched
  };

  // `tokenizer` must outlive this. Empty stop strings are ignored.
  StreamDecoder(const Tokenizer& tokenizer, std::vector<std::string> stop_strings, bool skip_special_tokens);

  // Adds one generated token. After a stop, returns nothing more.
  Output Add(int32_t token);
  // The end of generation: releases what is held (a cut-off character as U+FFFD).
  Output Finish();

  bool stopped() const { return stopped_; }

 private:
  Output Release(bool final);

  const Tokenizer& tokenizer_;
  std::vector<std::string> stop_strings_;
  bool skip_special_tokens_;
  bool first_ = true;
  bool stopped_ = false;
  std::string pending_bytes_;  // decoded bytes not yet complete UTF-8
  std::string held_;           // complete text that may begin a stop string
};

}  // namespace gantry::text

#endif  // GANTRY_TEXT_STREAM_DECODER_H_
