// Integration: gantry-server and gantry-adapter on loopback, driven by the
// official OpenAI SDK from npm (openai_sdk_test.mjs, run with node --test):
// chat and completions on the demo model, embeddings on demo-embed, rerank
// on demo-rerank; demo-lazy (not resident) loads on its first requests.
#include <sys/wait.h>

#include <cstdio>
#include <fstream>

#include <memory>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/http/raw_client.h"
#include "tests/server/server_process.h"

namespace gantry {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using namespace std::chrono_literals;
using gantry::testing::RawClient;
using Clock = std::chrono::steady_clock;

double Since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// An adapter (upstream unreachable: these are HTTP-layer cases) with `yaml`.
std::unique_ptr<testing::ServerProcess> StartAdapter(const std::string& name, const std::string& yaml) {
  const std::string path = ::testing::TempDir() + "/" + name + ".yaml";
  std::ofstream(path) << yaml;
  return std::make_unique<testing::ServerProcess>(
      name, GANTRY_ADAPTER_BINARY, std::vector<std::string>{"--config", path, "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1"});
}

// The OpenAI error object of a reply: {"error":{"message","type","param","code"}}.
void ExpectOpenAiError(const std::string& reply, const std::string& status, const std::string& code,
                       const std::string& names) {
  EXPECT_THAT(reply, StartsWith("HTTP/1.1 " + status)) << reply;
  EXPECT_THAT(reply, HasSubstr("Content-Type: application/json")) << reply;
  EXPECT_THAT(reply, HasSubstr("{\"error\":{\"code\":\"" + code + "\",\"message\":\"")) << reply;
  EXPECT_THAT(reply, HasSubstr("\"param\":null,\"type\":\"")) << reply;
  EXPECT_THAT(reply, HasSubstr(names)) << reply;
}

std::string RunCommand(const std::string& command, int* exit_code) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  std::string out;
  char buffer[1024];
  while (pipe && std::fgets(buffer, sizeof(buffer), pipe)) out += buffer;
  const int status = pipe ? pclose(pipe) : -1;
  *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

TEST(AdapterTest, OpenAiSdkAgainstTheRealServices) {
  const std::string root = GANTRY_SOURCE_DIR;
  ASSERT_EQ(std::system(("test -d " + root + "/tests/adapter/node_modules/openai").c_str()), 0)
      << "run tools/setup.sh (npm ci in tests/adapter) first";
  // The demo's embedding and rerank models: tools/setup.sh writes them
  // (tools/make_demo_encoders.py) where the checkout lacks them.
  for (const char* model : {"demo-embed", "demo-rerank"}) {
    ASSERT_EQ(std::system(("test -f " + root + "/models/" + model + "/model.safetensors").c_str()), 0)
        << "models/" << model << " is missing: run tools/setup.sh (or python3 tools/make_demo_encoders.py)";
  }
  testing::ServerProcess server("adapter_upstream", "defaults:\n  kv_cache_mib: 64\nmodels:\n  - name: demo\n    path: " +
                                                        root + "/models/demo\n    resident: true\n    max_context: 2048\n"
                                                        "    tool_parser: hermes\n    reasoning_parser: qwen3\n"
                                                        "  - name: demo-embed\n    path: " + root + "/models/demo-embed\n"
                                                        "    resident: true\n"
                                                        "  - name: demo-rerank\n    path: " + root + "/models/demo-rerank\n"
                                                        "    resident: true\n"
                                                        "  - name: demo-lazy\n    path: " + root + "/models/demo\n"
                                                        "    max_context: 2048\n"
                                                        "  - name: broken\n    path: " + root + "/models/does-not-exist\n");
  ASSERT_FALSE(server.address().empty()) << server.Log();
  testing::ServerProcess adapter("adapter", GANTRY_ADAPTER_BINARY,
                                 {"--listen", "127.0.0.1:0", "--upstream", server.address(), "--api_keys",
                                  "sk-test-1,sk-test-2"});
  ASSERT_FALSE(adapter.address().empty()) << adapter.Log();
  int exit_code = 0;
  const std::string output = RunCommand("cd " + root + "/tests/adapter && GANTRY_ADAPTER_URL=http://" +
                                            adapter.address() + "/v1 GANTRY_API_KEY=sk-test-2 GANTRY_METRICS_URL=" +
                                            server.metrics_url() + " node --test openai_sdk_test.mjs",
                                        &exit_code);
  EXPECT_EQ(exit_code, 0) << output << "\nadapter log:\n" << adapter.Log();
  EXPECT_THAT(output, HasSubstr("# fail 0"));
  std::printf("%s\n", output.substr(output.rfind("# tests")).c_str());
  EXPECT_EQ(adapter.Terminate(10s), 0) << adapter.Log();
  EXPECT_EQ(server.Terminate(15s), 0);
}

TEST(AdapterTest, HealthFollowsTheUpstream) {
  // No server at the upstream address: /health says so with 503; the adapter runs on.
  testing::ServerProcess adapter("adapter_health", GANTRY_ADAPTER_BINARY,
                                 {"--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1"});
  ASSERT_FALSE(adapter.address().empty()) << adapter.Log();
  int exit_code = 0;
  std::string out = RunCommand("curl -s -w ' %{http_code}' http://" + adapter.address() + "/health", &exit_code);
  EXPECT_THAT(out, HasSubstr("\"upstream_status\":\"UNREACHABLE\""));
  EXPECT_THAT(out, HasSubstr(" 503"));
  EXPECT_THAT(out, ::testing::Not(HasSubstr("127.0.0.1"))) << "issue 13: /health showed the upstream address";
  out = RunCommand("curl -s -w ' %{http_code}' http://" + adapter.address() +
                       "/v1/chat/completions -d '{\"model\":\"demo\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}'",
                   &exit_code);
  EXPECT_THAT(out, HasSubstr(" 503"));
  EXPECT_THAT(out, HasSubstr("\"type\":\"server_error\""));
  // A short message and a request id; the transport's details go to the log.
  EXPECT_THAT(out, HasSubstr("request id req-"));
  EXPECT_THAT(out, ::testing::Not(HasSubstr("127.0.0.1")));
  // The adapter's own metrics count both, and promtool accepts them.
  const std::string scrape = ::testing::TempDir() + "/adapter_scrape.txt";
  RunCommand("curl -s -o " + scrape + " http://" + adapter.address() + "/metrics", &exit_code);
  out = RunCommand("cat " + scrape, &exit_code);
  EXPECT_THAT(out, HasSubstr("gantry_adapter_requests_total{route=\"/health\",status=\"503\"} 1"));
  EXPECT_THAT(out, HasSubstr("gantry_adapter_requests_total{route=\"/v1/chat/completions\",status=\"503\"} 1"));
  EXPECT_THAT(out, HasSubstr("gantry_adapter_request_duration_seconds_count{route=\"/v1/chat/completions\"} 1"));
  RunCommand("promtool check metrics < " + scrape, &exit_code);
  EXPECT_EQ(exit_code, 0);
  EXPECT_EQ(adapter.Terminate(10s), 0) << adapter.Log();
}

// Issue 13's starvation cases against the real binary; each hung or was
// mishandled on the cpp-httplib adapter (a 256-thread pool, 60 s per read).
TEST(AdapterTest, HostileHttpClientsGetPromptAnswersAndStarveNoOne) {
  auto adapter = StartAdapter("adapter_hostile",
                              "header_timeout_seconds: 1\nbody_timeout_seconds: 1\nmax_body_bytes: 65536\n"
                              "max_connections_per_client: 1000\n");
  ASSERT_FALSE(adapter->address().empty()) << adapter->Log();
  const std::string address = adapter->address();

  // 260 clients each trickling a partial header: a normal client is served
  // at once, and the slow ones get 408 at the header deadline.
  std::vector<std::unique_ptr<RawClient>> slow;
  for (int i = 0; i < 260; ++i) {
    slow.push_back(std::make_unique<RawClient>(address));
    ASSERT_TRUE(slow.back()->Send("GET /health HTTP/1.1\r\nX-Slow: ")) << i;
  }
  auto start = Clock::now();
  {
    RawClient normal(address);
    normal.Send("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_THAT(normal.ReadReplies(1, 5s), StartsWith("HTTP/1.1 200"));
    EXPECT_LT(Since(start), 1.0);
  }
  slow.back()->ReadToClose(5s);
  ExpectOpenAiError(slow.back()->received(), "408", "header_timeout", "header_timeout_seconds");
  slow.clear();

  // A chunked body trickled a byte at a time is cut at the body deadline.
  {
    RawClient trickle(address);
    trickle.Send("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    EXPECT_LT(trickle.TrickleUntilAnswered("1\r\n{\r\n", 200ms, 5s), 2.0);
    trickle.ReadToClose(4s);
    ExpectOpenAiError(trickle.received(), "408", "body_timeout", "body_timeout_seconds");
  }

  // Bad lengths: answered at once.
  for (const auto& [length, status, code] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"-1", "400", "bad_content_length"},
           {"1e20", "400", "bad_content_length"},
           {"100000000000", "413", "request_too_large"}}) {
    RawClient client(address);
    start = Clock::now();
    client.Send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + "\r\n\r\n");
    client.ReadToClose(3s);
    ExpectOpenAiError(client.received(), status, code, status == "413" ? "max_body_bytes" : "Content-Length");
    EXPECT_LT(Since(start), 0.5) << length;
  }
  {
    RawClient client(address);
    client.Send("POST /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n");
    client.ReadToClose(3s);
    ExpectOpenAiError(client.received(), "411", "length_required", "Content-Length");
  }
  // Over max_body_bytes: 413 naming the limit, before the body is sent.
  {
    RawClient client(address);
    client.Send("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Content-Length: 70000\r\n\r\n{\"model\":");
    client.ReadToClose(3s);
    ExpectOpenAiError(client.received(), "413", "request_too_large", "65536 bytes (max_body_bytes)");
  }
  // A JSON body over 8 KB sent form-encoded (curl -d's default) reaches the
  // gateway (here: the upstream is down, so 503), not a 413.
  {
    int exit_code = 0;
    const std::string body = "{\"model\":\"demo\",\"prompt\":\"" + std::string(20000, 'a') + "\"}";
    const std::string out = RunCommand("curl -s -w ' %{http_code}' http://" + address + "/v1/completions -d '" + body + "'",
                                       &exit_code);
    EXPECT_THAT(out, HasSubstr(" 503"));
    EXPECT_THAT(out, HasSubstr("\"type\":\"server_error\""));
  }
  // Three pipelined requests: three replies, in order.
  {
    RawClient client(address);
    client.Send("GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                "GET /v1/nope HTTP/1.1\r\nHost: x\r\n\r\n");
    const std::string& text = client.ReadReplies(3, 5s);
    ASSERT_EQ(RawClient::CompleteReplies(text), 3) << text;
    const size_t health = text.find("HTTP/1.1 503"), metrics = text.find("HTTP/1.1 200"),
                 nope = text.find("HTTP/1.1 404");
    ASSERT_NE(nope, std::string::npos) << text;
    EXPECT_LT(health, metrics);
    EXPECT_LT(metrics, nope);
    EXPECT_THAT(text, HasSubstr("no route GET /v1/nope"));
  }
  // The adapter's metrics count the refusals by status.
  int exit_code = 0;
  const std::string scrape = RunCommand("curl -s http://" + address + "/metrics", &exit_code);
  EXPECT_THAT(scrape, HasSubstr("gantry_adapter_requests_total{route=\"/v1/completions\",status=\"411\"} 1"));
  EXPECT_THAT(scrape, HasSubstr("gantry_adapter_requests_total{route=\"/v1/chat/completions\",status=\"413\"} 1"));
  EXPECT_EQ(adapter->Terminate(10s), 0) << adapter->Log();
}

TEST(AdapterTest, ConnectionsPerClientAreCapped) {
  auto adapter = StartAdapter("adapter_per_client", "max_connections_per_client: 2\n");
  ASSERT_FALSE(adapter->address().empty()) << adapter->Log();
  RawClient one(adapter->address()), two(adapter->address());
  for (RawClient* client : {&one, &two}) {
    client->Send("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_THAT(client->ReadReplies(1, 3s), StartsWith("HTTP/1.1 200"));
  }
  RawClient three(adapter->address());
  three.Send("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  three.ReadToClose(3s);
  ExpectOpenAiError(three.received(), "429", "too_many_connections_from_client", "max_connections_per_client");
  EXPECT_THAT(three.received(), HasSubstr("\"type\":\"rate_limit_exceeded\""));
  EXPECT_EQ(adapter->Terminate(10s), 0) << adapter->Log();
}

TEST(AdapterTest, LimitsInTheConfigAreChecked) {
  for (const auto& [yaml, message] : std::vector<std::pair<std::string, std::string>>{
           {"max_body_bytes: 999999999999\n", ":1: 'max_body_bytes' must be between 1 and 33554432"},
           {"header_timeout_seconds: 0\n", ":1: 'header_timeout_seconds' must be > 0"},
           {"body_timeout_seconds: .nan\n", ":1: 'body_timeout_seconds' must be > 0"},
           {"max_header_bytes: 10\n", ":1: 'max_header_bytes' must be between 1024 and 1048576"},
           {"max_connections_per_client: 0\n", ":1: 'max_connections_per_client' must be >= 1"}}) {
    const std::string path = ::testing::TempDir() + "/adapter_limits.yaml";
    std::ofstream(path) << yaml;
    int exit_code = 0;
    const std::string out = RunCommand(std::string(GANTRY_ADAPTER_BINARY) + " --config " + path, &exit_code);
    EXPECT_EQ(exit_code, 1) << yaml;
    EXPECT_THAT(out, HasSubstr("adapter_limits.yaml" + message)) << yaml;
  }
}

TEST(AdapterTest, BadConfigStopsStartUpNamingTheLine) {
  const std::string path = ::testing::TempDir() + "/bad_adapter.yaml";
  std::ofstream(path) << "listen: 127.0.0.1:0\nupstrem: x\n";
  int exit_code = 0;
  std::string out = RunCommand(std::string(GANTRY_ADAPTER_BINARY) + " --config " + path, &exit_code);
  EXPECT_EQ(exit_code, 1);
  EXPECT_THAT(out, HasSubstr("bad_adapter.yaml:2: unknown key 'upstrem'"));
}

TEST(AdapterTest, PortInUseIsAStartUpError) {
  testing::ServerProcess first("adapter_first", GANTRY_ADAPTER_BINARY,
                               {"--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1"});
  ASSERT_FALSE(first.address().empty()) << first.Log();
  int exit_code = 0;
  const std::string out = RunCommand(std::string(GANTRY_ADAPTER_BINARY) + " --listen " + first.address() +
                                         " --upstream 127.0.0.1:1",
                                     &exit_code);
  EXPECT_EQ(exit_code, 1);
  EXPECT_THAT(out, HasSubstr("cannot listen on " + first.address() + ": address in use"));
  EXPECT_EQ(first.Terminate(10s), 0) << first.Log();
}

}  // namespace
}  // namespace gantry
