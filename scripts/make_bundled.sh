#!/usr/bin/env bash
# After scripts/train_all.sh: converts the trained checkpoint into the bundled models/tiny-jamba.gguf
# and measures what its model card reports (golden logits, perplexity vs unigram, samples, plots).
set -euo pipefail
cd "$(dirname "$0")/.."
BRAID=build/tools/braid
HF=build/train/hf
OUT=build/bundled
PY=/usr/bin/python3
mkdir -p "$OUT" models

# 1. the shipped file (F16 keeps it under 40 MB), and an F32 twin to check against PyTorch exactly
$BRAID convert "$HF" models/tiny-jamba.gguf --type F16
$BRAID convert "$HF" "$OUT/tiny-jamba-f32.gguf" --type F32
$BRAID info models/tiny-jamba.gguf | tee "$OUT/info.txt"

# 2. golden logits: the independent reference on the shipped file (committed, checked by ctest) ...
$PY scripts/reference.py golden models/tiny-jamba.gguf tests/fixtures/tiny-jamba.golden
# ... and the training code's own PyTorch model on the HF export, against the F32 conversion
$PY scripts/train_tiny.py --dump-logits "$HF" "$OUT/hf.golden" --tokens-from build/corpus/valid.txt
build/tests/test_golden "$OUT/tiny-jamba-f32.gguf" "$OUT/hf.golden" 2>&1 | tee "$OUT/hf_check.txt"
build/tests/test_golden models/tiny-jamba.gguf tests/fixtures/tiny-jamba.golden 2>&1 | tee "$OUT/ref_check.txt"

# 3. validation perplexity (windows of the training length) and the unigram baseline on the same tokens
$BRAID perplexity -m models/tiny-jamba.gguf build/corpus/valid.txt --ctx 256 2>/dev/null | tee "$OUT/ppl.txt"
$BRAID tokenize -m models/tiny-jamba.gguf -f build/corpus/valid.txt | cut -f1 | tr -d " " | paste -sd, > "$OUT/valid.ids"
$PY scripts/unigram_ppl.py build/train/train.u16 4096 "$OUT/valid.ids" | tee "$OUT/unigram.txt"

# 4. samples
for p in "The President said that" "Python is a programming language" "The whale"; do
  echo "== greedy: $p"; $BRAID generate -m models/tiny-jamba.gguf -p "$p" -n 60 --temp 0 2>/dev/null
  echo "== temperature 0.8, seed 1: $p"; $BRAID generate -m models/tiny-jamba.gguf -p "$p" -n 60 --temp 0.8 --seed 1 2>/dev/null
done | tee "$OUT/samples.txt"

# 5. loss curve
$PY scripts/plot_loss.py build/train/train.log models/tiny-jamba-loss.png
