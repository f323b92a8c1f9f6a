#!/usr/bin/env bash
# Stop the containers started by up.sh. The replicas' homes (keys, chain) stay in testnet/docker/run;
# `--reset` deletes them too.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(docker-compose); fi
"${compose[@]}" -p p2pbft -f "$here/compose.yaml" down --remove-orphans
if [[ "${1:-}" == "--reset" ]]; then rm -rf "$here/run"; echo "deleted $here/run"; fi
