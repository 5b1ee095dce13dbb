#!/usr/bin/python3
# Writes tests/fixtures/hf_tiny/ (a small Hugging Face Jamba checkpoint made by train_tiny.py's own
# PyTorch model) and tests/fixtures/hf_tiny.golden (that model's logits), for the convert round trip.
"""Usage: scripts/make_hf_fixture.py [OUT_DIR=tests/fixtures]

The model is train_tiny.py's JambaLM with random weights (seeded), scaled up from the training
initialisation so that its logits are spread out and greedy choices are well separated. braid's
test converts the directory with `braid convert` and compares the runtime's logits with these.
"""
import os
import sys
import types

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_tiny as tt  # noqa: E402

out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures"
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
tok_model = os.path.join(root, "tests/fixtures/tok/test.model")
vocab = tt.Tok(tok_model).vocab

args = types.SimpleNamespace(hidden=32, intermediate=64, layers=9, heads=4, kv_heads=2, attn_period=9,
                             attn_offset=4, vocab=vocab)
cfg = tt.make_config(args)
torch.manual_seed(7)
model = tt.JambaLM(cfg)
model.init_weights(7)
with torch.no_grad():
    for name, p in model.named_parameters():
        # training's 0.02 init leaves logits nearly flat; 10x gives a model with opinions
        if name.endswith("proj.weight") and "dt_proj" not in name or name.endswith(("embed_tokens.weight", "lm_head.weight")):
            p.mul_(10.0)
        if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
            p.add_(0.1 * torch.randn_like(p))
hf = os.path.join(out, "hf_tiny")
tt.export_hf(model, hf, tok_model)
tt.dump_logits(hf, os.path.join(out, "hf_tiny.golden"), os.path.join(root, "README.md"), n_tokens=96, n_gen=32)
