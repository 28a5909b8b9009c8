#!/usr/bin/env bash
# OpenAPI conformance: schemathesis (pinned) against a real `modvisor up` (no nodes, empty
# catalog), once as a tenant and once as the admin (not /metrics, a text format, nor
# /v1/stream, which never ends). Fails on any finding of the checks
# below. Usage: tests/conformance/schemathesis.sh MODVISOR_BINARY [MAX_EXAMPLES]
set -euo pipefail
bin=$(realpath "$1")
examples=${2:-25}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${SCHEMATHESIS_VENV:-$HOME/.cache/modvisor/schemathesis-4.32.5}
if [ ! -x "$venv/bin/st" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q schemathesis==4.32.5
fi
work=$(mktemp -d)
cleanup() {
  if [ -n "${pid:-}" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
MODVISOR_LOG=warn "$bin" up --nodes 0 --catalog none --listen 127.0.0.1:0 --data-dir "$work/data" &
pid=$!
for _ in $(seq 1 300); do
  [ -s "$work/data/control-plane.addr" ] && break
  sleep 0.1
done
base="http://$(cat "$work/data/control-plane.addr")"
for _ in $(seq 1 100); do
  curl -fsS "$base/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
admin=$(cat "$work/data/tokens/admin.jwt")
tenant=$(cat "$work/data/tokens/tenant-a.jwt")
# The admin lifts tenant-a's rate limits, so that the run exercises the routes rather than
# the limiter (whose 429 is documented and tested on its own).
curl -fsS -X PUT "$base/v1/tenants/tenant-a/quota" -H "authorization: Bearer $admin" \
  -H 'content-type: application/json' \
  -d '{"max_vms":1000,"max_vcpus":4000,"max_memory_mib":4000000,"api_requests_per_sec":100000,"api_burst":100000,"max_concurrent_requests":1000}' >/dev/null
# A VM of tenant-a and a disposable token for the pinned path parameters.
MODVISOR_VM_ID=$(curl -fsS -X POST "$base/v1/vms" -H "authorization: Bearer $tenant" \
  -H 'content-type: application/json' -d '{"name":"pinned","vcpus":1,"memory_mib":128}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
MODVISOR_SPARE_JTI=$(curl -fsS -X POST "$base/v1/tokens" -H "authorization: Bearer $admin" \
  -H 'content-type: application/json' -d '{"role":"tenant","tenant":"tenant-a","ttl_secs":600}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["jti"])')
export MODVISOR_VM_ID MODVISOR_SPARE_JTI
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance
status=0
for who in tenant admin; do
  token=$tenant
  [ "$who" = admin ] && token=$admin
  echo "schemathesis as $who against $base (max $examples examples per operation)"
  "$venv/bin/st" --config-file "$here/schemathesis.toml" run "$root/openapi/control-plane.json" --url "$base" \
    -H "Authorization: Bearer $token" \
    --checks "$checks" --max-examples "$examples" --seed 7 --workers 1 \
    --phases examples,coverage,fuzzing --generation-database none \
    --exclude-path /metrics --exclude-path /v1/stream --no-color \
    --report junit --report-dir "$work/report-$who" || status=1
done
exit $status
