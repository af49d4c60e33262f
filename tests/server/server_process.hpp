// A cospec-server started by a test: spawned on a free loopback port (--port 0, the port read
// from the line it prints), stopped with SIGTERM, its exit status checked.
#pragma once

#include <fcntl.h>     // fcntl
#include <signal.h>    // kill, SIGTERM, SIGKILL
#include <spawn.h>     // posix_spawn
#include <sys/wait.h>  // waitpid
#include <unistd.h>    // pipe, read, close

#include <chrono>     // std::chrono
#include <cstdio>     // std::FILE
#include <fstream>    // std::ifstream
#include <stdexcept>  // std::runtime_error
#include <string>     // std::string, std::stoi
#include <thread>     // std::this_thread
#include <vector>     // std::vector

extern char** environ;

namespace cospec::testing {

class server_process {
 public:
  /// Starts `binary` with `arguments` (plus --port 0) and waits until it listens.
  server_process(const std::string& binary, std::vector<std::string> arguments) {
    arguments.insert(arguments.begin(), binary);
    arguments.push_back("--port");
    arguments.push_back("0");
    int out[2];
    if (pipe(out) != 0) throw std::runtime_error("pipe failed");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    std::vector<char*> argv;
    for (auto& a : arguments) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int failed = posix_spawn(&pid_, binary.c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    close(out[1]);
    if (failed != 0) {
      close(out[0]);
      throw std::runtime_error("cannot start " + binary);
    }
    // The first line says where it listens: "... listening on http://127.0.0.1:PORT".
    std::string line;
    char c = 0;
    while (read(out[0], &c, 1) == 1) {
      if (c == '\n') {
        if (line.find("listening on") != std::string::npos) break;
        output_ += line + "\n";
        line.clear();
        continue;
      }
      line += c;
    }
    output_fd_ = out[0];
    const std::size_t colon = line.rfind(':');
    if (line.find("listening on") == std::string::npos || colon == std::string::npos)
      throw std::runtime_error("cospec-server did not start: " + output_ + line);
    port_ = std::stoi(line.substr(colon + 1));
  }

  ~server_process() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      int status = 0;
      waitpid(pid_, &status, 0);
    }
    if (output_fd_ >= 0) close(output_fd_);
  }

  server_process(const server_process&) = delete;
  server_process& operator=(const server_process&) = delete;

  [[nodiscard]] int port() const noexcept { return port_; }
  [[nodiscard]] int pid() const noexcept { return pid_; }

  /// Sends SIGTERM and returns the exit status (-1 if it did not exit normally in time).
  int terminate(std::chrono::seconds patience = std::chrono::seconds(60)) {
    kill(pid_, SIGTERM);
    const auto until = std::chrono::steady_clock::now() + patience;
    while (std::chrono::steady_clock::now() < until) {
      int status = 0;
      const pid_t done = waitpid(pid_, &status, WNOHANG);
      if (done == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return -1;
  }

  /// The server's resident memory in kB (VmRSS).
  [[nodiscard]] long resident_kb() const {
    std::ifstream status("/proc/" + std::to_string(pid_) + "/status");
    std::string key;
    while (status >> key) {
      if (key == "VmRSS:") {
        long kb = 0;
        status >> kb;
        return kb;
      }
      std::string rest;
      std::getline(status, rest);
    }
    return -1;
  }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  int output_fd_ = -1;
  std::string output_;
};

}  // namespace cospec::testing
