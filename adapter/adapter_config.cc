#include "adapter/adapter_config.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "server/limits.h"

namespace gantry::adapter {

absl::StatusOr<AdapterConfig> ParseAdapterConfig(const std::string& yaml_text, const std::string& path) {
  AdapterConfig config;
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ":", e.mark.line + 1, ": YAML syntax error: ", e.msg));
  }
  if (!root || root.IsNull()) return config;
  auto at = [&](const YAML::Node& node, const std::string& message) {
    return absl::InvalidArgumentError(absl::StrCat(path, ":", node.Mark().line + 1, ": ", message));
  };
  if (!root.IsMap()) return at(root, "the adapter configuration must be a mapping");
  for (const auto& item : root) {
    const std::string key = item.first.as<std::string>();
    const YAML::Node& value = item.second;
    try {
      if (key == "listen") {
        config.listen = value.as<std::string>();
      } else if (key == "upstream") {
        config.upstream = value.as<std::string>();
      } else if (key == "api_keys") {
        if (!value.IsSequence()) return at(value, "'api_keys' must be a list of strings");
        config.api_keys = value.as<std::vector<std::string>>();
      } else if (key == "request_timeout_seconds") {
        config.request_timeout_seconds = value.as<double>();
        if (!(config.request_timeout_seconds > 0) || !std::isfinite(config.request_timeout_seconds)) {
          return at(value, "'request_timeout_seconds' must be > 0");
        }
      } else if (key == "max_connections" || key == "max_connections_per_client") {
        int& out =
            key == "max_connections" ? config.limits.max_connections : config.limits.max_connections_per_client;
        out = value.as<int>();
        if (out < 1) return at(value, absl::StrCat("'", key, "' must be >= 1"));
      } else if (double* seconds = key == "header_timeout_seconds"  ? &config.limits.header_timeout_seconds
                                   : key == "body_timeout_seconds"  ? &config.limits.body_timeout_seconds
                                   : key == "idle_timeout_seconds"  ? &config.limits.idle_timeout_seconds
                                   : key == "write_timeout_seconds" ? &config.limits.write_timeout_seconds
                                                                    : nullptr) {
        *seconds = value.as<double>();
        if (!(*seconds > 0) || !std::isfinite(*seconds)) return at(value, absl::StrCat("'", key, "' must be > 0"));
      } else if (key == "max_header_bytes") {
        config.limits.max_header_bytes = value.as<int64_t>();
        if (config.limits.max_header_bytes < 1024 || config.limits.max_header_bytes > (1 << 20)) {
          return at(value, "'max_header_bytes' must be between 1024 and 1048576");
        }
      } else if (key == "max_body_bytes") {
        config.limits.max_body_bytes = value.as<int64_t>();
        // Larger bodies would not fit the gRPC messages the server accepts.
        if (config.limits.max_body_bytes < 1 || config.limits.max_body_bytes > kMaxRequestBodyBytes) {
          return at(value, absl::StrCat("'max_body_bytes' must be between 1 and ", kMaxRequestBodyBytes));
        }
      } else if (std::string* file = key == "upstream_token_file" ? &config.upstream_token_file
                                     : key == "upstream_ca_file"   ? &config.upstream_ca_file
                                     : key == "upstream_cert_file" ? &config.upstream_cert_file
                                     : key == "upstream_key_file"  ? &config.upstream_key_file
                                     : key == "tls_cert_file"      ? &config.tls_cert_file
                                     : key == "tls_key_file"       ? &config.tls_key_file
                                                                   : nullptr) {
        *file = value.as<std::string>();
        if (!file->empty() && std::filesystem::path(*file).is_relative()) {
          *file = (std::filesystem::path(path).parent_path() / *file).lexically_normal().string();
        }
      } else {
        return at(item.first, absl::StrCat("unknown key '", key,
                                           "'; known: listen, upstream, api_keys, request_timeout_seconds, "
                                           "max_connections, max_connections_per_client, "
                                           "header_timeout_seconds, body_timeout_seconds, idle_timeout_seconds, "
                                           "write_timeout_seconds, max_header_bytes, max_body_bytes, "
                                           "upstream_token_file, upstream_ca_file, "
                                           "upstream_cert_file, upstream_key_file, tls_cert_file, tls_key_file"));
      }
    } catch (const YAML::Exception&) {
      return at(value, absl::StrCat("'", key, "' has the wrong type: '", value.Scalar(), "'"));
    }
  }
  if (config.tls_cert_file.empty() != config.tls_key_file.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": tls_cert_file and tls_key_file go together"));
  }
  if (config.upstream_cert_file.empty() != config.upstream_key_file.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": upstream_cert_file and upstream_key_file go together"));
  }
  for (const auto& key : config.api_keys) {
    if (key.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": api_keys must not contain empty keys"));
  }
  return config;
}

absl::StatusOr<AdapterConfig> LoadAdapterConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  return ParseAdapterConfig(text.str(), path);
}

}  // namespace gantry::adapter
