#!/usr/bin/env bash
# test.sh runs the whole test suite with the race detector, after making sure that what
# it needs is there: redis-server (each test starts its own), a C compiler (-race
# needs cgo), Chromium (the browser tests) and node with npm (the Segment
# Node SDK test). scripts/deps.sh installs
# them when run as root on Debian or Ubuntu, or stops at once with the command to run.
#
#   scripts/test.sh                      # go test -race ./...
#   scripts/test.sh -short -count=1      # arguments go to go test, before ./...
#
# With those installed, plain `go test ./...` (or `go test -race ./...`) is the same.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v go >/dev/null || { echo "test.sh: go not found on PATH (https://go.dev/doc/install)" >&2; exit 1; }
scripts/deps.sh redis-server cc chromium node
exec go test -race "$@" ./...
