#!/usr/bin/env bash
# Builds braid twice (Release, and AddressSanitizer + UndefinedBehaviorSanitizer), both with
# -Wall -Wextra -Werror, and runs the whole test suite in each. This is the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --tests

jobs=$(nproc 2>/dev/null || echo 2)
run() {
  local dir=$1; shift
  cmake -S . -B "$dir" -DBRAID_WERROR=ON "$@" >/dev/null
  cmake --build "$dir" -j "$jobs"
  ctest --test-dir "$dir" --output-on-failure -j "$jobs"
}

# BRAID_BUILD names the build folders (default build, build-asan), so two checkouts' or two people's
# runs on one machine need not share them.
b=${BRAID_BUILD:-build}
echo "== Release build, tests"
run "$b" -DCMAKE_BUILD_TYPE=Release
echo "== ASan + UBSan build, tests"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  run "$b-asan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBRAID_SANITIZE=ON
