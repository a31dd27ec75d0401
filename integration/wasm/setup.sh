#!/usr/bin/env bash
# Installs the AssemblyScript compiler that the WASM tests use to build
# their AssemblyScript guests (integration/wasm/*.ts), from npm, into a
# directory outside the checkout (cached between runs). Called by .ci/run;
# safe to run again.
set -euo pipefail
dir="${LAYOTTO_WASM_NODE:-$HOME/.cache/layotto-wasm-node}"
want="0.28.20"
mkdir -p "$dir"
have="$(node -e "console.log(require('$dir/node_modules/assemblyscript/package.json').version)" 2>/dev/null || true)"
if [ "$have" != "$want" ]; then
  (cd "$dir" && npm install --silent --no-audit --no-fund "assemblyscript@$want" >&2)
fi
"$dir/node_modules/.bin/asc" --version
