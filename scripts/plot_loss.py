#!/usr/bin/python3
# Draws the training and validation loss from train_tiny.py's log as a PNG for the model card.
# Usage: plot_loss.py build/train/train.log models/tiny-jamba-loss.png
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

train, valid = {}, {}
for line in open(sys.argv[1]):
    m = re.search(r" step (\d+) loss ([\d.]+) .*tokens ([\d.]+)M", line)
    if m:
        train[int(m.group(1))] = float(m.group(2))  # a resumed run re-logs steps: keep the last
    m = re.search(r"eval step (\d+) (?:tokens [\d.]+M )?valid_loss ([\d.]+)", line)
    if m:
        valid[int(m.group(1))] = float(m.group(2))
fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
ax.plot(sorted(train), [train[k] for k in sorted(train)], label="train (batch mean)", lw=1.2)
ax.plot(sorted(valid), [valid[k] for k in sorted(valid)], "o-", label="validation", lw=1.5)
ax.set_xlabel("step (8 x 256 tokens)")
ax.set_ylabel("cross-entropy (nats/token)")
ax.set_title("tiny-jamba training loss")
ax.grid(alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(sys.argv[2])
print("wrote", sys.argv[2])
