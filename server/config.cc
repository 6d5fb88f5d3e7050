#include "server/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <set>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "text/reasoning_parser.h"
#include "text/tool_call_parser.h"
#include "absl/strings/str_split.h"
#include "runtime/model_task.h"

namespace gantry::server {
namespace {

class Checker {
 public:
  explicit Checker(std::string path) : path_(std::move(path)) {}

  absl::Status Error(const YAML::Node& node, const std::string& message) const {
    return absl::InvalidArgumentError(absl::StrCat(path_, ":", node.Mark().line + 1, ": ", message));
  }

  absl::Status CheckKeys(const YAML::Node& map, const std::string& where, const std::set<std::string>& known) const {
    if (!map.IsMap()) return Error(map, absl::StrCat(where, " must be a mapping"));
    for (const auto& item : map) {
      const std::string key = item.first.as<std::string>();
      if (!known.count(key)) {
        return Error(item.first, absl::StrCat("unknown key '", key, "' in ", where, "; known: ",
                                              absl::StrJoin(known, ", ")));
      }
    }
    return absl::OkStatus();
  }

  template <typename T>
  absl::Status Read(const YAML::Node& map, const char* key, T* out, const char* what) const {
    const YAML::Node node = map[key];
    if (!node) return absl::OkStatus();
    try {
      *out = node.as<T>();
      return absl::OkStatus();
    } catch (const YAML::Exception&) {
      return Error(node, absl::StrCat("'", key, "' must be ", what, ", got '", node.Scalar(), "'"));
    }
  }

  // A finite number of seconds in [min, one year], or `min` excluded when
  // `positive`. NaN and infinities are refused, as yaml-cpp reads them.
  absl::Status ReadSeconds(const YAML::Node& map, const char* key, double* out, bool positive) const {
    if (auto s = Read(map, key, out, "a number of seconds"); !s.ok()) return s;
    if (!map[key]) return absl::OkStatus();
    constexpr double kYear = 365.0 * 24 * 3600;
    if (!std::isfinite(*out) || *out < 0 || (positive && *out == 0) || *out > kYear) {
      return Error(map[key], absl::StrCat("'", key, "' must be a number of seconds ", positive ? "> 0" : ">= 0",
                                          " and at most a year (", kYear, "), got ", map[key].Scalar()));
    }
    return absl::OkStatus();
  }

  // MiB that fit in bytes many times over: at most 2^24 MiB (16 TiB).
  absl::Status CheckMib(const YAML::Node& node, const char* key, int64_t mib) const {
    constexpr int64_t kMaxMib = int64_t{1} << 24;
    if (mib > kMaxMib) {
      return Error(node, absl::StrCat("'", key, "' must be at most ", kMaxMib, " MiB (16 TiB), got ", mib));
    }
    return absl::OkStatus();
  }

  absl::Status ReadPositive(const YAML::Node& map, const char* key, int64_t* out) const {
    if (auto s = Read(map, key, out, "a positive integer"); !s.ok()) return s;
    if (map[key] && *out <= 0) return Error(map[key], absl::StrCat("'", key, "' must be a positive integer, got ", *out));
    return absl::OkStatus();
  }

  absl::Status ReadModelSettings(const YAML::Node& map, scheduler::ModelSpec* spec) const {
    if (auto s = ReadPositive(map, "max_batch", &spec->engine.max_batch); !s.ok()) return s;
    if (auto s = ReadPositive(map, "max_step_tokens", &spec->engine.max_step_tokens); !s.ok()) return s;
    if (auto s = ReadPositive(map, "max_encode_tokens", &spec->engine.max_encode_tokens); !s.ok()) return s;
    if (auto s = ReadPositive(map, "max_queue", &spec->engine.max_queue); !s.ok()) return s;
    if (auto s = Read(map, "prefix_caching", &spec->engine.prefix_caching, "true or false"); !s.ok()) return s;
    if (auto s = Read(map, "special_tokens_in_content", &spec->engine.special_tokens_in_content, "true or false");
        !s.ok()) {
      return s;
    }
    int64_t kv_mib = static_cast<int64_t>(spec->kv_cache_bytes >> 20);
    if (auto s = ReadPositive(map, "kv_cache_mib", &kv_mib); !s.ok()) return s;
    if (auto s = CheckMib(map["kv_cache_mib"], "kv_cache_mib", kv_mib); !s.ok()) return s;
    spec->kv_cache_bytes = static_cast<uint64_t>(kv_mib) << 20;
    double idle = absl::ToDoubleSeconds(spec->idle_timeout);
    if (auto s = ReadSeconds(map, "idle_timeout_seconds", &idle, /*positive=*/false); !s.ok()) return s;
    spec->idle_timeout = absl::Seconds(idle);
    return absl::OkStatus();
  }

