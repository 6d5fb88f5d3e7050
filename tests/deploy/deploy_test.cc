// The deployment files (deploy/compose.yaml, deploy/kubernetes/,
// deploy/prometheus, deploy/grafana, deploy/docker) against what the programs
// really do: their configurations are parsed with the server's and the
// adapter's own parsers, every port, probe and scrape target is checked
// against those, the termination grace periods against drain_timeout_seconds,
// and the metric names the endpoint picker reads against a real gantry-server's
// /metrics; gantry-health and the adapter's /health against real processes.
#include <grpcpp/grpcpp.h>
#include <httplib.h>
#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "adapter/adapter_config.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/config.h"
#include "tests/server/metrics_scrape.h"
#include "tests/server/server_process.h"

namespace gantry {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::string kRoot = GANTRY_SOURCE_DIR;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

int PortOf(const std::string& address) { return std::stoi(address.substr(address.rfind(':') + 1)); }
std::string HostOf(const std::string& address) { return address.substr(0, address.rfind(':')); }

// Every document of a multi-document manifest file, by "Kind/name".
std::map<std::string, YAML::Node> LoadManifests(const std::string& path) {
  std::map<std::string, YAML::Node> out;
  for (const YAML::Node& doc : YAML::LoadAllFromFile(path)) {
    if (!doc || doc.IsNull()) continue;
    out[doc["kind"].as<std::string>() + "/" + doc["metadata"]["name"].as<std::string>()] = doc;
  }
  return out;
}

YAML::Node Container(const YAML::Node& deployment, const std::string& name) {
  for (const auto& c : deployment["spec"]["template"]["spec"]["containers"]) {
    if (c["name"].as<std::string>() == name) return c;
  }
  ADD_FAILURE() << "no container " << name;
  return YAML::Node();
}

int ContainerPort(const YAML::Node& container, const std::string& name) {
  for (const auto& p : container["ports"]) {
    if (p["name"].as<std::string>() == name) return p["containerPort"].as<int>();
  }
  ADD_FAILURE() << "no port " << name << " in " << container["name"];
  return -1;
}

// The seconds a preStop `sleep N` hook waits (0 without one).
int PreStopSleep(const YAML::Node& container) {
  const YAML::Node command = container["lifecycle"]["preStop"]["exec"]["command"];
  if (!command) return 0;
  EXPECT_EQ(command[0].as<std::string>(), "sleep");
  return command[1].as<int>();
}

// The configuration files as deploy/kubernetes/config.yaml holds them.
struct KubernetesConfig {
  server::ServerConfig server;
  adapter::AdapterConfig adapter;
};

KubernetesConfig LoadKubernetesConfig() {
  auto manifests = LoadManifests(kRoot + "/deploy/kubernetes/config.yaml");
  const YAML::Node data = manifests.at("ConfigMap/gantry-config")["data"];
  auto server = server::ParseConfig(data["gantry.yaml"].as<std::string>(), "/etc/gantry/gantry.yaml");
  EXPECT_TRUE(server.ok()) << server.status();
  auto adapter = adapter::ParseAdapterConfig(data["adapter.yaml"].as<std::string>(), "/etc/gantry/adapter.yaml");
  EXPECT_TRUE(adapter.ok()) << adapter.status();
  return {server.ok() ? *server : server::ServerConfig(), adapter.ok() ? *adapter : adapter::AdapterConfig()};
}

// An EPP metric spec, "name{label=value,...}" (values unquoted, as the
// endpoint picker parses them).
struct MetricSpec {
  std::string name;
  std::map<std::string, std::string> labels;
};

MetricSpec ParseMetricSpec(const std::string& text) {
  MetricSpec spec;
  const size_t brace = text.find('{');
  spec.name = text.substr(0, brace);
  if (brace != std::string::npos) {
    EXPECT_EQ(text.back(), '}') << text;
    std::stringstream pairs(text.substr(brace + 1, text.size() - brace - 2));
    for (std::string pair; std::getline(pairs, pair, ',');) {
      const size_t eq = pair.find('=');
      EXPECT_NE(eq, std::string::npos) << text;
      const std::string value = pair.substr(eq + 1);
      EXPECT_EQ(value.find('"'), std::string::npos) << "the picker takes quotes as part of the value: " << text;
      spec.labels[pair.substr(0, eq)] = value;
    }
  }
  return spec;
}

// "--flag value" and "--flag=value" arguments of a container.
std::map<std::string, std::string> Flags(const YAML::Node& container) {
  std::map<std::string, std::string> flags;
  std::vector<std::string> args;
  for (const auto& a : container["args"]) args.push_back(a.as<std::string>());
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i].rfind("--", 0) != 0) continue;
    if (const size_t eq = args[i].find('='); eq != std::string::npos) {
      flags[args[i].substr(2, eq - 2)] = args[i].substr(eq + 1);
    } else if (i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0) {
      flags[args[i].substr(2)] = args[i + 1];
      ++i;
    } else {
      flags[args[i].substr(2)] = "true";
    }
  }
  return flags;
}

