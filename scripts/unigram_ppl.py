#!/usr/bin/python3
# Unigram baseline for the model card: perplexity of a token stream under add-one-smoothed token
# frequencies counted on the training split. Usage: unigram_ppl.py TRAIN.u16 VOCAB IDS_FILE
"""TRAIN.u16: the training tokens as train_tiny.py caches them (uint16). IDS_FILE: the evaluated
tokens as `braid tokenize --ids` prints them (comma separated); the first token (BOS) is not scored,
as braid perplexity does not score it."""
import math
import sys

import numpy as np

train = np.fromfile(sys.argv[1], dtype=np.uint16)
vocab = int(sys.argv[2])
ids = [int(x) for x in open(sys.argv[3]).read().replace("\n", "").split(",") if x]
counts = np.bincount(train, minlength=vocab).astype(np.float64) + 1.0
logp = np.log(counts / counts.sum())
nll = -sum(logp[t] for t in ids[1:])
print("unigram perplexity: %.4f over %d tokens (add-one counts from %d training tokens)"
      % (math.exp(nll / (len(ids) - 1)), len(ids) - 1, len(train)))
