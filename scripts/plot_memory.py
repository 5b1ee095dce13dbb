#!/usr/bin/python3
# Draws docs' memory figure from `braid memory --csv` output: the measured points, then both curves
# extended by computation (per-token KV bytes) to longer contexts, clearly marked as computed.
"""Usage: plot_memory.py MEM.csv KV_PER_TOKEN ATTN_KV_PER_TOKEN MAX_CTX TITLE OUT.png"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

rows = list(csv.DictReader(open(sys.argv[1])))
kv_tok, attn_tok, max_ctx = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
title, out = sys.argv[5], sys.argv[6]
MiB = 1024.0 * 1024.0
ctx = [int(r["context"]) for r in rows]
hyb = [int(r["peak_rss_bytes"]) / MiB for r in rows]
att = [int(r["all_attention_peak_bytes"]) / MiB for r in rows]
# computed extension from the last measured point: only KV caches grow
last, ext = ctx[-1], []
c = last
while c < max_ctx:
    c *= 2
    ext.append(min(c, max_ctx))
hyb_e = [hyb[-1] + (x - last) * kv_tok / MiB for x in ext]
att_e = [att[-1] + (x - last) * attn_tok / MiB for x in ext]
fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
ax.loglog(ctx, hyb, "o-", color="#2c7fb8", label="hybrid (this model), measured peak RSS")
ax.loglog(ctx, att, "o-", color="#c0392b", label="all layers attention, computed from the measured run")
if ext:
    ax.loglog([last] + ext, [hyb[-1]] + hyb_e, "--", color="#2c7fb8", label="hybrid, computed beyond measurement")
    ax.loglog([last] + ext, [att[-1]] + att_e, "--", color="#c0392b", label="all attention, computed beyond measurement")
ax.axhline(24 * 1024, color="gray", lw=0.8)
ax.text(ctx[0], 24 * 1024 * 1.05, "24 GiB (this machine)", color="gray", fontsize=8)
ax.set_xlabel("context length (tokens)")
ax.set_ylabel("resident memory (MiB)")
ax.set_title(title)
ax.grid(alpha=0.3, which="both")
ax.legend(fontsize=8, loc="center left")
fig.tight_layout()
fig.savefig(out)
print("wrote", out)