// The metric specs the endpoint picker reads, by flag.
std::map<std::string, MetricSpec> PickerMetrics() {
  auto manifests = LoadManifests(kRoot + "/deploy/kubernetes/inference_pool.yaml");
  auto flags = Flags(Container(manifests.at("Deployment/gantry-llama-epp"), "epp"));
  std::map<std::string, MetricSpec> out;
  for (const char* flag :
       {"total-queued-requests-metric", "total-running-requests-metric", "kv-cache-usage-percentage-metric"}) {
    EXPECT_TRUE(flags.count(flag)) << "the picker's --" << flag << " must name Gantry's metric, not vLLM's default";
    out[flag] = ParseMetricSpec(flags[flag]);
  }
  return out;
}

TEST(Kubernetes, ServerDeploymentMatchesItsConfig) {
  const KubernetesConfig config = LoadKubernetesConfig();
  auto manifests = LoadManifests(kRoot + "/deploy/kubernetes/server.yaml");
  const YAML::Node deployment = manifests.at("Deployment/gantry-server");
  const YAML::Node pod = deployment["spec"]["template"]["spec"];
  const YAML::Node server = Container(deployment, "gantry-server");

  const int grpc_port = PortOf(config.server.listen);
  const int metrics_port = PortOf(config.server.metrics_listen);
  EXPECT_EQ(HostOf(config.server.listen), "0.0.0.0") << "the kubelet probes the pod's address";
  EXPECT_EQ(HostOf(config.server.metrics_listen), "0.0.0.0") << "Prometheus and the picker scrape from outside the pod";
  EXPECT_EQ(ContainerPort(server, "grpc"), grpc_port);
  EXPECT_EQ(ContainerPort(server, "metrics"), metrics_port);
  EXPECT_THAT(server["args"].as<std::vector<std::string>>(),
              ElementsAre("gantry-server", "--config", "/etc/gantry/gantry.yaml"));

  // Native gRPC probes of grpc.health.v1, service "" (the server as a whole).
  for (const char* probe : {"startupProbe", "readinessProbe", "livenessProbe"}) {
    SCOPED_TRACE(probe);
    ASSERT_TRUE(server[probe]["grpc"]) << "a native gRPC probe";
    EXPECT_EQ(server[probe]["grpc"]["port"].as<int>(), grpc_port);
    EXPECT_EQ(server[probe]["grpc"]["service"].as<std::string>(""), "");
  }
  // SIGTERM comes after the preStop sleep; the server drains for
  // drain_timeout_seconds and its gRPC shutdown may take 10 s more
  // (server/main.cc); only then may the kubelet kill it.
  const int server_pre_stop = PreStopSleep(server);
  const double drain = config.server.drain_timeout_seconds;
  EXPECT_EQ(pod["terminationGracePeriodSeconds"].as<double>(), server_pre_stop + drain + 10);

  EXPECT_EQ(server["resources"]["limits"]["nvidia.com/gpu"].as<int>(), 1);
  EXPECT_EQ(server["resources"]["requests"]["nvidia.com/gpu"].as<int>(), 1);

  // Models read-only at /models, the configuration from the ConfigMap.
  std::map<std::string, YAML::Node> mounts;
  for (const YAML::Node& m : server["volumeMounts"]) mounts[m["mountPath"].as<std::string>()] = m;
  ASSERT_TRUE(mounts.count("/models"));
  EXPECT_TRUE(mounts["/models"]["readOnly"].as<bool>());
  ASSERT_TRUE(mounts.count("/etc/gantry"));
  std::map<std::string, YAML::Node> volumes;
  for (const YAML::Node& v : pod["volumes"]) volumes[v["name"].as<std::string>()] = v;
  const YAML::Node models = volumes[mounts["/models"]["name"].as<std::string>()];
  EXPECT_TRUE(models["persistentVolumeClaim"]["readOnly"].as<bool>());
  EXPECT_EQ(models["persistentVolumeClaim"]["claimName"].as<std::string>(),
            LoadManifests(kRoot + "/deploy/kubernetes/models_pvc.yaml")
                .at("PersistentVolumeClaim/gantry-models")["metadata"]["name"]
                .as<std::string>());
  EXPECT_EQ(volumes[mounts["/etc/gantry"]["name"].as<std::string>()]["configMap"]["name"].as<std::string>(),
            "gantry-config");
  for (const auto& model : config.server.models) {
    if (model.path.rfind("/opt/gantry/", 0) == 0) continue;  // inside the image
    EXPECT_EQ(model.path.rfind("/models/", 0), 0u) << model.name << " must live on the model volume";
  }

  // The adapter beside it: its port, its upstream on loopback, its probes.
  const YAML::Node adapter = Container(deployment, "gantry-adapter");
  const int http_port = PortOf(config.adapter.listen);
  EXPECT_EQ(ContainerPort(adapter, "http"), http_port);
  EXPECT_EQ(config.adapter.upstream, "127.0.0.1:" + std::to_string(grpc_port));
  EXPECT_THAT(adapter["args"].as<std::vector<std::string>>(),
              ElementsAre("gantry-adapter", "--config", "/etc/gantry/adapter.yaml"));
  EXPECT_EQ(adapter["readinessProbe"]["httpGet"]["path"].as<std::string>(), "/health");
  EXPECT_EQ(adapter["readinessProbe"]["httpGet"]["port"].as<int>(), http_port);
  EXPECT_EQ(adapter["livenessProbe"]["tcpSocket"]["port"].as<int>(), http_port);
  // It keeps carrying streams while the server drains, and stops in time.
  const int adapter_pre_stop = PreStopSleep(adapter);
  EXPECT_GE(adapter_pre_stop, server_pre_stop + drain);
  EXPECT_LT(adapter_pre_stop + 5, pod["terminationGracePeriodSeconds"].as<int>());

  // The images' user (deploy/docker/Dockerfile).
  EXPECT_THAT(ReadFile(kRoot + "/deploy/docker/Dockerfile"),
              HasSubstr("--uid " + pod["securityContext"]["runAsUser"].as<std::string>()));
  EXPECT_TRUE(pod["securityContext"]["runAsNonRoot"].as<bool>());

  // The Service's ports lead to the containers' named ports.
  const YAML::Node service = manifests.at("Service/gantry-server");
  std::map<std::string, int> service_ports;
  for (const auto& p : service["spec"]["ports"]) {
    service_ports[p["name"].as<std::string>()] = p["port"].as<int>();
    const std::string target = p["targetPort"].as<std::string>();
    EXPECT_TRUE(target == "grpc" || target == "metrics" || target == "http") << target;
  }
  EXPECT_EQ(service_ports["grpc"], grpc_port);
  EXPECT_EQ(service_ports["metrics"], metrics_port);
  EXPECT_EQ(service_ports["http"], http_port);
  for (const auto& label : service["spec"]["selector"]) {
    EXPECT_EQ(deployment["spec"]["template"]["metadata"]["labels"][label.first.as<std::string>()].as<std::string>(),
              label.second.as<std::string>());
  }

  // The ServiceMonitor scrapes /metrics on the server's and the adapter's ports.
  auto monitor = LoadManifests(kRoot + "/deploy/kubernetes/service_monitor.yaml").at("ServiceMonitor/gantry");
  std::set<std::string> scraped;
  for (const auto& e : monitor["spec"]["endpoints"]) {
    scraped.insert(e["port"].as<std::string>());
    EXPECT_EQ(e["path"].as<std::string>(), "/metrics");
  }
  EXPECT_EQ(scraped, (std::set<std::string>{"metrics", "http"}));
  for (const auto& label : monitor["spec"]["selector"]["matchLabels"]) {
    EXPECT_EQ(service["metadata"]["labels"][label.first.as<std::string>()].as<std::string>(),
              label.second.as<std::string>());
  }

  // kubectl apply -k takes every core file.
  const YAML::Node kustomization = YAML::LoadFile(kRoot + "/deploy/kubernetes/kustomization.yaml");
  EXPECT_THAT(kustomization["resources"].as<std::vector<std::string>>(),
              ElementsAre("namespace.yaml", "config.yaml", "models_pvc.yaml", "server.yaml"));
}

