#!/usr/bin/env bash
# Start a 4-replica p2pbft network as separate containers on a private docker network:
#   1. build a static p2pbft binary (CGO_ENABLED=0),
#   2. build the image p2pbft:local FROM scratch around it (nothing is pulled),
#   3. create the replicas' homes in testnet/docker/run (once; `--reset` starts over),
#   4. docker compose up, and wait until every replica's HTTP API answers.
# Stop with testnet/docker/down.sh (the chain stays in testnet/docker/run).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
project=p2pbft

if docker compose version >/dev/null 2>&1; then
	compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
	compose=(docker-compose)
else
	echo "error: neither 'docker compose' nor 'docker-compose' is installed" >&2
	exit 1
fi

if [[ "${1:-}" == "--reset" ]]; then
	"${compose[@]}" -p "$project" -f "$here/compose.yaml" down --remove-orphans >/dev/null 2>&1 || true
	rm -rf "$here/run"
fi

echo "== building a static p2pbft"
(cd "$root" && CGO_ENABLED=0 go build -trimpath -o "$here/p2pbft" ./cmd/p2pbft)
if command -v file >/dev/null 2>&1; then file "$here/p2pbft" | sed 's/^/   /'; fi

if [[ ! -f "$here/run/testnet.json" ]]; then
	echo "== creating the replicas' homes in $here/run"
	"$here/p2pbft" testnet init --docker --dir "$here/run"
fi

echo "== building the image p2pbft:local (FROM scratch)"
docker build -q -t p2pbft:local "$here"

echo "== starting the network"
export P2PBFT_UID="$(id -u)" P2PBFT_GID="$(id -g)"
"${compose[@]}" -p "$project" -f "$here/compose.yaml" up -d

echo "== waiting for the replicas' HTTP APIs"
for i in 0 1 2 3; do
	for _ in $(seq 1 120); do
		if "$here/p2pbft" status --api "127.0.0.1:2668$i" --timeout 1s >/dev/null 2>&1; then
			echo "   node$i: http://127.0.0.1:2668$i"
			continue 2
		fi
		sleep 0.5
	done
	echo "error: node$i did not come up; its logs:" >&2
	"${compose[@]}" -p "$project" -f "$here/compose.yaml" logs --tail 30 "node$i" >&2
	exit 1
done

network="$(docker network ls --format '{{.Name}}' | grep -E "^${project}[_-]p2pbft$" | head -1)"
cat <<MSG

The network runs. Try:
  $here/p2pbft status --api 127.0.0.1:26680
  $here/p2pbft tx --api 127.0.0.1:26681 put hello world
  # a libp2p client inside the docker network (f+1 matching replies):
  docker run --rm --network $network -v $here/run/client:/client -u $P2PBFT_UID:$P2PBFT_GID p2pbft:local tx --home /client get hello
  # faults: ${compose[*]} -p $project -f $here/compose.yaml kill node0    (then: start node0)
  # logs:   ${compose[*]} -p $project -f $here/compose.yaml logs -f node1
Stop: $here/down.sh
MSG
