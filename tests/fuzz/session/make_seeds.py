#!/usr/bin/env python3
"""Writes seed session files for fuzz_session (the tiny model there: layers M, A; KV row 4 floats; SSM
state 192 bytes). Fingerprint and checksum are left zero: the harness patches them in."""
import os, random, struct
here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
os.makedirs(here, exist_ok=True)
KV_DIM, SSM = 4, 16 * (2 - 1 + 2) * 4
def session(n_past, window, kv_first, seed):
    r = random.Random(seed)
    head = b"BRAIDSEQ" + struct.pack("<IIQiiiIQ", 1, 2, 0, n_past, window, kv_first, 0, SSM)
    toks = struct.pack("<%di" % n_past, *[r.randrange(16) for _ in range(n_past)])
    rows = n_past - kv_first
    kv = struct.pack("<%df" % (2 * rows * KV_DIM), *[r.uniform(-1, 1) for _ in range(2 * rows * KV_DIM)])
    st = struct.pack("<%df" % (SSM // 4), *[r.uniform(-1, 1) for _ in range(SSM // 4)])
    return head + toks + kv + st + b"\0" * 8
for name, args in {"empty": (0, 0, 0, 1), "five": (5, 0, 0, 2), "full": (40, 0, 0, 3),
                   "window": (30, 8, 23, 4)}.items():
    with open(os.path.join(here, name + ".session"), "wb") as f:
        f.write(session(*args))