TEST(Kubernetes, InferencePoolReadsGantrysMetrics) {
  const KubernetesConfig config = LoadKubernetesConfig();
  auto server = LoadManifests(kRoot + "/deploy/kubernetes/server.yaml");
  auto pool_files = LoadManifests(kRoot + "/deploy/kubernetes/inference_pool.yaml");
  const YAML::Node pool = pool_files.at("InferencePool/gantry-llama");
  EXPECT_EQ(pool["apiVersion"].as<std::string>(), "inference.networking.k8s.io/v1");
  // The pool routes to the OpenAI API, which the adapter serves in each pod.
  EXPECT_EQ(pool["spec"]["targetPorts"][0]["number"].as<int>(), PortOf(config.adapter.listen));
  const YAML::Node pod_labels = server.at("Deployment/gantry-server")["spec"]["template"]["metadata"]["labels"];
  for (const auto& label : pool["spec"]["selector"]["matchLabels"]) {
    EXPECT_EQ(pod_labels[label.first.as<std::string>()].as<std::string>(), label.second.as<std::string>());
  }
  const YAML::Node picker_ref = pool["spec"]["endpointPickerRef"];
  const YAML::Node picker_service = pool_files.at("Service/" + picker_ref["name"].as<std::string>());
  const YAML::Node picker = pool_files.at("Deployment/" + picker_ref["name"].as<std::string>());
  bool port_found = false;
  for (const auto& p : picker_service["spec"]["ports"]) {
    port_found |= p["port"].as<int>() == picker_ref["port"]["number"].as<int>();
  }
  EXPECT_TRUE(port_found);
  EXPECT_EQ(ContainerPort(Container(picker, "epp"), "grpc"), picker_ref["port"]["number"].as<int>());

  auto flags = Flags(Container(picker, "epp"));
  EXPECT_EQ(flags["pool-name"], pool["metadata"]["name"].as<std::string>());
  EXPECT_EQ(flags["pool-namespace"], pool["metadata"]["namespace"].as<std::string>());
  // The metrics are gantry-server's, on its metrics port (not the pool's target port).
  EXPECT_EQ(std::stoi(flags["model-server-metrics-port"]), PortOf(config.server.metrics_listen));
  EXPECT_EQ(flags["model-server-metrics-path"], "/metrics");
  EXPECT_EQ(flags["lora-info-metric"], "");
  EXPECT_EQ(flags["cache-info-metric"], "");
  // The plugin configuration file is the mounted ConfigMap's key.
  const std::string config_file = flags["config-file"];
  const std::string key = config_file.substr(config_file.rfind('/') + 1);
  EXPECT_TRUE(pool_files.at("ConfigMap/gantry-llama-epp")["data"][key]) << config_file;

  // Each spec selects one model of the pods' catalogue, which stays loaded
  // (the KV-cache series exists only for a loaded model).
  std::set<std::string> models;
  for (const auto& [flag, spec] : PickerMetrics()) {
    SCOPED_TRACE(flag);
    ASSERT_EQ(spec.labels.size(), 1u);
    ASSERT_TRUE(spec.labels.count("model"));
    models.insert(spec.labels.at("model"));
  }
  ASSERT_EQ(models.size(), 1u) << "one pool, one model";
  bool resident = false;
  for (const auto& m : config.server.models) resident |= m.name == *models.begin() && m.resident;
  EXPECT_TRUE(resident) << *models.begin() << " must be in config.yaml with resident: true";

  // The route sends to the pool.
  const YAML::Node route = pool_files.at("HTTPRoute/gantry-llama");
  const YAML::Node backend = route["spec"]["rules"][0]["backendRefs"][0];
  EXPECT_EQ(backend["kind"].as<std::string>(), "InferencePool");
  EXPECT_EQ(backend["group"].as<std::string>(), "inference.networking.k8s.io");
  EXPECT_EQ(backend["name"].as<std::string>(), pool["metadata"]["name"].as<std::string>());
}

