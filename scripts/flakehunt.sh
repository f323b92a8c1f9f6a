#!/usr/bin/env bash
# flakehunt: run the test suite (or chosen packages) many times to find tests that fail only sometimes.
#
# Each round is one `go test -count=1` over the packages (packages run in parallel, as in CI), once without and
# once with the race detector (-mode), optionally beside a CPU hog that keeps one core busy (-hog), which is
# what a loaded CI machine looks like. Every failure is printed with its package, test name and first lines,
# and the full output of every round is kept in the log folder. A summary counts failures per test.
#
#   scripts/flakehunt.sh                                  # 10 rounds of ./..., both modes, no hog
#   scripts/flakehunt.sh -n 10 -hog ./...                 # what the issue asks: 10 rounds with one core taken
#   scripts/flakehunt.sh -n 50 -mode norace -run 'TestCatchUp' ./node/
#
# Exit status: 0 when every round passed, 1 when any failed, 2 on bad usage.
set -uo pipefail

rounds=10
mode=both
hog=0
run=""
timeout=20m
short=""
logdir=""
usage() {
	cat <<'EOF'
usage: scripts/flakehunt.sh [options] [PACKAGES...]   (default packages: ./...)

  -n ROUNDS      rounds per mode (default 10)
  -mode MODE     norace, race or both (default both)
  -hog [CORES]   keep CORES cores busy (default 1) with a busy loop while the tests run
  -run REGEX     only tests matching REGEX (go test -run)
  -short         pass -short (skips the end-to-end tests that build the binary)
  -timeout D     go test -timeout per round (default 20m)
  -logs DIR      keep each round's output in DIR (default: a new folder under ${TMPDIR:-/tmp})
EOF
}
pkgs=()
while [ $# -gt 0 ]; do
	case "$1" in
	-n) rounds="$2"; shift 2 ;;
	-mode) mode="$2"; shift 2 ;;
	-hog)
		if [[ "${2:-}" =~ ^[0-9]+$ ]]; then hog="$2"; shift 2; else hog=1; shift; fi ;;
	-run) run="$2"; shift 2 ;;
	-short) short="-short"; shift ;;
	-timeout) timeout="$2"; shift 2 ;;
	-logs) logdir="$2"; shift 2 ;;
	-h | -help | --help) usage; exit 0 ;;
	-*) echo "flakehunt: unknown option $1" >&2; usage >&2; exit 2 ;;
	*) pkgs+=("$1"); shift ;;
	esac
done
[ ${#pkgs[@]} -gt 0 ] || pkgs=(./...)
case "$mode" in
norace) modes=(norace) ;;
race) modes=(race) ;;
both) modes=(norace race) ;;
*) echo "flakehunt: -mode must be norace, race or both" >&2; exit 2 ;;
esac
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "flakehunt: -n wants a positive number" >&2; exit 2; }

cd "$(dirname "$0")/.."
[ -n "$logdir" ] || logdir="$(mktemp -d "${TMPDIR:-/tmp}/flakehunt.XXXXXX")"
mkdir -p "$logdir"

hogs=()
stop_hogs() {
	for p in "${hogs[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${hogs[@]}"; do wait "$p" 2>/dev/null; done
	hogs=()
}
trap 'stop_hogs' EXIT
trap 'stop_hogs; exit 130' INT TERM
for ((i = 0; i < hog; i++)); do
	(while :; do :; done) &
	hogs+=($!)
done

echo "flakehunt: ${rounds} round(s) x ${modes[*]} of ${pkgs[*]}${run:+ -run $run}${short:+ -short}, hog ${hog} core(s); logs in $logdir"

# failures prints, for one round's output, each failed test (or failed package without a failed test: a
# build error, a panic, a timeout) with its first lines, and writes "PACKAGE TEST" lines to the file $1.
failures() {
	awk -v names="$1" '
	function flush(pkg,   i, any) {
		any = 0
		for (i = 1; i <= nbuf; i++) {
			if (buf[i] ~ /^[ \t]*--- FAIL: /) {
				name = buf[i]; sub(/^[ \t]*--- FAIL: /, "", name); sub(/ \(.*$/, "", name)
				print pkg " " name > names
				print "  FAIL " pkg " " name
				for (j = i + 1; j <= nbuf && j <= i + 8 && buf[j] !~ /^[ \t]*--- (FAIL|PASS|SKIP): / && buf[j] != "FAIL"; j++) print "  | " buf[j]
				any = 1
			}
		}
		if (!any) {
			print pkg " (package)" > names
			print "  FAIL " pkg " (no failed test named: build error, panic or timeout)"
			for (i = 1; i <= nbuf && i <= 12; i++) if (buf[i] != "FAIL") print "  | " buf[i]
		}
	}
	/^(ok|FAIL|---)[ \t]/ && $1 == "ok" { nbuf = 0; next }
	/^FAIL\t/ { flush($2); nbuf = 0; next }
	/^\?[ \t]/ { nbuf = 0; next }
	{ buf[++nbuf] = $0 }
	'
}

declare -A count
total=0
failed=0
start=$(date +%s)
for ((r = 1; r <= rounds; r++)); do
	for m in "${modes[@]}"; do
		flags=(-count=1 -timeout "$timeout")
		[ "$m" = race ] && flags+=(-race)
		[ -n "$run" ] && flags+=(-run "$run")
		[ -n "$short" ] && flags+=("$short")
		log="$logdir/round-$r-$m.log"
		t0=$(date +%s)
		go test "${flags[@]}" "${pkgs[@]}" >"$log" 2>&1
		rc=$?
		total=$((total + 1))
		if [ $rc -eq 0 ]; then
			echo "round $r $m: ok ($(($(date +%s) - t0)) s)"
			continue
		fi
		failed=$((failed + 1))
		echo "round $r $m: FAILED ($(($(date +%s) - t0)) s, $log)"
		: >"$log.failed"
		failures "$log.failed" <"$log"
		while IFS= read -r n; do
			[ -n "$n" ] && count["$n"]=$((${count["$n"]:-0} + 1))
		done <"$log.failed"
	done
done

echo
echo "flakehunt: $((total - failed)) of $total rounds passed in $(($(date +%s) - start)) s (hog ${hog}); logs in $logdir"
if [ $failed -gt 0 ]; then
	echo "failures per test:"
	for k in "${!count[@]}"; do echo "  ${count[$k]}  $k"; done | sort -rn
	exit 1
fi
