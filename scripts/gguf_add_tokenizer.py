#!/usr/bin/env python3
# Copies a GGUF file, adding the tokenizer.* keys of another GGUF: a random-weight model (braid synth) gets a
# tokenizer so braid serve and scripts/bench_serve.py can run it. Usage: gguf_add_tokenizer.py IN.gguf TOK.gguf OUT.gguf
import struct, sys, shutil
SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

def rd(f, fmt):
    return struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))

def skip_val(f, t):
    """returns the raw bytes of a value of type t"""
    start = f.tell()
    if t in SIZES:
        f.read(SIZES[t])
    elif t == 8:
        n, = rd(f, "Q"); f.read(n)
    elif t == 9:
        et, n = rd(f, "IQ")
        for _ in range(n):
            skip_val(f, et)
    else:
        raise SystemExit(f"type {t}")
    end = f.tell()
    f.seek(start)
    return f.read(end - start)

def read_kvs(f):
    magic = f.read(4); assert magic == b"GGUF"
    ver, nt, nkv = rd(f, "IQQ")
    kvs = []
    for _ in range(nkv):
        n, = rd(f, "Q"); key = f.read(n)
        t, = rd(f, "I")
        kvs.append((key, t, skip_val(f, t)))
    return ver, nt, kvs

src, tokf, out = sys.argv[1:4]
with open(tokf, "rb") as f:
    _, _, tkvs = read_kvs(f)
add = [kv for kv in tkvs if kv[0].startswith(b"tokenizer.")]
with open(src, "rb") as f:
    ver, nt, kvs = read_kvs(f)
    align = 32
    for k, t, raw in kvs:
        if k == b"general.alignment":
            align = struct.unpack("<I", raw)[0]
    tstart = f.tell()
    for _ in range(nt):
        n, = rd(f, "Q"); f.read(n)
        nd, = rd(f, "I"); f.read(8 * nd + 4 + 8)
    tinfo_end = f.tell()
    data_off = (tinfo_end + align - 1) // align * align
    f.seek(tstart)
    tinfo = f.read(tinfo_end - tstart)
    have = {k for k, _, _ in kvs}
    add = [kv for kv in add if kv[0] not in have]  # keys the model has already are kept as they are
    kvs = kvs + add
    with open(out, "wb") as o:
        o.write(b"GGUF" + struct.pack("<IQQ", ver, nt, len(kvs)))
        for k, t, raw in kvs:
            o.write(struct.pack("<Q", len(k)) + k + struct.pack("<I", t) + raw)
        o.write(tinfo)
        pos = o.tell()
        o.write(b"\0" * ((pos + align - 1) // align * align - pos))
        f.seek(data_off)
        shutil.copyfileobj(f, o, 64 << 20)
print("added", [k.decode() for k, _, _ in add])
