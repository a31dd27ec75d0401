#!/usr/bin/env bash
# Installs the Dapr SDKs the SDK tests drive, outside the checkout (cached
# between runs): `dapr` with its app extensions (the grpc and fastapi
# extras, and uvicorn) from PyPI into a virtualenv, and `@dapr/dapr` from
# npm into a node_modules folder. Called by .ci/run; safe to run again.
set -euo pipefail
venv="${LAYOTTO_SDK_VENV:-$HOME/.cache/layotto-sdk-venv}"
# Pinned to the SDK line the tests were written against.
# Since 1.19 the app extensions (dapr.ext.grpc, dapr.ext.fastapi) ship
# inside the `dapr` wheel as extras.
want="dapr[grpc,fastapi]==1.19.0"
# grpcio-reflection: the pluggable component tests' Python components
# announce their services with it, as Dapr's pluggable SDKs do.
exts="uvicorn==0.54.0 grpcio-reflection==1.85.1"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
if ! "$venv/bin/python" -c "import dapr.clients, dapr.ext.grpc, dapr.ext.fastapi, uvicorn, grpc_reflection" 2>/dev/null; then
  # shellcheck disable=SC2086
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$want" $exts >&2
fi
# The JavaScript SDK, in a folder the tests find through LAYOTTO_SDK_NODE.
node_dir="${LAYOTTO_SDK_NODE:-$HOME/.cache/layotto-sdk-node}"
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$node_dir"
cp "$here/package.json" "$node_dir/package.json"
if [ ! -f "$node_dir/node_modules/@dapr/dapr/package.json" ]; then
  (cd "$node_dir" && npm install --silent --no-audit --no-fund >&2)
fi
