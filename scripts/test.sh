#!/usr/bin/env bash
# The project's test command (the README's "run the tests"): every package's tests, with the race detector.
# Tests keep what they want a person to look at (TestUIBrowser's screenshots of the live page) in their
# artifact folders under test-output/_artifacts/ (go test -artifacts); each test logs its folder.
# Long campaigns (many simulator seeds, long fuzzing) have their own commands; see README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p test-output
go test -race -timeout 20m -artifacts -outputdir "$PWD/test-output" "$@" ./...
# The race detector slows the simulator about tenfold, so under -race pbft/sim runs only 150 seeds
# (budget_race.go). Its CI budget, 1000 seeds at n=4 and 7 with every fault (budget.go), the one the mutation
# checks in pbft/sim/MUTATIONS.md are measured against, runs here, without -race.
go test -count=1 -timeout 20m "$@" ./pbft/sim/
