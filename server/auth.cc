#include "server/auth.h"

#include <grpcpp/grpcpp.h>

#include <cstdlib>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "scheduler/error_reason.h"

namespace gantry::server {
namespace {

absl::Status ReadTokens(const std::string& path, std::vector<std::string>* out) {
  if (path.empty()) return absl::OkStatus();
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("token file ", path, " cannot be read"));
  for (std::string line; std::getline(in, line);) {
    const std::string token(absl::StripAsciiWhitespace(line));
    if (!token.empty() && token[0] != '#') out->push_back(token);
  }
  return absl::OkStatus();
}

void EnvTokens(const char* name, std::vector<std::string>* out) {
  const char* value = std::getenv(name);
  if (value == nullptr) return;
  for (absl::string_view token : absl::StrSplit(value, ',', absl::SkipWhitespace())) {
    out->push_back(std::string(absl::StripAsciiWhitespace(token)));
  }
}

// Compares in time that depends on the lengths only, not on where the texts
// differ, so response times do not reveal a token byte by byte.
bool SameToken(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

bool Contains(const std::vector<std::string>& tokens, absl::string_view token) {
  bool found = false;
  for (const auto& t : tokens) found |= SameToken(t, token);
  return found;
}

}  // namespace

absl::StatusOr<Authorizer> Authorizer::Create(const AuthConfig& config) {
  Authorizer auth;
  if (auto s = ReadTokens(config.api_tokens_file, &auth.api_); !s.ok()) return s;
  if (auto s = ReadTokens(config.admin_tokens_file, &auth.admin_); !s.ok()) return s;
  EnvTokens("GANTRY_API_TOKENS", &auth.api_);
  EnvTokens("GANTRY_ADMIN_TOKENS", &auth.admin_);
  return auth;
}

absl::Status Authorizer::Check(const grpc::ServerContextBase& context, Access access, const char* what) const {
  if (!enabled()) return absl::OkStatus();
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  absl::string_view token;
  if (it != metadata.end()) {
    const absl::string_view header(it->second.data(), it->second.size());
    if (absl::StartsWithIgnoreCase(header, "bearer ")) token = absl::StripAsciiWhitespace(header.substr(7));
  }
  if (token.empty() || !(Contains(admin_, token) || Contains(api_, token))) {
    return WithReason(absl::UnauthenticatedError(
                          absl::StrCat(what, " needs a valid token in metadata 'authorization: Bearer <token>'")),
                      ErrorReason::kUnauthenticated);
  }
  if (access == Access::kAdmin && !Contains(admin_, token)) {
    return WithReason(absl::PermissionDeniedError(absl::StrCat(what, " needs an admin token")),
                      ErrorReason::kPermissionDenied);
  }
  return absl::OkStatus();
}

}  // namespace gantry::server
