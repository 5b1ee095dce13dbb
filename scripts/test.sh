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
# The run path must not need what only the tests need: configure and build braid with cmocka hidden
# from pkg-config (every other .pc file still visible), as on a machine that never ran the tests.
echo "== braid builds without cmocka"
pcdir=$(mktemp -d)
trap 'rm -rf "$pcdir"' EXIT
IFS=: read -ra pcpath <<<"$(pkg-config --variable pc_path pkg-config)"
for d in "${pcpath[@]}"; do
  for pc in "$d"/*.pc; do
    if [[ -e $pc && $(basename "$pc") != cmocka.pc && ! -e $pcdir/$(basename "$pc") ]]; then ln -s "$pc" "$pcdir/"; fi
  done
done
if PKG_CONFIG_LIBDIR=$pcdir pkg-config --exists cmocka; then echo "cmocka is still visible" >&2; exit 1; fi
rm -f "$b-nocmocka/CMakeCache.txt" # pkg-config results are cached: look again
PKG_CONFIG_LIBDIR=$pcdir cmake -S . -B "$b-nocmocka" -DCMAKE_BUILD_TYPE=Release >/dev/null
PKG_CONFIG_LIBDIR=$pcdir cmake --build "$b-nocmocka" -j "$jobs" --target braid >/dev/null
"$b-nocmocka/tools/braid" --version

# clang: the whole project with -Werror and the libFuzzer harnesses (ASan + UBSan, every library
# instrumented); in that build, every committed seed and reproducer replayed and the hostile-file
# tests (the whole suite already ran twice above), then each fuzzer for BRAID_FUZZ_SECONDS (default
# 60) from the committed seeds. docs/RELIABILITY.md says more.
cc=$(command -v clang || command -v clang-14 || true)
cxx=$(command -v clang++ || command -v clang++-14 || true)
if [[ -z $cc || -z $cxx ]]; then
  echo "== SKIPPED: clang build and fuzzers: no clang/clang++ (scripts/deps.sh --tests installs clang-14)"
else
  echo "== clang build (fuzzers, ASan + UBSan), reproducers"
  CC=$cc CXX=$cxx cmake -S . -B "$b-fuzz" -DBRAID_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBRAID_FUZZ=ON >/dev/null
  cmake --build "$b-fuzz" -j "$jobs"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir "$b-fuzz" --output-on-failure -j "$jobs" -R '^(fuzz_replay_|hostile_)'
  echo "== fuzzers, ${BRAID_FUZZ_SECONDS:-60} s each"
  CC=$cc CXX=$cxx tests/fuzz/campaign.sh -t "${BRAID_FUZZ_SECONDS:-60}" -b "$b-fuzz"
fi