 private:
  std::string path_;
};

const std::set<std::string> kDefaultsKeys = {"max_batch", "max_step_tokens", "max_encode_tokens", "max_queue", "kv_cache_mib",
                                             "idle_timeout_seconds", "prefix_caching",
                                             "special_tokens_in_content"};

absl::Status CheckDevice(const std::string& device) {
  static const std::regex pattern("cpu|cuda|cuda:[0-9]+");
  if (!std::regex_match(device, pattern)) {
    return absl::InvalidArgumentError(absl::StrCat("device must be cpu, cuda or cuda:N, got '", device, "'"));
  }
  return absl::OkStatus();
}

absl::Status CheckDtype(const std::string& dtype) {
  if (dtype.empty() || dtype == "float32" || dtype == "bfloat16" || dtype == "float16") return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("dtype must be float32, bfloat16 or float16, got '", dtype, "'"));
}

}  // namespace

namespace {

absl::StatusOr<ServerConfig> ParseConfigThrowing(const std::string& yaml_text, const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ":", e.mark.line + 1, ": YAML syntax error: ", e.msg));
  }
  Checker check(path);
  ServerConfig config;
  if (!root || root.IsNull()) return config;
  if (auto s = check.CheckKeys(root, "the top level",
                               {"listen", "drain_timeout_seconds", "allow_cpu_fallback", "defaults", "models",
                                "memory_budget_mib", "gpu_memory_reserve_mib", "unload_grace_seconds", "metrics_listen", "host_cache_mib",
                                "metrics_tls", "gpu_sample_seconds", "auth", "tls"});
      !s.ok()) {
    return s;
  }
  if (auto s = check.Read(root, "listen", &config.listen, "an address such as 127.0.0.1:50051"); !s.ok()) return s;
  if (auto s = check.ReadSeconds(root, "drain_timeout_seconds", &config.drain_timeout_seconds, false); !s.ok()) {
    return s;
  }
  if (auto s = check.Read(root, "allow_cpu_fallback", &config.allow_cpu_fallback, "true or false"); !s.ok()) return s;
  if (auto s = check.Read(root, "metrics_listen", &config.metrics_listen, "an address:port"); !s.ok()) return s;
  if (!config.metrics_listen.empty() && config.metrics_listen.rfind(':') == std::string::npos) {
    return check.Error(root["metrics_listen"], "'metrics_listen' must be address:port (or \"\" to turn it off)");
  }
  if (auto s = check.ReadSeconds(root, "gpu_sample_seconds", &config.gpu_sample_seconds, /*positive=*/true); !s.ok()) {
    return s;
  }
  if (const YAML::Node budgets = root["memory_budget_mib"]; budgets) {
    if (!budgets.IsMap()) return check.Error(budgets, "'memory_budget_mib' must map devices to MiB");
    for (const auto& item : budgets) {
      const std::string device = item.first.as<std::string>();
      if (device == "cuda" || !CheckDevice(device).ok()) {
        return check.Error(item.first, absl::StrCat("memory_budget_mib: '", device, "' is not cpu or cuda:N"));
      }
      int64_t mib = 0;
      try {
        mib = item.second.as<int64_t>();
      } catch (const YAML::Exception&) {
        mib = -1;
      }
      if (mib <= 0) {
        return check.Error(item.second, absl::StrCat("memory_budget_mib: '", device, "' must be a positive number of MiB"));
      }
      if (auto s = check.CheckMib(item.second, "memory_budget_mib", mib); !s.ok()) return s;
      config.memory_budget_bytes[device] = static_cast<uint64_t>(mib) << 20;
    }
  }
  int64_t reserve_mib = static_cast<int64_t>(config.gpu_memory_reserve_bytes >> 20);
  if (auto s = check.Read(root, "gpu_memory_reserve_mib", &reserve_mib, "a number of MiB"); !s.ok()) return s;
  if (reserve_mib < 0) return check.Error(root["gpu_memory_reserve_mib"], "'gpu_memory_reserve_mib' must be >= 0");
  if (auto s = check.CheckMib(root["gpu_memory_reserve_mib"], "gpu_memory_reserve_mib", reserve_mib); !s.ok()) return s;
  config.gpu_memory_reserve_bytes = static_cast<uint64_t>(reserve_mib) << 20;
  int64_t host_cache_mib = 0;
  if (auto s = check.Read(root, "host_cache_mib", &host_cache_mib, "a number of MiB"); !s.ok()) return s;
  if (host_cache_mib < 0) return check.Error(root["host_cache_mib"], "'host_cache_mib' must be >= 0 (0: no host tier)");
  if (auto s = check.CheckMib(root["host_cache_mib"], "host_cache_mib", host_cache_mib); !s.ok()) return s;
  config.host_cache_bytes = static_cast<uint64_t>(host_cache_mib) << 20;
  if (auto s = check.ReadSeconds(root, "unload_grace_seconds", &config.unload_grace_seconds, false); !s.ok()) {
    return s;
  }
  const std::filesystem::path config_dir = std::filesystem::path(path).parent_path();
  auto file_key = [&](const YAML::Node& map, const char* key, std::string* out) -> absl::Status {
    if (auto s = check.Read(map, key, out, "a file path"); !s.ok()) return s;
    if (!out->empty() && std::filesystem::path(*out).is_relative()) *out = (config_dir / *out).lexically_normal().string();
    return absl::OkStatus();
  };
  if (const YAML::Node auth = root["auth"]; auth) {
    if (auto s = check.CheckKeys(auth, "auth", {"api_tokens_file", "admin_tokens_file"}); !s.ok()) return s;
    if (auto s = file_key(auth, "api_tokens_file", &config.auth.api_tokens_file); !s.ok()) return s;
    if (auto s = file_key(auth, "admin_tokens_file", &config.auth.admin_tokens_file); !s.ok()) return s;
  }
  // `tls` (gRPC) and `metrics_tls` (/metrics) have the same keys.
  auto tls_section = [&](const char* section, TlsConfig* out) -> absl::Status {
    const YAML::Node tls = root[section];
    if (!tls) return absl::OkStatus();
    if (auto s = check.CheckKeys(tls, section, {"cert_file", "key_file", "client_ca_file"}); !s.ok()) return s;
    if (auto s = file_key(tls, "cert_file", &out->cert_file); !s.ok()) return s;
    if (auto s = file_key(tls, "key_file", &out->key_file); !s.ok()) return s;
    if (auto s = file_key(tls, "client_ca_file", &out->client_ca_file); !s.ok()) return s;
    if (out->cert_file.empty() != out->key_file.empty()) {
      return check.Error(tls, absl::StrCat(section, " needs both 'cert_file' and 'key_file'"));
    }
    if (out->cert_file.empty() && !out->client_ca_file.empty()) {
      return check.Error(tls, absl::StrCat(section, ": 'client_ca_file' needs 'cert_file' and 'key_file'"));
    }
    return absl::OkStatus();
  };
  if (auto s = tls_section("tls", &config.tls); !s.ok()) return s;
  if (auto s = tls_section("metrics_tls", &config.metrics_tls); !s.ok()) return s;
  scheduler::ModelSpec defaults;
  defaults.kv_cache_bytes = 256ull << 20;
  if (root["defaults"]) {
    if (auto s = check.CheckKeys(root["defaults"], "defaults", kDefaultsKeys); !s.ok()) return s;
    if (auto s = check.ReadModelSettings(root["defaults"], &defaults); !s.ok()) return s;
  }
  const std::filesystem::path base = std::filesystem::path(path).parent_path();
  const YAML::Node models = root["models"];
  if (models && !models.IsSequence()) return check.Error(models, "'models' must be a list");
  constexpr size_t kMaxModels = 256;  // each is a registry entry, health name and metrics label set
  if (models && models.size() > kMaxModels) {
    return check.Error(models, absl::StrCat("'models' lists ", models.size(), " models; at most ", kMaxModels));
  }
  std::set<std::string> names;
  std::set<std::string> model_keys = kDefaultsKeys;
  model_keys.insert({"name", "path", "device", "dtype", "max_context", "resident", "tensor_parallel", "devices",
                     "host_cache", "task", "tool_parser", "reasoning_parser"});
  for (size_t i = 0; models && i < models.size(); ++i) {
    const YAML::Node m = models[i];
    const std::string where = absl::StrCat("models[", i, "]");
    if (auto s = check.CheckKeys(m, where, model_keys); !s.ok()) return s;
    scheduler::ModelSpec spec = defaults;
    if (!m["name"] || !m["path"]) return check.Error(m, absl::StrCat(where, " needs 'name' and 'path'"));
    if (auto s = check.Read(m, "name", &spec.name, "a string"); !s.ok()) return s;
    static const std::regex name_pattern("[A-Za-z0-9._-]+");
    if (!std::regex_match(spec.name, name_pattern)) {
      return check.Error(m["name"], absl::StrCat("'name' must match [A-Za-z0-9._-]+, got '", spec.name, "'"));
    }
    if (!names.insert(spec.name).second) {
      return check.Error(m["name"], absl::StrCat("model name '", spec.name, "' appears twice"));
    }
    if (auto s = check.Read(m, "path", &spec.path, "a folder path"); !s.ok()) return s;
    if (std::filesystem::path(spec.path).is_relative()) spec.path = (base / spec.path).lexically_normal().string();
    if (auto s = check.Read(m, "device", &spec.device, "cpu, cuda or cuda:N"); !s.ok()) return s;
    if (auto s = CheckDevice(spec.device); !s.ok()) return check.Error(m["device"], std::string(s.message()));
    if (auto s = check.Read(m, "dtype", &spec.dtype, "a dtype name"); !s.ok()) return s;
    if (auto s = CheckDtype(spec.dtype); !s.ok()) return check.Error(m["dtype"], std::string(s.message()));
    if (auto s = check.Read(m, "max_context", &spec.max_context, "a positive integer"); !s.ok()) return s;
    if (m["max_context"] && spec.max_context <= 0) return check.Error(m["max_context"], "'max_context' must be positive");
    if (m["task"]) {
      std::string task;
      if (auto s = check.Read(m, "task", &task, "generate, embed or rerank"); !s.ok()) return s;
      auto parsed = runtime::ParseModelTask(task);
      if (!parsed.ok()) return check.Error(m["task"], std::string(parsed.status().message()));
      spec.task = *parsed;
    }
    if (auto s = check.Read(m, "tool_parser", &spec.engine.tool_parser, "a tool-call format name"); !s.ok()) return s;
    if (auto parsed = text::ToolParserFromName(spec.engine.tool_parser); m["tool_parser"] && !parsed.ok()) {
      return check.Error(m["tool_parser"], std::string(parsed.status().message()));
    }
    if (auto s = check.Read(m, "reasoning_parser", &spec.engine.reasoning_parser, "a reasoning format name"); !s.ok()) {
      return s;
    }
    if (auto parsed = text::ReasoningParserFromName(spec.engine.reasoning_parser);
        m["reasoning_parser"] && !parsed.ok()) {
      return check.Error(m["reasoning_parser"], std::string(parsed.status().message()));
    }
    if (auto s = check.Read(m, "resident", &spec.resident, "true or false"); !s.ok()) return s;
    if (auto s = check.Read(m, "host_cache", &spec.host_cache, "true or false"); !s.ok()) return s;
    if (auto s = check.Read(m, "tensor_parallel", &spec.tensor_parallel, "a number of GPUs"); !s.ok()) return s;
    if (m["tensor_parallel"] && (spec.tensor_parallel < 1 || spec.tensor_parallel > 64)) {
      return check.Error(m["tensor_parallel"], absl::StrCat("'tensor_parallel' must be in [1, 64], got ",
                                                            spec.tensor_parallel));
    }
    if (const YAML::Node devices = m["devices"]) {
      // An explicit placement: its ranks' devices, in order.
      if (!devices.IsSequence() || devices.size() < 1 || devices.size() > 64) {
        return check.Error(devices, "'devices' must list 1 to 64 devices, e.g. [cuda:0, cuda:1]");
      }
      std::set<std::string> seen;
      for (const YAML::Node& d : devices) {
        const std::string device = d.IsScalar() ? d.Scalar() : "";
        if (device == "cuda" || !CheckDevice(device).ok()) {
          return check.Error(d, absl::StrCat("devices: '", device, "' is not cpu or cuda:N"));
        }
        if (device != "cpu" && !seen.insert(device).second) {
          return check.Error(d, absl::StrCat("devices: '", device, "' is listed twice"));
        }
        spec.devices.push_back(device);
      }
      if (m["tensor_parallel"] && spec.tensor_parallel != static_cast<int32_t>(spec.devices.size())) {
        return check.Error(devices, absl::StrCat("'tensor_parallel' ", spec.tensor_parallel, " disagrees with the ",
                                                 spec.devices.size(), " 'devices'"));
      }
      if (m["device"]) return check.Error(devices, "give 'device' or 'devices', not both");
      spec.tensor_parallel = static_cast<int32_t>(spec.devices.size());
      spec.device = spec.devices[0];
    }
    if (auto s = check.ReadModelSettings(m, &spec); !s.ok()) return s;
    config.models.push_back(std::move(spec));
  }
  return config;
}

}  // namespace

