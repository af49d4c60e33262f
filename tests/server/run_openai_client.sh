#!/usr/bin/env bash
# The official `openai` npm client against cospec-server (docs/server.md, "Tests"): starts the
# server in demo mode on a free port, runs tests/server/openai_client.cjs, stops the server.
# Exit 77 (ctest: skipped) with the reason when Node.js or the package is missing.
# Usage: run_openai_client.sh <cospec-server binary> <folder where npm installed openai>
set -euo pipefail
server=$1
npm_dir=$2
here=$(cd "$(dirname "$0")" && pwd)
if ! command -v node > /dev/null; then
  echo "skipped: Node.js is not installed"
  exit 77
fi
if [ ! -d "$npm_dir/node_modules/openai" ]; then
  echo "skipped: the openai npm package is not in $npm_dir (bash cmake/quickstart.sh test installs it with npm)"
  exit 77
fi
log=$(mktemp)
"$server" --demo --quick --threads 1 --port 0 > "$log" 2>&1 &
pid=$!
trap 'kill $pid 2> /dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 600); do
  grep -q "listening on" "$log" && break
  kill -0 $pid 2> /dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done
port=$(grep -o "listening on http://[0-9.]*:[0-9]*" "$log" | sed 's/.*://')
NODE_PATH="$npm_dir/node_modules" node "$here/openai_client.cjs" "http://127.0.0.1:$port/v1"
kill -TERM $pid
wait $pid
