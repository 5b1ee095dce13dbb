#!/usr/bin/env bash
# Runs the libFuzzer harnesses one after another, each for a bounded time, from the committed seeds
# and reproducers; builds them with clang first. CI runs it for 60 s a harness; a campaign runs longer:
#   tests/fuzz/campaign.sh -t 1800            # 30 minutes a harness, all harnesses
#   tests/fuzz/campaign.sh -t 600 tok_model   # one harness
# Options: -t SECONDS a harness (default 60), -b BUILD folder (default build-fuzz), -o OUT folder for
# the grown corpora, crash files and logs (default BUILD/fuzz-out). New inputs go to OUT, never into
# tests/fuzz. Exits 1 when a harness found a crash, leak or timeout (its input is in OUT/NAME/).
# SECONDS is running time: time the fuzzer spends stopped (SIGSTOP, as a benchmark on a shared machine
# pauses background jobs) is counted apart and made up for. libFuzzer's timeout is wall time, so a pause
# reads as a timeout: a timeout input is run again alone, and one that then finishes in time is set aside
# in OUT/NAME/unconfirmed/ and the fuzzer resumes from its corpus; one that hangs again is a finding.
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
# -timeout: one input taking 10 s is a hang; -rss_limit_mb: runaway allocation is a finding
fuzz_opts=(-timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024)

# Runs one fuzzer process for up to $1 wall seconds, appending to $log; sets rc, seg_paused (the seconds
# of polls in which it was stopped or used no CPU at all: a benchmark at a higher priority starves a
# nice 19 job as surely as SIGSTOP) and seg_cpu (the CPU time it used, in clock ticks).
segment() {
  local bin=$1 secs=$2 n=$3 d=$4
  "$bin" -max_total_time="$secs" "${fuzz_opts[@]}" -print_final_stats=1 -artifact_prefix="$d/" "$d/corpus" \
    "tests/fuzz/$n/corpus" $([[ -d tests/fuzz/$n/regressions ]] && echo "tests/fuzz/$n/regressions") >>"$log" 2>&1 &
  local pid=$! st cpu t0 t1
  seg_paused=0 seg_cpu=0
  while kill -0 "$pid" 2>/dev/null; do
    t0=$(date +%s)
    sleep 1
    t1=$(date +%s)
    st=- cpu=
    read -r st cpu < <(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $1, $12 + $13}' || true) || true
    if [[ $st == T ]] || [[ -n $cpu && $cpu -eq $seg_cpu ]]; then seg_paused=$((seg_paused + t1 - t0)); fi
    [[ -n $cpu ]] && seg_cpu=$cpu
  done
  set +e
  wait "$pid"
  rc=$?
  set -e
}

printf "%-12s %8s %7s %6s %10s %8s %6s %6s %9s  %s\n" harness seconds paused cpu execs exec/s cov ft corpus result |
  tee "$out/summary.txt"
for n in "${names[@]}"; do
  d=$out/$n bin=$build/tests/fuzz/fuzz_$n
  mkdir -p "$d/corpus"
  log=$d/fuzz.log
  : >"$log"
  ran=0 paused=0 cpu=0 unconfirmed=0 rc=0
  while (( ran < t )); do
    start=$(date +%s) logged=$(stat -c %s "$log")
    segment "$bin" $((t - ran)) "$n" "$d"
    wall=$(($(date +%s) - start))
    paused=$((paused + seg_paused)) cpu=$((cpu + seg_cpu))
    ran=$((ran + (wall > seg_paused ? wall - seg_paused : 0)))
    [[ $rc -eq 0 ]] && continue
    tmo=$(ls -t "$d"/timeout-* 2>/dev/null | head -1)
    # a timeout that does not hang again alone was the machine, not the input
    if [[ -n $tmo ]] && tail -c +$((logged + 1)) "$log" | grep -q 'ERROR: libFuzzer: timeout' && "$bin" "${fuzz_opts[@]}" "$tmo" >>"$d/recheck.log" 2>&1; then
      mkdir -p "$d/unconfirmed"
      mv "$tmo" "$d/unconfirmed/"
      unconfirmed=$((unconfirmed + 1))
      echo "campaign: $n: $(basename "$tmo") ran in time alone; resuming ($ran of $t s run)" | tee -a "$log"
      rc=0
      continue
    fi
    break
  done
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | awk '{s += $1} END {print s + 0}')
  rate=$(( ran > 0 ? execs / ran : 0 ))
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([^ ]*\).*/\1/p' <<<"$last")
  result=ok
  (( unconfirmed )) && result="ok ($unconfirmed timeouts that ran in time alone, in $d/unconfirmed)"
  if [[ $rc -ne 0 ]]; then
    result="FOUND: $(tail -c +$((logged + 1)) "$log" | grep -m1 -E 'ERROR: |runtime error|SUMMARY' || echo "exit $rc") (see $log)"
    failed=1
  fi
  printf "%-12s %8s %7s %6s %10s %8s %6s %6s %9s  %s\n" "$n" "$ran" "$paused" $((cpu / $(getconf CLK_TCK))) "$execs" \
    "$rate" "${cov:-?}" "${ft:-?}" \
    "${corp:-?}" "$result" | tee -a "$out/summary.txt"
done
exit $failed