absl::StatusOr<ServerConfig> ParseConfig(const std::string& yaml_text, const std::string& path) {
  // yaml-cpp throws where a node is not what the code reads it as (a mapping
  // used as a key, say); every such case is the file's error, not a crash
  // (found by tests/fuzz).
  try {
    return ParseConfigThrowing(yaml_text, path);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ":", e.mark.line + 1, ": ", e.msg));
  }
}

namespace {

// The first number in a file; nullopt when it is missing or not a number
// ("max", cgroup v2's no-limit).
std::optional<uint64_t> ReadNumber(const std::string& path) {
  std::ifstream in(path);
  std::string text;
  if (!(in >> text)) return std::nullopt;
  uint64_t value = 0;
  if (!absl::SimpleAtoi(text, &value)) return std::nullopt;
  return value;
}

// Room left under a cgroup's limit: limit - usage, or nullopt without a limit.
std::optional<uint64_t> RoomUnder(const std::string& limit_file, const std::string& usage_file) {
  const auto limit = ReadNumber(limit_file);
  // cgroup v1 writes "no limit" as a page-rounded 2^63 - 1.
  if (!limit || *limit >= (uint64_t{1} << 62)) return std::nullopt;
  const uint64_t usage = ReadNumber(usage_file).value_or(0);
  return *limit > usage ? *limit - usage : 0;
}

}  // namespace

