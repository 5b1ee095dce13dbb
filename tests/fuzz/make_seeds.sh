#!/usr/bin/env bash
# Writes the fuzz harnesses' seed corpora (committed; regenerate after a format change):
# tiny models from `braid synth`, the tokenizer fixtures, and small converter inputs.
# Usage: tests/fuzz/make_seeds.sh BUILD/tools/braid
set -euo pipefail
braid=$(realpath "$1")
here=$(cd "$(dirname "$0")" && pwd)
fx=$here/../fixtures
cd "$here"

# shapes as small as the loader allows, one per code path: plain, MoE + F16, tied + BF16, GQA
tiny=(--layers 2 --hidden 8 --heads 2 --kv-heads 1 --ffn 8 --vocab 16 --d-state 2 --d-conv 2 --dt-rank 1 --plan MA)
mkdir -p gguf_model/corpus tok_gguf/corpus tok_model/corpus convert/corpus
"$braid" synth gguf_model/corpus/ma_f32.gguf "${tiny[@]}" --seed 1 >/dev/null
"$braid" synth gguf_model/corpus/moe_f16.gguf "${tiny[@]}" --type F16 --experts 2 --experts-used 1 --moe-plan EE --seed 2 >/dev/null
"$braid" synth gguf_model/corpus/tied_bf16.gguf "${tiny[@]}" --tied --type BF16 --seed 3 >/dev/null
"$braid" synth gguf_model/corpus/gqa.gguf --layers 3 --hidden 8 --heads 4 --kv-heads 2 --ffn 8 --vocab 16 \
  --d-state 2 --d-conv 3 --dt-rank 1 --plan AMA --seed 4 >/dev/null

# GGUF vocabularies: unigram, BPE and one with a normalizer charsmap
for m in test bpe norm; do
  "$braid" synth tok_gguf/corpus/$m.gguf "${tiny[@]}" --hidden 2 --heads 1 --ffn 2 --vocab-model "$fx/tok/$m.model" \
    --seed 5 >/dev/null
done
for m in test bpe norm; do cp "$fx/tok/$m.model" tok_model/corpus/$m.model; done

cp "$fx/hf_tiny/config.json" convert/corpus/config.json
python3 - <<'PY'
import json, struct
def st(path, tensors, meta=True):
    hdr, data = {}, b""
    if meta: hdr["__metadata__"] = {"format": "pt"}
    for name, (dt, shape, es) in tensors.items():
        n = es
        for d in shape: n *= d
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + n]}
        data += bytes((i * 37 + 11) % 256 for i in range(n))
    h = json.dumps(hdr, separators=(",", ":")).encode()
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + data)
st("convert/corpus/f32.safetensors", {"model.embed_tokens.weight": ("F32", [4, 2], 4), "model.final_layernorm.weight": ("F32", [2], 4)})
st("convert/corpus/f16_bf16.safetensors", {"a": ("F16", [3, 1, 2], 2), "b": ("BF16", [2], 2), "c": ("F32", [], 4)}, meta=False)
json.dump({"metadata": {"total_size": 40}, "weight_map": {"a": "model-00001-of-00002.safetensors",
           "b": "model-00002-of-00002.safetensors"}}, open("convert/corpus/index.json", "w"))
PY
du -sh "$here"/*/corpus
