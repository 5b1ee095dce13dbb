#!/usr/bin/env bash
# Builds the search task model, models/arith-jamba.gguf: its character vocabulary (spm_train), the
# training run (scripts/train_arith.py, CPU) and the conversion of the exported checkpoint by braid.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build/arith}
BRAID=${BRAID:-build/tools/braid}
PY=/usr/bin/python3
MINUTES=${MINUTES:-28}
mkdir -p "$OUT"
# 1. vocabulary: BOS/EOS/UNK, 256 byte pieces (a newline is <0x0A>) and the 16 characters of the task,
#    one piece each (BPE with no merges: the vocabulary is full before the first one)
$PY scripts/arith_task.py spm-text "$OUT/spm.txt"
(cd "$OUT" && spm_train --input=spm.txt --model_prefix=arith --model_type=bpe --vocab_size=275 \
   --byte_fallback=true --add_dummy_prefix=false --normalization_rule_name=identity \
   --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 >/dev/null 2>&1)
# 2. training; exports $OUT/hf-STEP every --eval-every steps and $OUT/hf at the end
nice -n 10 $PY scripts/train_arith.py --out "$OUT" --minutes "$MINUTES"
# 3. the shipped file from the export chosen (STEP=N picks $OUT/hf-N; default the last)
HF=$OUT/hf
[[ -n "${STEP:-}" ]] && HF=$OUT/hf-$STEP
$BRAID convert "$HF" models/arith-jamba.gguf --type F16
