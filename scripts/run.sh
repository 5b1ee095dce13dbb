#!/usr/bin/env bash
# The README's run command: installs what is missing, builds braid (Release), and opens `braid chat`
# on the bundled model. With arguments it runs `braid generate` with them instead (e.g. -p "Call me" -n 100).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DBRAID_TESTS=OFF >/dev/null
cmake --build build -j "$(nproc 2>/dev/null || echo 2)" --target braid >/dev/null

model=models/tiny-jamba.gguf
if [[ -f $model ]]; then
  if [[ $# -eq 0 ]]; then exec build/tools/braid chat -m "$model"; fi
  exec build/tools/braid generate -m "$model" "$@"
fi
# Before the bundled model exists, show the runtime working on a random-weight model of the same family.
echo "braid: $model is not in this checkout; generating token ids from a random-weight model instead" >&2
build/tools/braid synth build/demo.gguf --preset tiny --seed 1
if [[ $# -eq 0 ]]; then set -- --tokens 1,2,3,4 -n 32 --temp 0.8; fi
exec build/tools/braid generate -m build/demo.gguf "$@"