uint64_t HostAvailableBytesFrom(const std::string& meminfo, const std::string& self_cgroup,
                                const std::string& cgroup_root) {
  uint64_t available = 0;
  {
    std::ifstream in(meminfo);
    std::string key, unit;
    uint64_t kib = 0;
    while (in >> key >> kib >> unit) {
      if (key == "MemAvailable:") {
        available = kib << 10;
        break;
      }
    }
  }
  if (available == 0) return 0;
  // /proc/self/cgroup lines: "0::/path" (v2) or "N:memory:/path" (v1, the
  // memory controller among others).
  std::ifstream cgroups(self_cgroup);
  std::string line;
  while (std::getline(cgroups, line)) {
    std::vector<std::string> fields = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (fields.size() != 3) continue;
    const std::vector<std::string> controllers = absl::StrSplit(fields[1], ',');
    const bool v2 = fields[0] == "0" && fields[1].empty();
    const bool v1_memory = std::find(controllers.begin(), controllers.end(), "memory") != controllers.end();
    if (!v2 && !v1_memory) continue;
    // The process's cgroup and each one above it may set a limit.
    std::string path = fields[2];
    while (true) {
      const std::string dir = v2 ? cgroup_root + path : cgroup_root + "/memory" + path;
      const auto room = v2 ? RoomUnder(dir + "/memory.max", dir + "/memory.current")
                           : RoomUnder(dir + "/memory.limit_in_bytes", dir + "/memory.usage_in_bytes");
      if (room) available = std::min(available, *room);
      if (path.empty() || path == "/") break;
      const size_t slash = path.rfind('/');
      path = slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
    }
  }
  return available;
}

