#!/usr/bin/python3
# Independent float64 PyTorch reference of the Jamba forward pass, with its own GGUF reader.
# Writes the golden logits (.golden) the C tests compare braid's output against.
import argparse
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)  # the build machine is shared; the models here are tiny anyway

GGUF_MAGIC = b"GGUF"
GOLDEN_MAGIC = b"BRGL"
GOLDEN_VERSION = 1


def die(msg):
    sys.exit(f"reference.py: {msg}")


# ---------------------------------------------------------------- GGUF reader

class Reader:
    """Cursor over the file bytes; every read is bounds-checked so a truncated file fails cleanly."""

    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def take(self, n):
        if n < 0 or self.pos + n > len(self.buf):
            die(f"bad file: truncated at byte {self.pos} (wanted {n} more)")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))[0]

    def string(self):
        return self.take(self.unpack("Q")).decode("utf-8", errors="replace")


SCALAR_FMT = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def read_value(r, vtype):
    if vtype in SCALAR_FMT:
        return r.unpack(SCALAR_FMT[vtype])
    if vtype == 8:
        return r.string()
    if vtype == 9:
        etype, n = r.unpack("I"), r.unpack("Q")
        return [read_value(r, etype) for _ in range(n)]
    die(f"bad file: unknown metadata value type {vtype}")


def f16_to_f64(raw, n):
    return np.frombuffer(raw, dtype="<f2", count=n).astype(np.float64)


def bf16_to_f64(raw, n):
    # bf16 is the top half of an f32, so widening is a 16-bit shift
    hi = np.frombuffer(raw, dtype="<u2", count=n).astype(np.uint32) << 16
    return hi.view(np.float32).astype(np.float64)


def f32_to_f64(raw, n):
    return np.frombuffer(raw, dtype="<f4", count=n).astype(np.float64)


# ggml type id -> (bytes per element, decoder)
TENSOR_TYPES = {0: (4, f32_to_f64), 1: (2, f16_to_f64), 30: (2, bf16_to_f64)}


def read_gguf(path):
    """Returns (metadata dict, {name: float64 numpy array in reversed-ne shape}, raw file bytes)."""
    try:
        with open(path, "rb") as f:
            buf = f.read()
    except OSError as e:
        die(f"cannot read {path}: {e.strerror}")
    r = Reader(buf)
    if r.take(4) != GGUF_MAGIC:
        die(f"bad file: {path} is not GGUF (wrong magic)")
    version = r.unpack("I")
    if version not in (2, 3):
        die(f"bad file: unsupported GGUF version {version}")
    n_tensors, n_kv = r.unpack("Q"), r.unpack("Q")
    meta = {}
    for _ in range(n_kv):
        key = r.string()
        meta[key] = read_value(r, r.unpack("I"))
    infos = []
    for _ in range(n_tensors):
        name = r.string()
        n_dims = r.unpack("I")
        ne = [r.unpack("Q") for _ in range(n_dims)]
        infos.append((name, ne, r.unpack("I"), r.unpack("Q")))
    align = int(meta.get("general.alignment", 32))
    data_start = (r.pos + align - 1) // align * align
    tensors = {}
    for name, ne, ttype, offset in infos:
        if ttype not in TENSOR_TYPES:
            die(f"bad file: tensor {name} has unsupported ggml type {ttype}")
        size, decode = TENSOR_TYPES[ttype]
        n = int(np.prod(ne)) if ne else 1
        start = data_start + offset
        if start + n * size > len(buf):
            die(f"bad file: tensor {name} runs past the end of the file")
        tensors[name] = decode(buf[start:start + n * size], n).reshape(tuple(reversed(ne)))
    return meta, tensors, buf


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


# ---------------------------------------------------------------- model loading

class Layer:
    pass


class Model:
    pass


