#!/usr/bin/env bash
# Every OpenAPI document survives a client generator: openapi-python-client (pinned)
# generates a client of each document with --fail-on-warning (an operation it cannot
# express is a warning, and it would drop it), and the generated client has a function
# for every operationId the document declares.
# Usage: tests/conformance/client_generator.sh [DOCUMENT ...] (default: openapi/*.json)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
version=0.29.1
venv=${OPENAPI_PYTHON_CLIENT_VENV:-$HOME/.cache/modvisor/openapi-python-client-$version}
if [ ! -x "$venv/bin/openapi-python-client" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "openapi-python-client==$version"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ "$#" -eq 0 ]; then
  set -- "$root"/openapi/*.json
fi
status=0
for doc in "$@"; do
  name=$(basename "$doc" .json)
  out="$work/$name"
  echo "openapi-python-client: $name"
  if ! (cd "$work" && "$venv/bin/openapi-python-client" generate --path "$doc" \
      --output-path "$out" --meta none --fail-on-warning --config "$here/openapi-python-client.yaml" >"$work/$name.log" 2>&1); then
    cat "$work/$name.log"
    echo "FAIL: $name: the generator refused or warned"
    status=1
    continue
  fi
  # Every operationId is a module of the generated client (snake_case already; a Python
  # builtin such as exec gets a trailing underscore).
  for op in $(python3 -c 'import json,sys
d=json.load(open(sys.argv[1]))
for item in d["paths"].values():
    for method, o in item.items():
        if isinstance(o, dict) and "operationId" in o:
            print(o["operationId"])' "$doc"); do
    if ! find "$out" \( -name "$op.py" -o -name "${op}_.py" \) | grep -q .; then
      echo "FAIL: $name: no client function for operation $op"
      status=1
    fi
  done
done
exit $status
