#!/usr/bin/env bash
# Installs what the test suites need on a fresh machine: redis-server, nginx, Chromium and
# docker-compose (to validate the compose file) from Debian (the tests start their own instances
# on free ports; playwright-core drives Chromium), python-socketio and kubernetes-validate from PyPI, Node.js with npm (from Debian when the machine
# has none) and the npm packages of js-fixtures (real socket.io-client and the published Twine
# libraries), exactly as locked.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  if [ -z "${APT_UPDATED:-}" ]; then
    apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v nginx >/dev/null || missing+=(nginx-light)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v docker-compose >/dev/null || missing+=(docker-compose)
# jemalloc, the server's default allocator, is built from source.
command -v make >/dev/null || missing+=(make)
command -v cc >/dev/null || missing+=(gcc)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  apt_install "${missing[@]}"
fi
redis_major=$(redis-server --version | sed -E 's/.* v=([0-9]+).*/\1/')
if [ "$redis_major" -lt 7 ]; then
  echo "Redis 7 or newer is needed (found $(redis-server --version))" >&2
  exit 1
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "installing Node.js and npm"
  apt_install nodejs npm
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "Node.js 20 or newer is needed for the compatibility tests (found $(node --version))" >&2
  exit 1
fi

if ! python3 -c 'import socketio, websocket, requests' 2>/dev/null; then
  echo "installing python-socketio"
  python3 -m pip install --quiet --disable-pip-version-check "python-socketio[client]==5.18.1"
fi

# The Kubernetes API schemas, bundled, for validating deploy/kubernetes/ offline.
if ! python3 -c 'import importlib.metadata as m; assert m.version("kubernetes-validate") == "1.37.0"' 2>/dev/null; then
  echo "installing kubernetes-validate"
  python3 -m pip install --quiet --disable-pip-version-check "kubernetes-validate==1.37.0"
fi

# With its devDependencies: bcryptjs (the Admin UI tests hash their passwords with it) and
# @socket.io/admin-ui (whose ui/dist the Chromium test serves).
echo "installing js-fixtures npm packages"
npm ci --prefix js-fixtures --no-audit --no-fund --loglevel=error

echo "installing the Node peers and Artillery npm packages"
# socket.io with @socket.io/redis-adapter, @socket.io/redis-streams-adapter and the redis client:
# the peers `loadgen bench` measures our server against.
npm ci --prefix js-fixtures/node-peer --no-audit --no-fund --loglevel=error
# bufferutil and utf-8-validate, as socket.io's performance guide advises: `ws` uses them when
# their native builds load (prebuilt for linux-x64 inside the packages), so check that they do.
(cd js-fixtures/node-peer && node -e '
  const path = require("node:path");
  for (const m of ["bufferutil", "utf-8-validate"]) require("node-gyp-build").path(path.dirname(require.resolve(m)));
')
# Artillery's optional browser download cannot work offline.
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix js-fixtures/artillery --no-audit --no-fund --loglevel=error