def load_model(path):
    meta, tensors, buf = read_gguf(path)
    arch = meta.get("general.architecture")
    if arch != "jamba":
        die(f"unsupported architecture {arch!r} (only 'jamba')")

    def key(name):
        full = "jamba." + name
        if full not in meta:
            die(f"missing metadata key {full}")
        return meta[full]

    def tensor(name, shape):
        if name not in tensors:
            die(f"missing tensor {name}")
        t = tensors[name]
        if t.shape != tuple(shape):
            die(f"tensor {name} has shape {t.shape}, expected {tuple(shape)}")
        return torch.from_numpy(t)

    m = Model()
    m.fnv = fnv1a64(buf)
    m.n_embd, m.n_layer = int(key("embedding_length")), int(key("block_count"))
    m.n_ff, m.n_head = int(key("feed_forward_length")), int(key("attention.head_count"))
    m.eps = float(key("attention.layer_norm_rms_epsilon"))
    kv = key("attention.head_count_kv")
    m.n_kv = [int(v) for v in kv] if isinstance(kv, list) else [int(kv)] * m.n_layer
    if len(m.n_kv) != m.n_layer:
        die(f"bad file: head_count_kv has {len(m.n_kv)} entries for {m.n_layer} layers")
    if "token_embd.weight" not in tensors:
        die("missing tensor token_embd.weight")
    m.n_vocab = tensors["token_embd.weight"].shape[0]
    E, V, FF = m.n_embd, m.n_vocab, m.n_ff
    m.embed = tensor("token_embd.weight", (V, E))
    m.out_norm = tensor("output_norm.weight", (E,))
    m.lm_head = tensor("output.weight", (V, E)) if "output.weight" in tensors else m.embed
    if m.n_head <= 0 or E % m.n_head:
        die(f"bad file: embedding_length {E} not divisible by head_count {m.n_head}")
    m.head_dim = E // m.n_head
    if any(n == 0 for n in m.n_kv):
        m.d_conv, m.d_inner = int(key("ssm.conv_kernel")), int(key("ssm.inner_size"))
        m.d_state, m.dt_rank = int(key("ssm.state_size")), int(key("ssm.time_step_rank"))
    m.layers = []
    for i in range(m.n_layer):
        L, p = Layer(), f"blk.{i}."
        L.attn_norm = tensor(p + "attn_norm.weight", (E,))
        L.ffn_norm = tensor(p + "ffn_norm.weight", (E,))
        L.is_attn = m.n_kv[i] > 0
        if L.is_attn:
            kvd = m.n_kv[i] * m.head_dim
            if m.n_head % m.n_kv[i]:
                die(f"layer {i}: {m.n_head} heads not divisible by {m.n_kv[i]} kv heads")
            L.n_kv = m.n_kv[i]
            L.wq = tensor(p + "attn_q.weight", (E, E))
            L.wk = tensor(p + "attn_k.weight", (kvd, E))
            L.wv = tensor(p + "attn_v.weight", (kvd, E))
            L.wo = tensor(p + "attn_output.weight", (E, E))
        else:
            DI, DS, R = m.d_inner, m.d_state, m.dt_rank
            L.ssm_in = tensor(p + "ssm_in.weight", (2 * DI, E))
            L.conv_w = tensor(p + "ssm_conv1d.weight", (DI, m.d_conv))
            L.conv_b = tensor(p + "ssm_conv1d.bias", (DI,))
            L.ssm_x = tensor(p + "ssm_x.weight", (R + 2 * DS, DI))
            L.dt_norm = tensor(p + "ssm_dt_norm.weight", (R,))
            L.b_norm = tensor(p + "ssm_b_norm.weight", (DS,))
            L.c_norm = tensor(p + "ssm_c_norm.weight", (DS,))
            L.dt_w = tensor(p + "ssm_dt.weight", (DI, R))
            L.dt_b = tensor(p + "ssm_dt.bias", (DI,))
            L.A = tensor(p + "ssm_a", (DI, DS))
            L.D = tensor(p + "ssm_d", (DI,))
            L.ssm_out = tensor(p + "ssm_out.weight", (E, DI))
        L.moe = (p + "ffn_gate_inp.weight") in tensors
        if L.moe:
            NE = int(key("expert_count"))
            L.top_k = int(key("expert_used_count"))
            if not 0 < L.top_k <= NE:
                die(f"bad file: expert_used_count {L.top_k} not in [1, {NE}]")
            L.router = tensor(p + "ffn_gate_inp.weight", (NE, E))
            L.gate = tensor(p + "ffn_gate_exps.weight", (NE, FF, E))
            L.up = tensor(p + "ffn_up_exps.weight", (NE, FF, E))
            L.down = tensor(p + "ffn_down_exps.weight", (NE, E, FF))
        else:
            L.gate = tensor(p + "ffn_gate.weight", (FF, E))
            L.up = tensor(p + "ffn_up.weight", (FF, E))
            L.down = tensor(p + "ffn_down.weight", (E, FF))
        m.layers.append(L)
    return m