// A compose service's key, following a YAML merge key ("<<: *anchor"), which
// yaml-cpp leaves unresolved.
YAML::Node Key(const YAML::Node& service, const std::string& key) {
  if (service[key]) return service[key];
  if (service["<<"]) return service["<<"][key];
  return YAML::Node();
}

// "${VAR:-default}" -> "default"; anything else unchanged.
std::string Default(const std::string& value) {
  static const std::regex var(R"(\$\{[A-Z_]+:-([^}]*)\})");
  return std::regex_replace(value, var, "$1");
}

// A volume's host side -> its container path.
std::map<std::string, std::string> Volumes(const YAML::Node& service) {
  std::map<std::string, std::string> out;
  for (const auto& v : Key(service, "volumes")) {
    const std::string spec = Default(v.as<std::string>());
    const size_t colon = spec.find(':');
    std::string target = spec.substr(colon + 1);
    target = target.substr(0, target.find(':'));
    out[target] = spec.substr(0, colon);
  }
  return out;
}

// The container ports a service publishes ("host:hostport:containerport").
std::set<int> PublishedPorts(const YAML::Node& service) {
  std::set<int> out;
  for (const auto& p : Key(service, "ports")) out.insert(PortOf(Default(p.as<std::string>())));
  return out;
}

TEST(Compose, ServicesMatchTheirConfigs) {
  const std::string dir = kRoot + "/deploy";
  const YAML::Node compose = YAML::LoadFile(dir + "/compose.yaml");
  const YAML::Node services = compose["services"];
  // Names each server answers to on the compose network.
  std::set<std::string> server_names;
  int server_port = -1, metrics_port = -1;
  double drain = -1;
  for (const char* name : {"gantry-server", "gantry-server-cpu"}) {
    SCOPED_TRACE(name);
    const YAML::Node s = services[name];
    ASSERT_TRUE(s);
    server_names.insert(name);
    if (s["networks"]) {
      for (const auto& alias : s["networks"]["default"]["aliases"]) server_names.insert(alias.as<std::string>());
    }
    auto volumes = Volumes(s);
    ASSERT_TRUE(volumes.count("/etc/gantry/gantry.yaml"));
    ASSERT_TRUE(volumes.count("/models"));
    EXPECT_THAT(Key(s, "volumes")[0].as<std::string>() + Key(s, "volumes")[1].as<std::string>(), HasSubstr("/models:ro"));
    const std::string config_path = dir + "/" + volumes["/etc/gantry/gantry.yaml"];
    auto config = server::ParseConfig(ReadFile(config_path), config_path);
    ASSERT_TRUE(config.ok()) << config.status();
    server_port = PortOf(config->listen);
    metrics_port = PortOf(config->metrics_listen);
    drain = config->drain_timeout_seconds;
    EXPECT_EQ(HostOf(config->listen), "0.0.0.0");
    EXPECT_EQ(HostOf(config->metrics_listen), "0.0.0.0");
    EXPECT_THAT(PublishedPorts(s), Contains(server_port));
    EXPECT_THAT(Key(s, "command").as<std::vector<std::string>>(),
                ElementsAre("gantry-server", "--config", "/etc/gantry/gantry.yaml"));
    // The health check is grpc.health.v1 through gantry-health.
    EXPECT_THAT(s["healthcheck"]["test"].as<std::vector<std::string>>(),
                ElementsAre("CMD", "gantry-health", "--server", "127.0.0.1:" + std::to_string(server_port)));
    EXPECT_EQ(Key(s, "restart").as<std::string>(), "unless-stopped");
    // Docker's SIGKILL comes after the drain and the gRPC shutdown's 10 s.
    const std::string grace = Key(s, "stop_grace_period").as<std::string>();
    ASSERT_EQ(grace.back(), 's');
    EXPECT_GE(std::stod(grace), drain + 10);
    for (const auto& model : config->models) {
      EXPECT_TRUE(model.path.rfind("/opt/gantry/models/", 0) == 0 || model.path.rfind("/models/", 0) == 0)
          << model.path;
    }
  }
  // The GPU reservation, and a CPU profile without one.
  const YAML::Node device = services["gantry-server"]["deploy"]["resources"]["reservations"]["devices"][0];
  EXPECT_EQ(device["driver"].as<std::string>(), "nvidia");
  EXPECT_THAT(device["capabilities"].as<std::vector<std::string>>(), ElementsAre("gpu"));
  EXPECT_GE(std::stoi(Default(device["count"].as<std::string>())), 1);
  EXPECT_THAT(services["gantry-server"]["profiles"].as<std::vector<std::string>>(), ElementsAre("gpu"));
  EXPECT_THAT(services["gantry-server-cpu"]["profiles"].as<std::vector<std::string>>(), ElementsAre("cpu"));
  EXPECT_FALSE(services["gantry-server-cpu"]["deploy"]);
  EXPECT_EQ(Default(services["gantry-server-cpu"]["image"].as<std::string>()), "gantry:cpu");

  // The adapter reaches a server by one of its names.
  const YAML::Node adapter = services["gantry-adapter"];
  const std::string adapter_path = dir + "/" + Volumes(adapter)["/etc/gantry/adapter.yaml"];
  auto adapter_config = adapter::ParseAdapterConfig(ReadFile(adapter_path), adapter_path);
  ASSERT_TRUE(adapter_config.ok()) << adapter_config.status();
  const int http_port = PortOf(adapter_config->listen);
  EXPECT_EQ(HostOf(adapter_config->listen), "0.0.0.0");
  EXPECT_THAT(server_names, Contains(HostOf(adapter_config->upstream)));
  EXPECT_EQ(PortOf(adapter_config->upstream), server_port);
  EXPECT_THAT(PublishedPorts(adapter), Contains(http_port));
  EXPECT_THAT(adapter["healthcheck"]["test"].as<std::vector<std::string>>(),
              Contains("http://127.0.0.1:" + std::to_string(http_port) + "/health"));
  EXPECT_EQ(adapter["restart"].as<std::string>(), "unless-stopped");

  // Prometheus scrapes both, by their compose names.
  const YAML::Node prometheus = services["prometheus"];
  const std::string prometheus_path = dir + "/" + Volumes(prometheus)["/etc/prometheus/prometheus.yml"];
  const YAML::Node scrape = YAML::LoadFile(prometheus_path);
  std::map<std::string, std::string> targets;
  for (const auto& job : scrape["scrape_configs"]) {
    targets[job["job_name"].as<std::string>()] = job["static_configs"][0]["targets"][0].as<std::string>();
  }
  EXPECT_THAT(server_names, Contains(HostOf(targets["gantry-server"])));
  EXPECT_EQ(PortOf(targets["gantry-server"]), metrics_port);
  EXPECT_TRUE(services[HostOf(targets["gantry-adapter"])]) << targets["gantry-adapter"];
  EXPECT_EQ(PortOf(targets["gantry-adapter"]), http_port);
  EXPECT_THAT(PublishedPorts(prometheus), Contains(9090));

  // Grafana: the provisioned datasource is this Prometheus, the dashboards
  // folder is where the provider looks.
  const YAML::Node grafana = services["grafana"];
  auto grafana_volumes = Volumes(grafana);
  EXPECT_EQ(grafana_volumes["/etc/grafana/provisioning"], "./grafana/provisioning");
  const YAML::Node datasources = YAML::LoadFile(dir + "/grafana/provisioning/datasources/prometheus.yml");
  EXPECT_EQ(datasources["datasources"][0]["url"].as<std::string>(), "http://prometheus:9090");
  const YAML::Node providers = YAML::LoadFile(dir + "/grafana/provisioning/dashboards/gantry.yml");
  const std::string dashboards = providers["providers"][0]["options"]["path"].as<std::string>();
  EXPECT_EQ(grafana_volumes[dashboards], "./grafana/dashboards");
}

