#!/usr/bin/env bash
# The README's quick start on Debian 12: installs what is missing, builds, then
#   demo - runs the main demo;
#   test - runs every test through ctest.
# Usage: bash cmake/quickstart.sh demo|test
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-}
case "$mode" in
  demo | test) ;;
  *) echo "usage: bash cmake/quickstart.sh demo|test" >&2; exit 2 ;;
esac

# libcpp-httplib-dev and nlohmann-json3-dev are for cospec-server (docs/server.md), never the library.
packages=(cmake ninja-build g++ libxsimd-dev libeigen3-dev catch2 libbenchmark-dev libcpp-httplib-dev nlohmann-json3-dev)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  as_root=()
  [ "$(id -u)" -eq 0 ] || as_root=(sudo)
  echo "Installing: ${missing[*]}"
  "${as_root[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y "${missing[@]}"
fi

cmake --preset release
if [ "$mode" = demo ]; then
  cmake --build --preset release --target cospec-demo
  ./build/release/examples/cospec-demo
else
  # The official openai npm client tests cospec-server (tests/server/openai_client.cjs), pinned;
  # without Node.js, or without the registry, that one test says why and is skipped.
  if command -v npm > /dev/null && [ ! -d build/npm/node_modules/openai ]; then
    npm install --no-audit --no-fund --prefix build/npm openai@4.77.0 ||
      echo "quickstart: npm could not install openai; the server's client test will be skipped"
  fi
  cmake --build --preset release
  ctest --preset release
fi