# ---------------------------------------------------------------- full-sequence forward

def rmsnorm(v, w, eps):
    return w * v / torch.sqrt((v * v).mean(-1, keepdim=True) + eps)


def attention(m, L, u):
    T, H, KV, hd = u.shape[0], m.n_head, L.n_kv, m.head_dim
    q = (u @ L.wq.T).view(T, H, hd)
    # query head j reads kv head j // (H/KV): repeat each kv head H/KV times in place
    k = (u @ L.wk.T).view(T, KV, hd).repeat_interleave(H // KV, dim=1)
    v = (u @ L.wv.T).view(T, KV, hd).repeat_interleave(H // KV, dim=1)
    scores = torch.einsum("thd,shd->hts", q, k) / hd ** 0.5
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    probs = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    out = torch.einsum("hts,shd->thd", probs, v).reshape(T, H * hd)
    return out @ L.wo.T


def ssm_inputs(m, L, x):
    """From the post-conv activations x [T, d_inner]: delta [T, d_inner], B, C [T, d_state]."""
    R, DS = m.dt_rank, m.d_state
    p = x @ L.ssm_x.T
    dt = rmsnorm(p[:, :R], L.dt_norm, m.eps)
    B = rmsnorm(p[:, R:R + DS], L.b_norm, m.eps)
    C = rmsnorm(p[:, R + DS:], L.c_norm, m.eps)
    delta = F.softplus(dt @ L.dt_w.T + L.dt_b)
    return delta, B, C


def mamba(m, L, u):
    T, DI, K = u.shape[0], m.d_inner, m.d_conv
    xz = u @ L.ssm_in.T
    x, z = xz[:, :DI], xz[:, DI:]
    # causal depthwise conv: left-pad with K-1 zero rows, tap k sees x[t-(K-1)+k]
    xpad = torch.cat([torch.zeros(K - 1, DI, dtype=x.dtype), x])
    conv = L.conv_b + sum(L.conv_w[:, k] * xpad[k:k + T] for k in range(K))
    x = F.silu(conv)
    delta, B, C = ssm_inputs(m, L, x)
    h = torch.zeros(DI, m.d_state, dtype=x.dtype)
    ys = []
    for t in range(T):
        h = torch.exp(delta[t, :, None] * L.A) * h + (delta[t] * x[t])[:, None] * B[t][None, :]
        ys.append(h @ C[t] + L.D * x[t])
    y = torch.stack(ys)
    return (y * F.silu(z)) @ L.ssm_out.T


def swiglu(x, gate, up, down):
    return (F.silu(x @ gate.T) * (x @ up.T)) @ down.T


def ffn(L, x):
    if not L.moe:
        return swiglu(x, L.gate, L.up, L.down)
    p = torch.softmax(x @ L.router.T, dim=-1)
    # chosen weights are used as-is (no renormalisation over the top-k), as Jamba does
    weights, chosen = torch.topk(p, L.top_k, dim=-1)
    # every expert runs on every token (the models are tiny); unchosen ones get weight exactly 0
    w = torch.zeros_like(p).scatter(-1, chosen, weights)
    experts = torch.stack([swiglu(x, L.gate[e], L.up[e], L.down[e]) for e in range(p.shape[-1])], 1)
    return (w[:, :, None] * experts).sum(1)


def forward(m, tokens):
    """Logits [T, n_vocab] for every position of the token list, float64."""
    h = m.embed[torch.tensor(tokens, dtype=torch.long)]
    for L in m.layers:
        u = rmsnorm(h, L.attn_norm, m.eps)
        x = h + (attention(m, L, u) if L.is_attn else mamba(m, L, u))
        h = x + ffn(L, rmsnorm(x, L.ffn_norm, m.eps))
    return rmsnorm(h, m.out_norm, m.eps) @ m.lm_head.T


# ---------------------------------------------------------------- recurrent (one token at a time)
# Written separately from forward(): conv through a carried window, SSM through a carried
# state, attention through a growing KV cache. Agreement between the two catches indexing bugs
# in either that a single implementation cannot reveal.

class State:
    def __init__(self, m):
        self.conv, self.ssm, self.k, self.v = {}, {}, {}, {}
        for i, L in enumerate(m.layers):
            if L.is_attn:
                self.k[i], self.v[i] = [], []
            else:
                self.conv[i] = torch.zeros(m.d_conv - 1, m.d_inner, dtype=torch.float64)
                self.ssm[i] = torch.zeros(m.d_inner, m.d_state, dtype=torch.float64)


def attention_step(m, L, u, k_cache, v_cache):
    H, KV, hd = m.n_head, L.n_kv, m.head_dim
    q = (L.wq @ u).view(H, hd)
    k_cache.append((L.wk @ u).view(KV, hd))
    v_cache.append((L.wv @ u).view(KV, hd))
    out = torch.empty(H, hd, dtype=u.dtype)
    for j in range(H):
        g = j // (H // KV)
        keys = torch.stack([k[g] for k in k_cache])
        vals = torch.stack([v[g] for v in v_cache])
        out[j] = torch.softmax(keys @ q[j] / hd ** 0.5, dim=0) @ vals
    return L.wo @ out.reshape(-1)


def mamba_step(m, L, u, st, i):
    DI = m.d_inner
    xz = L.ssm_in @ u
    x, z = xz[:DI], xz[DI:]
    window = torch.cat([st.conv[i], x[None, :]])  # [d_conv, d_inner], oldest first
    st.conv[i] = window[1:]
    x = F.silu(L.conv_b + (window.T * L.conv_w).sum(-1))
    delta, B, C = (a[0] for a in ssm_inputs(m, L, x[None, :]))
    dA = torch.exp(torch.outer(delta, L.A.new_ones(m.d_state)) * L.A)
    st.ssm[i] = dA * st.ssm[i] + torch.outer(delta * x, B)
    y = st.ssm[i] @ C + L.D * x
    return L.ssm_out @ (y * F.silu(z))


def step(m, token, st):
    h = m.embed[token]
    for i, L in enumerate(m.layers):
        u = rmsnorm(h, L.attn_norm, m.eps)
        mix = attention_step(m, L, u, st.k[i], st.v[i]) if L.is_attn else mamba_step(m, L, u, st, i)
        x = h + mix
        h = x + ffn(L, rmsnorm(x, L.ffn_norm, m.eps)[None, :])[0]
    return rmsnorm(h, m.out_norm, m.eps) @ m.lm_head.T


# ---------------------------------------------------------------- commands

def random_tokens(n_vocab, n, seed):
    return [int(t) for t in np.random.default_rng(seed).integers(0, n_vocab, size=n)]


def greedy(m, tokens, n_gen):
    """Greedy continuation, plus the smallest top-1/top-2 logit gap seen: a tiny gap means a
    runtime with float32 rounding may legitimately pick the other token."""
    seq, out, margin = list(tokens), [], float("inf")
    for _ in range(n_gen):
        last = forward(m, seq)[-1].numpy()
        # np.argmax returns the first maximum, i.e. ties go to the lowest id
        nxt = int(np.argmax(last))
        if len(last) > 1:
            top2 = np.partition(last, -2)[-2:]
            margin = min(margin, float(top2[1] - top2[0]))
        out.append(nxt)
        seq.append(nxt)
    return out, margin


def cmd_golden(a):
    m = load_model(a.model)
    tokens = random_tokens(m.n_vocab, a.n_tokens, a.seed)
    logits = forward(m, tokens).numpy()
    gen, margin = greedy(m, tokens, a.n_gen)
    with open(a.out, "wb") as f:
        f.write(GOLDEN_MAGIC + struct.pack("<IIIIQ", GOLDEN_VERSION, m.n_vocab, len(tokens), len(gen), m.fnv))
        f.write(np.asarray(tokens, dtype="<i4").tobytes())
        f.write(logits.astype("<f4").tobytes())
        f.write(np.asarray(gen, dtype="<i4").tobytes())
    print(f"{a.out}: vocab {m.n_vocab}, {len(tokens)} tokens, {len(gen)} generated, "
          f"fnv {m.fnv:016x}, greedy head {gen[:8]}, min greedy margin {margin:.3g}")


def cmd_logits(a):
    m = load_model(a.model)
    try:
        tokens = [int(t) for t in a.tokens.split(",") if t.strip()]
    except ValueError:
        die(f"bad --tokens {a.tokens!r}: expected comma-separated ids")
    if not tokens or any(t < 0 or t >= m.n_vocab for t in tokens):
        die(f"--tokens must be a non-empty list of ids in [0, {m.n_vocab})")
    last = forward(m, tokens)[-1]
    vals, ids = torch.topk(last, min(10, m.n_vocab))
    for v, i in zip(vals.tolist(), ids.tolist()):
        print(f"{i:8d} {v:+.9f}")


def cmd_check(a):
    m = load_model(a.model)
    tokens = random_tokens(m.n_vocab, a.n_tokens, a.seed)
    full = forward(m, tokens)
    st = State(m)
    stepped = torch.stack([step(m, t, st) for t in tokens])
    diff = (full - stepped).abs().max().item()
    scale = full.abs().max().item()
    kinds = "".join("A" if L.is_attn else "M" for L in m.layers)
    moe = "".join("E" if L.moe else "." for L in m.layers)
    print(f"layers {kinds} ffn {moe}  tokens {len(tokens)}  max|logit| {scale:.4g}  "
          f"max|full-step| {diff:.3g}")
    if not diff <= a.tol * max(1.0, scale):
        die(f"full-sequence and step-by-step logits disagree by {diff:.3g}")


def main():
    ap = argparse.ArgumentParser(description="Jamba float64 reference")
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("golden", help="write golden logits for MODEL to OUT")
    g.add_argument("model")
    g.add_argument("out")
    g.add_argument("--n-tokens", type=int, default=128)
    g.add_argument("--n-gen", type=int, default=64)
    g.add_argument("--seed", type=int, default=1234)
    lg = sub.add_parser("logits", help="print top-10 logits after the given tokens")
    lg.add_argument("model")
    lg.add_argument("--tokens", required=True)
    c = sub.add_parser("check", help="compare full-sequence and recurrent forward passes")
    c.add_argument("model")
    c.add_argument("--n-tokens", type=int, default=48)
    c.add_argument("--seed", type=int, default=1234)
    c.add_argument("--tol", type=float, default=1e-9)
    a = ap.parse_args()
    if getattr(a, "n_tokens", 1) < 1 or getattr(a, "n_gen", 0) < 0:
        die("--n-tokens must be >= 1 and --n-gen >= 0")
    {"golden": cmd_golden, "logits": cmd_logits, "check": cmd_check}[a.cmd](a)


if __name__ == "__main__":
    main()
