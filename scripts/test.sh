#!/usr/bin/env bash
# The project's test command (the README's "run the tests"): every package's tests, with the race detector.
# Tests keep what they want a person to look at (TestUIBrowser's screenshots of the live page) in their
# artifact folders under test-output/_artifacts/ (go test -artifacts); each test logs its folder.
# Long campaigns (many simulator seeds, long fuzzing) have their own commands; see README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p test-output
go test -race -timeout 20m -artifacts -outputdir "$PWD/test-output" "$@" ./...
