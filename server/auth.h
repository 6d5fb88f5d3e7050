// Bearer tokens on gRPC: clients send metadata `authorization: Bearer
// <token>`. API tokens may generate, chat, tokenize and read model states;
// admin tokens may also load and unload models. Tokens come from files (one
// per line, '#' comments) and from the environment (GANTRY_API_TOKENS,
// GANTRY_ADMIN_TOKENS, comma-separated); they are never logged. With no
// token configured, authentication is off (the server says so at start-up).
#ifndef GANTRY_SERVER_AUTH_H_
#define GANTRY_SERVER_AUTH_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace grpc {
class ServerContextBase;
}  // namespace grpc

namespace gantry::server {

struct AuthConfig {
  std::string api_tokens_file;    // "" = none
  std::string admin_tokens_file;  // "" = none
};

enum class Access { kUse, kAdmin };

class Authorizer {
 public:
  // Reads the files and the environment. INVALID_ARGUMENT naming a file that
  // cannot be read (never its contents).
  static absl::StatusOr<Authorizer> Create(const AuthConfig& config);
  Authorizer() = default;  // authentication off

  bool enabled() const { return !api_.empty() || !admin_.empty(); }
  size_t num_api_tokens() const { return api_.size(); }
  size_t num_admin_tokens() const { return admin_.size(); }

  // OK, UNAUTHENTICATED (no or unknown token) or PERMISSION_DENIED (an API
  // token where an admin one is needed), with a typed reason; `what` names
  // the call in the message.
  absl::Status Check(const grpc::ServerContextBase& context, Access access, const char* what) const;

 private:
  std::vector<std::string> api_, admin_;
};

}  // namespace gantry::server

#endif  // GANTRY_SERVER_AUTH_H_
