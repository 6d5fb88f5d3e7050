// Starts the real gantry-server (or gantry-adapter) binary on a free loopback
// port, as a client would meet it, and stops it with SIGTERM.
#ifndef GANTRY_TESTS_SERVER_SERVER_PROCESS_H_
#define GANTRY_TESTS_SERVER_SERVER_PROCESS_H_

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace gantry::testing {

class ServerProcess {
 public:
  // Writes `config_yaml` to a file and starts gantry-server on 127.0.0.1:0
  // (metrics too). Waits for its "listening on" line (or its exit).
  ServerProcess(const std::string& name, const std::string& config_yaml) {
    config_path_ = ::testing::TempDir() + "/" + name + ".yaml";
    std::ofstream(config_path_) << config_yaml;
    Start(name, GANTRY_SERVER_BINARY,
          {"--config", config_path_, "--listen", "127.0.0.1:0", "--metrics_listen", "127.0.0.1:0"});
  }
  // Any binary that prints "... listening on ADDRESS" on stdout when ready
  // (gantry-adapter).
  ServerProcess(const std::string& name, const std::string& binary, const std::vector<std::string>& args) {
    Start(name, binary, args);
  }

  ~ServerProcess() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (stdout_) std::fclose(stdout_);
  }

  const std::string& address() const { return address_; }
  // http://127.0.0.1:PORT/metrics
  const std::string& metrics_url() const { return metrics_url_; }
  pid_t pid() const { return pid_; }
  std::string Log() const {
    std::ifstream in(log_path_);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }

  // SIGTERM, then waits up to `timeout`; returns the exit code (-1 if it did
  // not exit, -2 if killed by a signal).
  int Terminate(std::chrono::milliseconds timeout) {
    kill(pid_, SIGTERM);
    return WaitExit(timeout);
  }

  int WaitExit(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    int status = 0;
    while (std::chrono::steady_clock::now() < deadline) {
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        exited_ = true;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -2;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return -1;
  }

 private:
  void Start(const std::string& name, const std::string& binary, const std::vector<std::string>& args) {
    log_path_ = ::testing::TempDir() + "/" + name + ".log";
    std::vector<char*> argv = {const_cast<char*>(binary.c_str())};
    for (const auto& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    int out[2];
    if (pipe(out) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      FILE* log = std::fopen(log_path_.c_str(), "w");
      if (log) dup2(fileno(log), STDERR_FILENO);
      close(out[0]);
      execv(binary.c_str(), argv.data());
      _exit(127);
    }
    close(out[1]);
    stdout_ = fdopen(out[0], "r");
    char line[512];
    while (stdout_ && std::fgets(line, sizeof(line), stdout_)) {
      std::string text(line);
      while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
      if (size_t m = text.find("metrics on "); m != std::string::npos) {
        metrics_url_ = text.substr(m + 11);
        continue;
      }
      if (size_t at = text.find("listening on "); at != std::string::npos) {
        address_ = text.substr(at + 13);
        break;
      }
    }
  }

  std::string config_path_, log_path_, address_, metrics_url_;
  pid_t pid_ = -1;
  bool exited_ = false;
  FILE* stdout_ = nullptr;
};

}  // namespace gantry::testing

#endif  // GANTRY_TESTS_SERVER_SERVER_PROCESS_H_
