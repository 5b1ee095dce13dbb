#!/usr/bin/env bash
# Runs the libFuzzer harnesses one after another, each for a bounded time, from the committed seeds
# and reproducers; builds them with clang first. CI runs it for 60 s a harness; a campaign runs longer:
#   tests/fuzz/campaign.sh -t 1800            # 30 minutes a harness, all harnesses
#   tests/fuzz/campaign.sh -t 600 tok_model   # one harness
# Options: -t SECONDS a harness (default 60), -b BUILD folder (default build-fuzz), -o OUT folder for
# the grown corpora, crash files and logs (default BUILD/fuzz-out). New inputs go to OUT, never into
# tests/fuzz. Exits 1 when a harness found a crash, leak or timeout (its input is in OUT/NAME/).
set -euo pipefail
cd "$(dirname "$0")/../.."
t=60 build=build-fuzz out=
while getopts "t:b:o:" o; do
  case $o in
    t) t=$OPTARG ;;
    b) build=$OPTARG ;;
    o) out=$OPTARG ;;
    *) echo "usage: tests/fuzz/campaign.sh [-t SECONDS] [-b BUILD] [-o OUT] [HARNESS...]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
out=${out:-$build/fuzz-out}
if [[ $# -gt 0 ]]; then names=("$@"); else
  names=()
  for f in tests/fuzz/fuzz_*.c; do n=${f#tests/fuzz/fuzz_}; names+=("${n%.c}"); done
fi

cc=${CC:-clang} cxx=${CXX:-clang++}
if ! command -v "$cc" >/dev/null || ! command -v "$cxx" >/dev/null; then
  echo "campaign: $cc/$cxx not found; the fuzzers need clang with libFuzzer (scripts/deps.sh --tests)" >&2
  exit 1
fi
CC=$cc CXX=$cxx cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBRAID_FUZZ=ON -DBRAID_WERROR=ON >/dev/null
targets=()
for n in "${names[@]}"; do targets+=("fuzz_$n"); done
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" --target "${targets[@]}"

# leaks count as failures (libFuzzer's default with ASan); UBSan findings stop the run
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
mkdir -p "$out"
failed=0
printf "%-12s %8s %10s %8s %6s %6s %9s  %s\n" harness seconds execs exec/s cov ft corpus result | tee "$out/summary.txt"
for n in "${names[@]}"; do
  d=$out/$n
  mkdir -p "$d/corpus"
  log=$d/fuzz.log
  start=$(date +%s)
  set +e
  # -timeout: one input taking 10 s is a hang; -rss_limit_mb: runaway allocation is a finding
  "$build/tests/fuzz/fuzz_$n" -max_total_time="$t" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
    -print_final_stats=1 -artifact_prefix="$d/" "$d/corpus" "tests/fuzz/$n/corpus" \
    $([[ -d tests/fuzz/$n/regressions ]] && echo "tests/fuzz/$n/regressions") >"$log" 2>&1
  rc=$?
  set -e
  secs=$(($(date +%s) - start))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([^ ]*\).*/\1/p' <<<"$last")
  result=ok
  if [[ $rc -ne 0 ]]; then
    result="FOUND: $(grep -m1 -E 'ERROR: |runtime error|SUMMARY' "$log" || echo "exit $rc") (see $log)"
    failed=1
  fi
  printf "%-12s %8s %10s %8s %6s %6s %9s  %s\n" "$n" "$secs" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" \
    "${corp:-?}" "$result" | tee -a "$out/summary.txt"
done
exit $failed
