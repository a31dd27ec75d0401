#!/usr/bin/env bash
# Installs the S3-compatible server the file store tests run against:
# moto's server mode, from PyPI, into a virtualenv outside the checkout
# (cached between runs). Tests start a private instance per test on a free
# port (integration/support.rs, S3Server). Called by .ci/run; safe to run
# again.
set -euo pipefail
venv="${LAYOTTO_S3_VENV:-$HOME/.cache/layotto-s3-venv}"
want="moto[server]==5.1.18"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
if ! "$venv/bin/python" -c "import moto.server" 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$want" >&2
fi
"$venv/bin/python" -c "import moto; print('moto', moto.__version__)"
