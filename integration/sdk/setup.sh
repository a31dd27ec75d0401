#!/usr/bin/env bash
# Installs the Dapr SDKs the SDK tests drive into a virtualenv outside the
# checkout (cached between runs): `dapr` from PyPI. Prints the venv's
# python. Called by .ci/run; safe to run again.
set -euo pipefail
venv="${LAYOTTO_SDK_VENV:-$HOME/.cache/layotto-sdk-venv}"
# Pinned to the SDK line the tests were written against.
want="dapr==1.19.0"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
if ! "$venv/bin/python" -c "import dapr.clients" 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$want" >&2 || \
    "$venv/bin/pip" install --quiet --disable-pip-version-check dapr >&2
fi
echo "$venv/bin/python"
