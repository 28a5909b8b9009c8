#!/usr/bin/env bash
# The dashboard's CI: installs Node.js/npm and Debian's chromium when missing, rebuilds the
# dashboard from source and fails when the committed bundle or schema differ from the
# rebuild, checks that the modvisor binary serves those very files, then runs the
# Playwright suite in headless chromium against a real `modvisor up --nodes 1` (a real
# guest under QEMU) that it starts itself on a loopback port in a temporary data directory.
# Runs as root on Debian 12. Usage: dashboard/ci.sh MODVISOR_BINARY
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 MODVISOR_BINARY" >&2
  exit 2
fi
bin=$(realpath "$1")
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
bundle=$root/control-plane/src/api/dashboard/app.js
schema=$here/src/api/schema.d.ts
cd "$here"

echo "== dashboard: Node.js, npm and chromium"
export DEBIAN_FRONTEND=noninteractive
need=()
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
echo "node $(node --version), npm $(npm --version), $(/usr/bin/chromium --version 2>/dev/null)"
if [ "$node_major" -lt 20 ]; then
  echo "the dashboard's tools (Playwright) need Node.js 20 or later; this is $(node --version)" >&2
  exit 1
fi

echo "== dashboard: npm ci"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
npm ci --no-audit --no-fund

echo "== dashboard: rebuild (schema from openapi/control-plane.json, typecheck, bundle) and compare"
work=$(mktemp -d /tmp/dash-ci.XXXXXX)
pid=
proxy=
cleanup() {
  if [ -n "$proxy" ]; then kill "$proxy" 2>/dev/null || true; fi
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 1 400); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  # Whatever `up` left behind (guests) runs with this data directory in its command line.
  for p in $(pgrep -f "$work/" || true); do kill -KILL "$p" 2>/dev/null || true; done
  rmdir "/sys/fs/cgroup/modvisor-dashboard-$$" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cp "$bundle" "$work/app.js.committed"
cp "$schema" "$work/schema.d.ts.committed"
npm run build
drift=0
cmp -s "$bundle" "$work/app.js.committed" || { echo "control-plane/src/api/dashboard/app.js differs from its rebuild" >&2; drift=1; }
cmp -s "$schema" "$work/schema.d.ts.committed" || { echo "dashboard/src/api/schema.d.ts differs from its rebuild (openapi/control-plane.json changed?)" >&2; drift=1; }
if [ "${CI:-}" = true ] && git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
  git -C "$root" diff --exit-code --stat -- dashboard/src/api/schema.d.ts control-plane/src/api/dashboard/app.js || drift=1
fi
if [ "$drift" -ne 0 ]; then
  echo "rebuild the dashboard: cd dashboard && npm ci && npm run build (and commit the result)" >&2
  exit 1
fi
echo "the committed bundle and schema are what the sources build"
# Server data goes in as text, and the CSP allows no inline script or style.
if grep -nE 'innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function' "$bundle"; then
  echo "the dashboard bundle must not insert markup or evaluate strings (see dashboard/README.md)" >&2
  exit 1
fi
if grep -niE '<script>|<script [^>]*>[^<]|<style|[[:space:]]style=|[[:space:]]on[a-z]+=' "$root/control-plane/src/api/dashboard/index.html"; then
  echo "index.html must hold no inline script, style or event handler (the CSP refuses them)" >&2
  exit 1
fi

echo "== dashboard: a real modvisor up (1 node)"
MODVISOR_LOG=warn "$bin" up --nodes 1 --listen 127.0.0.1:0 --data-dir "$work/data" \
  --jail-cgroup-parent "/modvisor-dashboard-$$" --jail-uid-base 2900000 >"$work/up.log" 2>&1 &
pid=$!
fail_up() {
  echo "$1" >&2
  tail -n 40 "$work/up.log" >&2 || true
  exit 1
}
for _ in $(seq 1 600); do
  [ -s "$work/data/control-plane.addr" ] && break
  kill -0 "$pid" 2>/dev/null || fail_up "modvisor up ended before it listened"
  sleep 0.1
done
[ -s "$work/data/control-plane.addr" ] || fail_up "modvisor up wrote no control-plane.addr within 60 s"
base="http://$(cat "$work/data/control-plane.addr")"
ready=
for _ in $(seq 1 240); do
  if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$base/readyz")" = 200 ]; then ready=1; break; fi
  kill -0 "$pid" 2>/dev/null || fail_up "modvisor up ended before it was ready"
  sleep 1
done
[ -n "$ready" ] || fail_up "modvisor up was not ready within 240 s: $(curl -s --max-time 5 "$base/readyz")"
echo "up and ready at $base"

# The binary must serve the files just checked (a binary built before they changed would
# test another dashboard). For developing the dashboard without rebuilding modvisor,
# DASHBOARD_SERVE_FROM_SOURCE=1 serves them through scripts/dev-proxy.mjs instead; CI
# never sets it.
if [ "${DASHBOARD_SERVE_FROM_SOURCE:-}" = 1 ]; then
  port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
  node scripts/dev-proxy.mjs "$base" "$port" >"$work/proxy.log" 2>&1 &
  proxy=$!
  for _ in $(seq 1 50); do curl -fs -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  echo "DASHBOARD_SERVE_FROM_SOURCE=1: the dashboard's files from the work tree via http://127.0.0.1:$port"
  base="http://127.0.0.1:$port"
else
  for f in index.html:/ app.js:/dashboard/app.js style.css:/dashboard/style.css; do
    curl -fsS --max-time 10 "$base${f#*:}" -o "$work/served"
    cmp -s "$work/served" "$root/control-plane/src/api/dashboard/${f%%:*}" ||
      fail_up "$bin serves another ${f%%:*} than control-plane/src/api/dashboard/${f%%:*}: rebuild it (cargo build --release)"
  done
fi

echo "== dashboard: Playwright (Debian's chromium, headless)"
export MODVISOR_BASE_URL=$base MODVISOR_TOKENS=$work/data/tokens MODVISOR_BIN=$bin
export PLAYWRIGHT_JSON_OUTPUT_NAME=$work/results.json
status=0
timeout 300 npx playwright test --reporter=list,json || status=$?
if [ -s "$work/results.json" ]; then
  node -e '
    const s = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).stats;
    console.log(`playwright: ${s.expected} passed, ${s.unexpected + s.flaky} failed, ${s.skipped} skipped`);
  ' "$work/results.json"
fi
if [ "$status" -ne 0 ]; then
  echo "the dashboard's browser tests failed (exit $status); modvisor up's log ends:" >&2
  tail -n 40 "$work/up.log" >&2 || true
fi
exit "$status"