// The image builds with what tools/setup.sh installs: every -dev package and
// compiler there but the test-only ones is in the Dockerfile's build stages.
TEST(Docker, BuildPackagesFollowSetup) {
  const std::string setup = ReadFile(kRoot + "/tools/setup.sh");
  const size_t begin = setup.find("PACKAGES=(");
  const size_t end = setup.find("\n)", begin);
  ASSERT_NE(begin, std::string::npos);
  ASSERT_NE(end, std::string::npos);
  std::stringstream lines(setup.substr(begin, end - begin));
  // An HTTP client (cpp-httplib) and GoogleTest are for the tests only.
  const std::set<std::string> test_only = {"libgtest-dev", "libgmock-dev", "libbenchmark-dev", "libcpp-httplib-dev"};
  std::set<std::string> installed;
  std::stringstream dockerfile(ReadFile(kRoot + "/deploy/docker/Dockerfile"));
  for (std::string word; dockerfile >> word;) installed.insert(word);
  int checked = 0;
  for (std::string line; std::getline(lines, line);) {
    std::stringstream words(line.substr(0, line.find('#')));
    for (std::string package; words >> package;) {
      const bool build = (package.size() > 4 && package.compare(package.size() - 4, 4, "-dev") == 0) ||
                         package.rfind("protobuf-compiler", 0) == 0;
      if (!build || test_only.count(package)) continue;
      ++checked;
      EXPECT_TRUE(installed.count(package)) << package << " (tools/setup.sh) is missing from deploy/docker/Dockerfile";
    }
  }
  EXPECT_GT(checked, 10);
}