uint64_t HostAvailableBytes() { return HostAvailableBytesFrom("/proc/meminfo", "/proc/self/cgroup", "/sys/fs/cgroup"); }

absl::StatusOr<ServerConfig> LoadConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("config file ", path, " cannot be read"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return ParseConfig(buffer.str(), path);
}

absl::StatusOr<scheduler::ModelSpec> ParseModelFlag(const std::string& flag) {
  std::vector<std::string> parts = absl::StrSplit(flag, ',');
  std::vector<std::string> head = absl::StrSplit(parts[0], absl::MaxSplits('=', 1));
  if (head.size() != 2 || head[0].empty() || head[1].empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--model must be NAME=PATH[,device=D][,dtype=T], got '", flag, "'"));
  }
  scheduler::ModelSpec spec;
  spec.name = head[0];
  spec.path = head[1];
  for (size_t i = 1; i < parts.size(); ++i) {
    std::vector<std::string> kv = absl::StrSplit(parts[i], absl::MaxSplits('=', 1));
    if (kv.size() != 2) return absl::InvalidArgumentError(absl::StrCat("--model option '", parts[i], "' is not key=value"));
    if (kv[0] == "device") {
      if (auto s = CheckDevice(kv[1]); !s.ok()) return s;
      spec.device = kv[1];
    } else if (kv[0] == "dtype") {
      if (auto s = CheckDtype(kv[1]); !s.ok()) return s;
      spec.dtype = kv[1];
    } else {
      return absl::InvalidArgumentError(absl::StrCat("--model option '", kv[0], "' is unknown; known: device, dtype"));
    }
  }
  return spec;
}

}  // namespace gantry::server
