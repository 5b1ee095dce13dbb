#!/usr/bin/env bash
# Regenerates tests/fixtures/NAME.golden for every fixture in tests/fixtures/models.txt:
# braid synth writes the GGUF, scripts/reference.py computes the float64 golden logits from it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:-build}"
BRAID="$BUILD/tools/braid"
LIST="$ROOT/tests/fixtures/models.txt"

if [[ ! -x "$BRAID" ]]; then
    echo "make_golden.sh: $BRAID not found; build the project first" >&2
    exit 1
fi
mkdir -p "$BUILD/fixtures"

while read -r name args || [[ -n "${name:-}" ]]; do
    # blank lines and '#' comments let the list carry notes
    [[ -z "$name" || "$name" == \#* ]] && continue
    gguf="$BUILD/fixtures/$name.gguf"
    # $args is split on purpose: it holds the synth flags
    # shellcheck disable=SC2086
    # </dev/null: the loop's stdin is the fixture list, which neither command may eat
    "$BRAID" synth "$gguf" $args </dev/null
    /usr/bin/python3 "$ROOT/scripts/reference.py" golden "$gguf" "$ROOT/tests/fixtures/$name.golden" </dev/null
done < "$LIST"