TEST(Docker, ImageConfigsParse) {
  const std::string dockerfile = ReadFile(kRoot + "/deploy/docker/Dockerfile");
  auto config = server::ParseConfig(ReadFile(kRoot + "/deploy/docker/gantry.yaml"), "/etc/gantry/gantry.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  // The built-in demos are where the image puts them.
  for (const std::string name : {"demo", "demo-embed", "demo-rerank"}) {
    const std::string path = "/opt/gantry/models/" + name;
    EXPECT_THAT(dockerfile, HasSubstr("COPY models/" + name + "/ " + path + "/"));
    bool listed = false;
    for (const auto& m : config->models) listed |= m.name == name && m.path == path;
    EXPECT_TRUE(listed) << name;
  }
  // What the image exposes is what the configs listen on.
  auto adapter = adapter::ParseAdapterConfig(ReadFile(kRoot + "/deploy/docker/adapter.yaml"), "adapter.yaml");
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  EXPECT_THAT(dockerfile, HasSubstr("EXPOSE " + std::to_string(PortOf(config->listen)) + " " +
                                    std::to_string(PortOf(config->metrics_listen)) + " " +
                                    std::to_string(PortOf(adapter->listen))));
}

// The real programs expose what the files rely on: grpc.health.v1 (the
// kubelet's probe, gantry-health), the adapter's /health and /metrics, and
// every metric the endpoint picker reads, as a gauge per model.
TEST(Live, ServerAndAdapterExposeWhatTheDeploymentReads) {
  testing::ServerProcess server("deploy_server", "models:\n  - name: demo\n    path: " + kRoot +
                                                     "/models/demo\n    device: cpu\n    resident: true\n");
  ASSERT_FALSE(server.address().empty()) << server.Log();
  ASSERT_FALSE(server.metrics_url().empty()) << server.Log();

  auto stub = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  grpc::health::v1::HealthCheckRequest request;  // service "": what the probes ask
  grpc::health::v1::HealthCheckResponse response;
  ASSERT_TRUE(stub->Check(&context, request, &response).ok());
  EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);

  const std::string health = std::string(GANTRY_HEALTH_BINARY) + " --server " + server.address();
  EXPECT_EQ(std::system((health + " > /dev/null").c_str()), 0);
  EXPECT_EQ(std::system((health + " demo > /dev/null").c_str()), 0);
  EXPECT_NE(std::system((health + " no-such-model > /dev/null 2>&1").c_str()), 0);

  auto [host, port] = testing::HostPort(server.metrics_url());
  httplib::Client metrics(host, port);
  auto scrape = metrics.Get("/metrics");
  ASSERT_TRUE(scrape && scrape->status == 200);
  for (const auto& [flag, spec] : PickerMetrics()) {
    SCOPED_TRACE(flag);
    EXPECT_NE(scrape->body.find("# TYPE " + spec.name + " gauge\n"), std::string::npos)
        << spec.name << ": the picker reads a gauge of this name";
    EXPECT_TRUE(testing::ScrapeValue(metrics, spec.name, "model=\"demo\"").has_value())
        << spec.name << " per model";
  }

  testing::ServerProcess adapter("deploy_adapter", GANTRY_ADAPTER_BINARY,
                                 {"--listen", "127.0.0.1:0", "--upstream", server.address()});
  ASSERT_FALSE(adapter.address().empty()) << adapter.Log();
  httplib::Client http(HostOf(adapter.address()), PortOf(adapter.address()));
  auto ready = http.Get("/health");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200) << ready->body;
  auto adapter_metrics = http.Get("/metrics");
  ASSERT_TRUE(adapter_metrics);
  EXPECT_EQ(adapter_metrics->status, 200);

  adapter.Terminate(std::chrono::seconds(10));
  EXPECT_EQ(server.Terminate(std::chrono::seconds(40)), 0) << "SIGTERM drains and exits 0";
}

}  // namespace
}  // namespace gantry
