#!/usr/bin/env bash
# End-to-end reproduction of braid's tiny Jamba test model: corpus fetch -> SentencePiece -> CPU training
# -> HF export (build/train/hf) -> golden logits (build/train/tiny.golden). Usage: scripts/train_all.sh [MINUTES=70]
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES="${1:-70}"
PY=/usr/bin/python3   # Debian's python has python3-torch; a pyenv python3 on PATH may not
CORPUS=build/corpus
OUT=build/train
mkdir -p "$OUT"

scripts/fetch_corpus.sh "$CORPUS"

# spm_train reads one sentence per line, so document separators and blank lines are dropped here.
grep -v $'^\f$' "$CORPUS/train.txt" | grep -v '^$' > "$OUT/spm_input.txt"
# identity normalisation keeps the C tokenizer free of NFKC tables (the corpus is NFC'd at fetch time).
spm_train --input="$OUT/spm_input.txt" --model_prefix="$OUT/tokenizer" \
  --model_type=unigram --vocab_size=4096 --byte_fallback=true --character_coverage=0.9995 \
  --input_sentence_size=200000 --shuffle_input_sentence=true --max_sentence_length=16384 \
  --seed_sentencepiece_size=200000 --pad_id=-1 --unk_id=0 --bos_id=1 --eos_id=2 \
  --normalization_rule_name=identity --num_threads=2 > "$OUT/spm_train.log" 2>&1
rm -f "$OUT/spm_input.txt" "$OUT/train.u16" "$OUT/valid.u16"   # token caches depend on the tokenizer

$PY scripts/train_tiny.py --selftest
# nice: shares the machine with compile jobs; training only needs to finish inside its budget.
nice -n 19 $PY scripts/train_tiny.py --corpus "$CORPUS" --tokenizer "$OUT/tokenizer.model" --out "$OUT" \
  --minutes "$MINUTES" --batch 8
$PY scripts/train_tiny.py --dump-logits "$OUT/hf" "$OUT/tiny.golden" --tokens-from "$CORPUS/valid.txt"
