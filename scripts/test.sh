#!/usr/bin/env bash
# The project's test command (the README's "run the tests"): every package's tests, with the race detector.
# Long campaigns (many simulator seeds, long fuzzing) have their own commands; see README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
go test -race -timeout 20m ./...
