#!/usr/bin/python3
# Draws docs' memory figure from `braid memory --csv` output: the measured points, then both curves
# extended by computation (per-token KV bytes) to longer contexts, clearly marked as computed.
"""Usage: plot_memory.py MEM.csv KV_PER_TOKEN ATTN_KV_PER_TOKEN MAX_CTX TITLE OUT.png"""
import csv
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator  # noqa: E402

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
# measured: solid with markers; computed: dashed, no markers; the legend says which
ax.loglog(ctx, hyb, "o-", color="#2c7fb8", label="measured: hybrid (this model), peak RSS")
ax.loglog(ctx, att, "--", color="#c0392b", label="computed: all layers attention (the measured run + every layer's KV)")
if ext:
    ax.loglog([last] + ext, [hyb[-1]] + hyb_e, "--", color="#2c7fb8", label="computed: hybrid beyond the measurement")
    ax.loglog([last] + ext, [att[-1]] + att_e, "--", color="#c0392b")
near_limit = max(att + att_e) > 24 * 1024 / 4
if near_limit:  # the machine's memory, where the curves come near it
    ax.axhline(24 * 1024, color="gray", lw=0.8)
    ax.text(ctx[0], 24 * 1024 * 1.05, "24 GiB (this machine)", color="gray", fontsize=8)
ax.set_xlabel("context length (tokens, log scale)")
ax.set_ylabel("resident memory (MiB, log scale)")
ax.set_title(title)
# values readable off the axis: minor gridlines at 1-9 x 10^k, labelled
plain = FuncFormatter(lambda v, _: "%g" % v)
ax.yaxis.set_major_formatter(plain)
ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)))
lo, hi = ax.get_ylim()
labelled = range(2, 10) if math.log10(hi / lo) < 2 else (2, 5)  # every minor tick when few decades show
ax.yaxis.set_minor_formatter(
    FuncFormatter(lambda v, _: "%g" % v if round(v / 10 ** math.floor(math.log10(v))) in labelled else ""))
ax.tick_params(axis="y", which="minor", labelsize=7)
ax.grid(which="major", alpha=0.45)
ax.grid(which="minor", alpha=0.15)
ax.legend(fontsize=8, loc="center left" if near_limit else "upper left")
fig.tight_layout()
fig.savefig(out)
print("wrote", out)
