#include "text/stream_decoder.h"

#include <algorithm>

#include "text/utf8.h"

namespace gantry::text {

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, std::vector<std::string> stop_strings,
                             bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {
  for (auto& stop : stop_strings) {
    if (!stop.empty()) stop_strings_.push_back(std::move(stop));
  }
}

StreamDecoder::Output StreamDecoder::Add(int32_t token) {
  if (stopped_) return {};
  if (tokenizer_.Decodes(token, skip_special_tokens_)) {
    pending_bytes_ += tokenizer_.TokenBytes(token, first_, skip_special_tokens_);
    first_ = false;
  }
  return Release(/*final=*/false);
}

StreamDecoder::Output StreamDecoder::Finish() {
  if (stopped_) return {};
  return Release(/*final=*/true);
}

StreamDecoder::Output StreamDecoder::Release(bool final) {
  DrainUtf8(&pending_bytes_, final, &held_);
  Output out;
  // The earliest stop string wins; at equal positions, the longest.
  size_t stop_at = std::string::npos;
  for (const auto& stop : stop_strings_) {
    size_t at = held_.find(stop);
    if (at != std::string::npos && (at < stop_at || (at == stop_at && stop.size() > out.stop.size()))) {
      stop_at = at;
      out.stop = stop;
    }
  }
  if (stop_at != std::string::npos) {
    out.text = held_.substr(0, stop_at);
    out.stopped = stopped_ = true;
    held_.clear();
    pending_bytes_.clear();
    return out;
  }
  // Hold back the longest tail that is a proper prefix of some stop string.
  size_t keep = 0;
  if (!final) {
    for (const auto& stop : stop_strings_) {
      for (size_t n = std::min(stop.size() - 1, held_.size()); n > keep; --n) {
        if (held_.compare(held_.size() - n, n, stop, 0, n) == 0) {
          keep = n;
          break;
        }
      }
    }
  }
  out.text = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

}  // namespace gantry::text
