#!/usr/bin/env bash
# After scripts/train_all.sh: converts the trained checkpoint into the bundled models/tiny-jamba.gguf and
# measures what its model card reports (golden logits, bits per byte against the previous bundled model,
# held-out question score, samples, loss plot). Usage: scripts/make_bundled.sh [OUT=build/train]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-build/train}"
BRAID="${BRAID:-build/tools/braid}"
TESTS="${TESTS:-build/tests}"
CORPUS="${CORPUS:-build/corpus}"
HF="$OUT/tiny-jamba"          # the directory's name is the GGUF's general.name
B="$OUT/bundled"
PY=/usr/bin/python3
mkdir -p "$B" models

# 0. the model being replaced, for the bits-per-byte comparison
git show HEAD:models/tiny-jamba.gguf > "$B/previous.gguf"

# 1. the shipped file (F16 keeps it small), and an F32 twin to check against PyTorch exactly
$PY scripts/train_tiny.py --out "$OUT" --tokenizer "$OUT/tokenizer.model" --export "$HF"
$BRAID convert "$HF" models/tiny-jamba.gguf --type F16
$BRAID convert "$HF" "$B/tiny-jamba-f32.gguf" --type F32
$BRAID info models/tiny-jamba.gguf | tee "$B/info.txt"

# 2. golden logits: the independent reference on the shipped file (committed, checked by ctest) ...
$PY scripts/reference.py golden models/tiny-jamba.gguf tests/fixtures/tiny-jamba.golden
"$TESTS/test_golden" models/tiny-jamba.gguf tests/fixtures/tiny-jamba.golden 2>&1 | tee "$B/ref_check.txt"
# ... and the training code's own PyTorch model on the HF export, against the F32 conversion
$PY scripts/train_tiny.py --dump-logits "$HF" "$B/hf.golden" --tokens-from "$CORPUS/valid.txt"
"$TESTS/test_golden" "$B/tiny-jamba-f32.gguf" "$B/hf.golden" 2>&1 | tee "$B/hf_check.txt"

# 3. bits per byte (new vs previous, same text), held-out questions against the random-gloss baseline
#    (with a paired sign test), the word/definition matching test on the HF export, sample conversations
$PY scripts/eval_chat.py --braid "$BRAID" --model models/tiny-jamba.gguf --tokenizer "$HF/tokenizer.model" \
  --old "$B/previous.gguf" --corpus "$CORPUS" --n 300 --hf "$HF" --out "$B/eval.md"

# 4. samples from the README's prompts at the default settings, and greedy
for p in "Once upon a time" "The President said that" "Call me"; do
  echo "== default settings, seed 1: $p"; $BRAID generate -m models/tiny-jamba.gguf -p "$p" -n 64 --seed 1 2>/dev/null
  echo "== greedy: $p"; $BRAID generate -m models/tiny-jamba.gguf -p "$p" -n 64 --temp 0 2>/dev/null
done | tee "$B/samples.txt"
tests/prose_test.sh "$BRAID" models/tiny-jamba.gguf . | tee "$B/prose.txt"

# 5. loss curve
$PY scripts/plot_loss.py "$OUT/train.log" models/tiny-jamba-loss.png
