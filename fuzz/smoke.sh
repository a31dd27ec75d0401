#!/usr/bin/env bash
# A short run of every fuzz target over its committed corpus: fails on any
# crash. Installs what it needs on a fresh machine (the nightly toolchain,
# cargo-fuzz), caching both, and builds outside the checkout.
#
#   fuzz/smoke.sh              # every target, FUZZ_SECONDS (12) each
#   fuzz/smoke.sh cloudevents  # one target
#
# The long campaign (docs/reliability.md, "Fuzzing") runs the same targets
# with -runs/-max_total_time raised, one at a time.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-12}"
tools="${LAYOTTO_TOOLS:-$HOME/.cache/layotto-tools}"
# Never the stable target dir: nightly and sanitizer flags would thrash it.
export CARGO_TARGET_DIR="${LAYOTTO_FUZZ_TARGET:-$HOME/.cache/layotto-fuzz-target}"
export PATH="$tools/bin:$PATH"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "== installing the nightly toolchain"
  rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "== installing cargo-fuzz into $tools"
  cargo +nightly install cargo-fuzz --locked --root "$tools"
fi

# No sanitizer: the crate forbids unsafe code, so the bugs to find are
# panics (overflow checks and debug assertions on, -a), hangs and blow-ups,
# which libFuzzer catches itself; without ASan each run is about twice as
# fast.
flags=(--sanitizer none --debug-assertions)

started=$SECONDS
echo "== cargo fuzz build"
cargo +nightly fuzz build "${flags[@]}"
echo "built in $((SECONDS - started))s"

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

# New inputs go to a scratch corpus, so the committed one stays as it is.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
run_started=$SECONDS
for target in "${targets[@]}"; do
  echo "== $target (${seconds}s)"
  mkdir -p "$scratch/$target" "fuzz/corpus/$target"
  log="$scratch/$target.log"
  if ! cargo +nightly fuzz run "${flags[@]}" "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz target $target crashed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
done
echo "fuzzed ${#targets[@]} targets in $((SECONDS - run_started))s (build $((run_started - started))s)"
