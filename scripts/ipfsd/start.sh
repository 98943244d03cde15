#!/usr/bin/env bash
# Start a js-ipfs 0.66.1 daemon (it serves the Kubo RPC API) for tests and local trials: offline, loopback
# only, random ports, empty Bootstrap, MDNS off, in REPO (default: a new temporary directory).
#
#   scripts/ipfsd/start.sh [REPO]    prints one line:  API=<multiaddr> PID=<pid> REPO=<dir>
#
# Stop it with `kill PID`; after a hard kill (-9), `rm -rf REPO/repo.lock` before reusing REPO.
# Install first (once): (cd scripts/ipfsd && npm install --omit=optional)   # `npm ci` fails, see FACTS.md
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cli="$here/node_modules/ipfs/src/cli.js"
if [[ ! -f "$cli" ]]; then
  echo "start.sh: js-ipfs is not installed; run: (cd $here && npm install --omit=optional)" >&2
  exit 3
fi
command -v node >/dev/null || { echo "start.sh: node is not on PATH" >&2; exit 3; }

repo="${1:-$(mktemp -d "${TMPDIR:-/tmp}/prov-ipfs.XXXXXX")}"
mkdir -p "$repo"
repo="$(cd "$repo" && pwd)"
export IPFS_PATH="$repo"

if [[ ! -f "$repo/config" ]]; then
  if ! node "$cli" init --empty-repo --profile test >"$repo/init.log" 2>&1; then
    echo "start.sh: init failed:" >&2; tail -20 "$repo/init.log" >&2; exit 1
  fi
fi

# The test profile already binds to loopback; pin every listener to 127.0.0.1 port 0 (the gRPC one defaults
# to a fixed 5003) and make sure nothing dials out.
node -e '
const fs = require("fs"); const path = process.argv[1];
const c = JSON.parse(fs.readFileSync(path, "utf8"));
const lo = "/ip4/127.0.0.1/tcp/0";
c.Addresses = Object.assign(c.Addresses || {}, { Swarm: [lo], API: lo, Gateway: lo, RPC: lo,
  Announce: [], NoAnnounce: [], Delegates: [] });
c.Bootstrap = [];
c.Discovery = Object.assign(c.Discovery || {}, { MDNS: { Enabled: false, Interval: 10 },
  webRTCStar: { Enabled: false } });
fs.writeFileSync(path, JSON.stringify(c, null, 2));
' "$repo/config"

rm -rf "$repo/repo.lock" "$repo/api"
node "$cli" daemon --offline >"$repo/daemon.log" 2>&1 </dev/null &
pid=$!

deadline=$((SECONDS + ${IPFSD_START_TIMEOUT:-90}))
until [[ -s "$repo/api" ]] && grep -q "Daemon is ready" "$repo/daemon.log"; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "start.sh: the daemon exited during start-up:" >&2; tail -20 "$repo/daemon.log" >&2; exit 1
  fi
  if (( SECONDS >= deadline )); then
    kill "$pid" 2>/dev/null || true
    echo "start.sh: the daemon did not start within ${IPFSD_START_TIMEOUT:-90}s" >&2; exit 1
  fi
  sleep 0.2
done
echo "API=$(cat "$repo/api") PID=$pid REPO=$repo"
