#!/usr/bin/env bash
# Source coverage of what the fuzz harnesses reach: builds the replay programs with clang's
# source-based coverage, replays each harness over corpus folders, and prints llvm-cov's per-file
# table for the files that harness is meant to exercise.
#   tests/fuzz/coverage.sh [-b BUILD] [-o OUT]      # over the committed seeds and reproducers
#   tests/fuzz/coverage.sh -o build-fuzz/fuzz-out    # over the corpora a campaign grew (campaign.sh -o)
#   tests/fuzz/coverage.sh tok_model                 # one harness
set -euo pipefail
cd "$(dirname "$0")/../.."
build=build-fuzzcov out=
while getopts "b:o:" o; do
  case $o in
    b) build=$OPTARG ;;
    o) out=$OPTARG ;;
    *) echo "usage: tests/fuzz/coverage.sh [-b BUILD] [-o CAMPAIGN_OUT] [HARNESS...]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
cov="-fprofile-instr-generate -fcoverage-mapping"
CC=${CC:-clang} CXX=${CXX:-clang++} cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug -DBRAID_WERROR=ON \
  -DCMAKE_C_FLAGS="$cov" -DCMAKE_CXX_FLAGS="$cov" -DCMAKE_EXE_LINKER_FLAGS="-fprofile-instr-generate" >/dev/null
declare -A files=(
  [gguf_model]="runtime/gguf.c runtime/model.c runtime/forward.c"
  [tok_gguf]="runtime/gguf.c tokenizer/tok.cc tokenizer/spm_proto.c"
  [tok_model]="tokenizer/tok.cc tokenizer/spm_proto.c"
  [convert]="runtime/convert.c"
  [session]="runtime/state.c"
  [http]="tools/http.c"
  [template]="runtime/template.c"
)
if [[ $# -gt 0 ]]; then names=("$@"); else
  names=()
  for f in tests/fuzz/fuzz_*.c; do n=${f#tests/fuzz/fuzz_}; names+=("${n%.c}"); done
fi
targets=()
for n in "${names[@]}"; do targets+=("replay_$n"); done
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" --target "${targets[@]}" >/dev/null
llvm_profdata=$(command -v llvm-profdata || command -v llvm-profdata-14)
llvm_cov=$(command -v llvm-cov || command -v llvm-cov-14)
for n in "${names[@]}"; do
  dirs=("tests/fuzz/$n/corpus")
  [[ -d tests/fuzz/$n/regressions ]] && dirs+=("tests/fuzz/$n/regressions")
  [[ -n $out && -d $out/$n/corpus ]] && dirs+=("$out/$n/corpus")
  rm -f "$build/$n".profraw
  LLVM_PROFILE_FILE="$build/$n.profraw" "$build/tests/fuzz/replay_$n" "${dirs[@]}" >/dev/null
  "$llvm_profdata" merge -o "$build/$n.profdata" "$build/$n.profraw"
  echo "== $n (inputs: ${dirs[*]})"
  # shellcheck disable=SC2086
  "$llvm_cov" report "$build/tests/fuzz/replay_$n" -instr-profile="$build/$n.profdata" ${files[$n]:-} |
    grep -v -- '^---' | sed 's/^/  /'
done
