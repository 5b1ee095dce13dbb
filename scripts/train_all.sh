#!/usr/bin/env bash
# End-to-end reproduction of braid's bundled tiny Jamba chat model: corpus fetch -> SentencePiece BPE with the
# ChatML control pieces -> CPU training on prose + chat data -> HF export. Usage: scripts/train_all.sh [MINUTES=110]
# OUT (default build/train) holds the token caches, train.log, ckpt.pt and hf/; with RESUME=1 training
# continues from OUT/ckpt.pt (weights, optimiser, step, tokens seen) for another MINUTES.
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES="${1:-110}"
PY=/usr/bin/python3   # Debian's python has python3-torch; a pyenv python3 on PATH may not
CORPUS="${CORPUS:-build/corpus}"
OUT="${OUT:-build/train}"
mkdir -p "$OUT"
scripts/deps.sh --train

[ -f "$CORPUS/chat_train.txt" ] || scripts/fetch_corpus.sh "$CORPUS"

if [ ! -f "$OUT/tokenizer.model" ]; then
  # spm_train reads one sentence per line, so document separators and blank lines are dropped here; a slice
  # of the chat data teaches it the question/answer wording. BPE (not unigram): llama.cpp's SentencePiece
  # tokenizer merges by score and reproduces a BPE model's segmentation, not a unigram model's.
  # Identity normalisation keeps the C tokenizer free of NFKC tables (the corpus is NFC'd at fetch time).
  (grep -v $'^\f$' "$CORPUS/train.txt"; grep -v $'^\f$' "$CORPUS/chat_train.txt" | head -200000) \
    | grep -v '^$' > "$OUT/spm_input.txt"
  spm_train --input="$OUT/spm_input.txt" --model_prefix="$OUT/tokenizer" \
    --model_type=bpe --vocab_size=4096 --byte_fallback=true --character_coverage=0.9995 \
    --input_sentence_size=300000 --shuffle_input_sentence=true --max_sentence_length=16384 \
    --pad_id=-1 --unk_id=0 --bos_id=1 --eos_id=2 --control_symbols='<|im_start|>,<|im_end|>' \
    --normalization_rule_name=identity --num_threads=2 > "$OUT/spm_train.log" 2>&1
  rm -f "$OUT/spm_input.txt" "$OUT"/*.u16   # token caches depend on the tokenizer
fi

$PY scripts/train_tiny.py --selftest
resume=()
[ "${RESUME:-0}" = 1 ] && resume=(--resume)
# nice: shares the machine with compile jobs; the run plans its steps to end inside MINUTES.
nice -n 19 $PY scripts/train_tiny.py --corpus "$CORPUS" --tokenizer "$OUT/tokenizer.model" --out "$OUT" \
  --minutes "$MINUTES" --hidden 192 --intermediate 384 --layers 8 --heads 6 --kv-heads 2 \
  --attn-period 8 --attn-offset 4 --batch 8 --lr 1.5e-3 --min-lr 1e-4 --warmup 30 --chat-frac 0.2 \
  --eval-every 50 --eval-seqs 48 --log-every 10 --ckpt-minutes 5 "${resume[@]}"
# the directory's name becomes the GGUF's general.name
$PY scripts/train_tiny.py --out "$OUT" --tokenizer "$OUT/tokenizer.model" --export "$OUT/tiny-jamba"
