# Trains a tiny Jamba (attention + Mamba-1 hybrid) language model on CPU with plain PyTorch and exports it
# as a Hugging Face Jamba checkpoint directory; also dumps golden logits (BRGL) for the C runtime's tests.
"""braid tiny-Jamba trainer.

Pipeline (scripts/train_all.sh runs all of it):
  1. scripts/fetch_corpus.sh build/corpus
       -> build/corpus/train.txt, valid.txt (documents separated by a line holding only "\\f";
          2% of documents held out by hash of their id), chat_train.txt (ChatML conversations).
  2. spm_train (BPE, vocab 4096, byte_fallback, identity normalisation, pad -1 / unk 0 / bos 1 / eos 2,
     control pieces <|im_start|> 3 and <|im_end|> 4) -> build/train/tokenizer.model
  3. scripts/train_tiny.py --corpus build/corpus --tokenizer build/train/tokenizer.model --minutes M
       Encodes the corpus once (cached as build/train/{train,valid,chat_train}.u16): each document is
       encoded as one text, as braid and llama.cpp encode a prompt (see Tok), and wrapped in BOS ... EOS;
       --chat-frac of the batch rows are windows of the chat stream. Logs tokens seen, tokens/s and
       validation loss, perplexity and bits per byte. Trains with AdamW + warmup + cosine decay; the total step count is
       planned from the measured step time so the run ends inside the wall-clock budget M, then
       evaluates the full validation set and exports to build/train/hf/.
       Logs: build/train/train.log. Checkpoint: build/train/ckpt.pt (use --resume after a crash; the
       --minutes budget then counts from the restart).
  4. --export DIR         export the checkpoint (build/train/ckpt.pt) as an HF Jamba directory
                          (config.json, model.safetensors in F32, tokenizer.model).
  5. --dump-logits HF_DIR OUT.golden --tokens-from TEXT
                          reload the exported directory (own safetensors reader), take BOS + the first
                          tokens of TEXT (128 in all), write float64-computed logits at every position and
                          a 32-token greedy continuation in the BRGL format read by the C tests.
  --selftest              gradcheck the hand-written selective-scan backward against autograd, and the fused
                          C scan (scripts/selective_scan.c, built on first use; BRAID_TORCH_SCAN=1 skips it)
                          against the torch one.

Model math (the C runtime implements exactly this): per layer h -> x = h + mixer(rmsnorm(h));
h = x + ffn(rmsnorm(x)); attention layers are those with i % attn_layer_period == attn_layer_offset,
the rest are Mamba-1 mixers with RMS-normed dt/B/C (Jamba style); no positional encoding anywhere.
"""
import argparse
import json
import math
import os
import struct
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(2)

BOS, EOS, UNK = 1, 2, 0


# ----------------------------------------------------------------------------- config

def make_config(args):
    h = args.hidden
    return {
        "architectures": ["JambaForCausalLM"],
        "model_type": "jamba",
        "vocab_size": args.vocab,
        "hidden_size": h,
        "intermediate_size": args.intermediate or 2 * h,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads,
        "num_key_value_heads": args.kv_heads,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "initializer_range": 0.02,
        "tie_word_embeddings": False,
        "attn_layer_period": args.attn_period,
        "attn_layer_offset": args.attn_offset,
        "expert_layer_period": 1,
        "expert_layer_offset": 0,
        "num_experts": 1,
        "num_experts_per_tok": 1,
        "mamba_d_state": 16,
        "mamba_d_conv": 4,
        "mamba_expand": 2,
        "mamba_dt_rank": math.ceil(h / 16),
        "mamba_conv_bias": True,
        "mamba_proj_bias": False,
        "use_mamba_kernels": False,
        # No positional encoding, so this only bounds what a runtime should plan for; trained at seq_len.
        "max_position_embeddings": 4096,
        "sliding_window": None,
        "bos_token_id": BOS,
        "eos_token_id": EOS,
        "pad_token_id": None,
        "use_cache": True,
        "output_router_logits": False,
        "router_aux_loss_coef": 0.001,
        "num_logits_to_keep": 1,
        "torch_dtype": "float32",
        "transformers_version": "4.40.0",
    }


def is_attn(cfg, i):
    return i % cfg["attn_layer_period"] == cfg["attn_layer_offset"]


# ----------------------------------------------------------------------------- selective scan

def scan_reference(x, delta, A, B, C):
    """Plain loop; autograd-differentiable. x, delta: [b,T,d]; A: [d,n]; B, C: [b,T,n] -> y [b,T,d]."""
    b, T, d = x.shape
    h = x.new_zeros(b, d, A.shape[1])
    ys = []
    for t in range(T):
        dA = torch.exp(delta[:, t, :, None] * A)
        h = dA * h + (delta[:, t, :, None] * x[:, t, :, None]) * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1))
    return torch.stack(ys, 1)


class SelectiveScan(torch.autograd.Function):
    """Sequential scan with a hand-written reverse-time backward.

    Autograd through the Python loop records O(T) tiny graph nodes and is ~100x slower; here the
    forward keeps every state h_t (time-major, so each step touches contiguous memory) and the
    backward runs the adjoint recurrence g_t = C_t*gy_t + exp(delta_{t+1}A) g_{t+1} once.
    """

    @staticmethod
    def forward(ctx, x, delta, A, B, C):
        xt, dt_ = x.transpose(0, 1).contiguous(), delta.transpose(0, 1).contiguous()   # [T,b,d]
        Bt, Ct = B.transpose(0, 1).contiguous(), C.transpose(0, 1).contiguous()        # [T,b,n]
        dA = torch.exp(dt_.unsqueeze(-1) * A)                                           # [T,b,d,n]
        hs = (dt_ * xt).unsqueeze(-1) * Bt.unsqueeze(2)                                 # dBx, becomes h
        for t in range(1, hs.shape[0]):
            hs[t].addcmul_(dA[t], hs[t - 1])
        y = torch.einsum("tbdn,tbn->tbd", hs, Ct)
        ctx.save_for_backward(xt, dt_, A, Bt, Ct, hs)
        return y.transpose(0, 1)

    @staticmethod
    def backward(ctx, gy):
        xt, dt_, A, Bt, Ct, hs = ctx.saved_tensors
        gyt = gy.transpose(0, 1).contiguous()
        dA = torch.exp(dt_.unsqueeze(-1) * A)
        G = gyt.unsqueeze(-1) * Ct.unsqueeze(2)                                         # dL/dh_t, direct part
        for t in range(G.shape[0] - 2, -1, -1):
            G[t].addcmul_(dA[t + 1], G[t + 1])
        gC = torch.einsum("tbdn,tbd->tbn", hs, gyt)
        # dL/d(dA_t) = G_t * h_{t-1}; reuse dA's buffer for (dL/d dA_t) * dA_t.
        s = dA
        s[1:].mul_(G[1:]).mul_(hs[:-1])
        s[0].zero_()
        gdelta = torch.einsum("tbdn,dn->tbd", s, A)
        gA = torch.einsum("tbdn,tbd->dn", s, dt_)
        gdx = torch.einsum("tbdn,tbn->tbd", G, Bt)                                      # d/d(delta*x)
        gB = torch.einsum("tbdn,tbd->tbn", G, dt_ * xt)
        gdelta = gdelta + gdx * xt
        gx = gdx * dt_
        tr = lambda v: v.transpose(0, 1)
        return tr(gx), tr(gdelta), gA, tr(gB), tr(gC)


_SCAN_LIB = None   # ctypes handle of scripts/selective_scan.c once built; False when it cannot be built


def scan_lib():
    """Builds scripts/selective_scan.c (once, cached by source hash under ~/.cache/braid) and loads it.

    The torch SelectiveScan below spends most of a training step copying [T,b,d,n] tensors between einsum
    layouts; the fused C loops keep one row's d x n state in cache and run ~10x faster on the CPU. Returns
    None (and the torch path is used) when no C compiler is available or BRAID_TORCH_SCAN=1.
    """
    global _SCAN_LIB
    if _SCAN_LIB is None:
        _SCAN_LIB = False
        if os.environ.get("BRAID_TORCH_SCAN") == "1":
            return None
        import ctypes
        import hashlib
        src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "selective_scan.c")
        flags = ["-O3", "-march=native", "-ffast-math", "-fopenmp", "-shared", "-fPIC"]
        try:
            with open(src, "rb") as f:
                key = hashlib.sha256(f.read() + " ".join(flags).encode()).hexdigest()[:16]
            cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "braid")
            so = os.path.join(cache, "selective_scan-%s.so" % key)
            if not os.path.exists(so):
                os.makedirs(cache, exist_ok=True)
                tmp = "%s.%d.tmp" % (so, os.getpid())
                subprocess.run([os.environ.get("CC", "cc")] + flags + ["-o", tmp, src, "-lm"], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                os.replace(tmp, so)
            lib = ctypes.CDLL(so)
        except (OSError, subprocess.CalledProcessError) as e:
            print("selective_scan.c not built (%s); using the torch scan" % e, file=sys.stderr)
            return None
        P, I = ctypes.c_void_p, ctypes.c_int
        for name in ("scan_fwd_f32", "scan_fwd_f64"):
            getattr(lib, name).argtypes = [I] * 5 + [P] * 7
        for name in ("scan_bwd_f32", "scan_bwd_f64"):
            getattr(lib, name).argtypes = [I] * 5 + [P] * 13
        _SCAN_LIB = lib
    return _SCAN_LIB or None


class SelectiveScanC(torch.autograd.Function):
    """The same recurrence and adjoint as SelectiveScan, each direction one fused C call (float32/64, CPU)."""

    @staticmethod
    def forward(ctx, x, delta, A, B, C):
        lib = scan_lib()
        x, delta, A, B, C = (v.contiguous() for v in (x, delta, A, B, C))
        b, T, d = x.shape
        n = A.shape[1]
        y = x.new_empty(b, T, d)
        hs = x.new_empty(b, T, d, n)
        f = lib.scan_fwd_f32 if x.dtype == torch.float32 else lib.scan_fwd_f64
        f(torch.get_num_threads(), b, T, d, n, *(v.data_ptr() for v in (x, delta, A, B, C, y, hs)))
        ctx.save_for_backward(x, delta, A, B, C, hs)
        return y

    @staticmethod
    def backward(ctx, gy):
        lib = scan_lib()
        x, delta, A, B, C, hs = ctx.saved_tensors
        gy = gy.contiguous()
        b, T, d = x.shape
        n = A.shape[1]
        gx, gdelta = torch.empty_like(x), torch.empty_like(x)
        gB, gC = torch.empty_like(B), torch.empty_like(C)
        gA_part, carry = x.new_empty(b, d, n), x.new_empty(b, d, n)
        f = lib.scan_bwd_f32 if x.dtype == torch.float32 else lib.scan_bwd_f64
        f(torch.get_num_threads(), b, T, d, n, *(v.data_ptr() for v in (
            x, delta, A, B, C, hs, gy, gx, gdelta, gA_part, gB, gC, carry)))
        return gx, gdelta, gA_part.sum(0), gB, gC


def selective_scan(x, delta, A, B, C, exact=False):
    if exact:
        return scan_reference(x, delta, A, B, C)
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and scan_lib() is not None:
        return SelectiveScanC.apply(x, delta, A, B, C)
    return SelectiveScan.apply(x, delta, A, B, C)


# ----------------------------------------------------------------------------- model

class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, v):
        return self.weight * (v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + self.eps))


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h, nh, nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
        self.nh, self.nkv, self.hd = nh, nkv, h // nh
        self.q_proj = nn.Linear(h, nh * self.hd, bias=False)
        self.k_proj = nn.Linear(h, nkv * self.hd, bias=False)
        self.v_proj = nn.Linear(h, nkv * self.hd, bias=False)
        self.o_proj = nn.Linear(nh * self.hd, h, bias=False)

    def forward(self, x, exact=False):
        b, T, _ = x.shape
        q = self.q_proj(x).view(b, T, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, T, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, T, self.nkv, self.hd).transpose(1, 2)
        rep = self.nh // self.nkv                  # query head j uses kv head j // rep (HF repeat_kv)
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        return self.o_proj((att @ v).transpose(1, 2).reshape(b, T, -1))


class Mamba(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h = cfg["hidden_size"]
        di = cfg["mamba_expand"] * h
        n, r, k = cfg["mamba_d_state"], cfg["mamba_dt_rank"], cfg["mamba_d_conv"]
        eps = cfg["rms_norm_eps"]
        self.di, self.n, self.r, self.k = di, n, r, k
        self.in_proj = nn.Linear(h, 2 * di, bias=False)
        self.conv1d = nn.Conv1d(di, di, k, groups=di, padding=k - 1, bias=True)
        self.x_proj = nn.Linear(di, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, di, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(di, 1))
        self.D = nn.Parameter(torch.ones(di))
        self.out_proj = nn.Linear(di, h, bias=False)
        self.dt_layernorm = RMSNorm(r, eps)
        self.b_layernorm = RMSNorm(n, eps)
        self.c_layernorm = RMSNorm(n, eps)

    def forward(self, u, exact=False):
        b, T, _ = u.shape
        x, z = self.in_proj(u).chunk(2, dim=-1)
        x = self.conv1d(x.transpose(1, 2))[..., :T].transpose(1, 2)
        x = F.silu(x)
        dt, Bm, Cm = torch.split(self.x_proj(x), [self.r, self.n, self.n], dim=-1)
        dt = self.dt_layernorm(dt)
        Bm = self.b_layernorm(Bm)
        Cm = self.c_layernorm(Cm)
        delta = F.softplus(self.dt_proj(dt))
        A = -torch.exp(self.A_log)
        y = selective_scan(x, delta, A, Bm, Cm, exact) + self.D * x
        return self.out_proj(y * F.silu(z))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h, f = cfg["hidden_size"], cfg["intermediate_size"]
        self.gate_proj = nn.Linear(h, f, bias=False)
        self.up_proj = nn.Linear(h, f, bias=False)
        self.down_proj = nn.Linear(f, h, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, cfg, attn):
        super().__init__()
        eps = cfg["rms_norm_eps"]
        self.input_layernorm = RMSNorm(cfg["hidden_size"], eps)
        if attn:
            self.self_attn = Attention(cfg)
        else:
            self.mamba = Mamba(cfg)
        self.pre_ff_layernorm = RMSNorm(cfg["hidden_size"], eps)
        self.feed_forward = MLP(cfg)
        self.attn = attn

    def forward(self, h, exact=False):
        mixer = self.self_attn if self.attn else self.mamba
        x = h + mixer(self.input_layernorm(h), exact)
        return x + self.feed_forward(self.pre_ff_layernorm(x))


class Inner(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList(Layer(cfg, is_attn(cfg, i)) for i in range(cfg["num_hidden_layers"]))
        self.final_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])


class JambaLM(nn.Module):
    """Module names mirror HF JambaForCausalLM so state_dict keys are the checkpoint's tensor names."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = Inner(cfg)
        self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)

    def forward(self, ids, exact=False):
        h = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            h = layer(h, exact)
        return self.lm_head(self.model.final_layernorm(h))

    def init_weights(self, seed):
        g = torch.Generator().manual_seed(seed)
        std = self.cfg["initializer_range"]
        resid_std = std / math.sqrt(2 * self.cfg["num_hidden_layers"])  # GPT-2 style residual scaling
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "out_proj.weight", "down_proj.weight")):
                with torch.no_grad():
                    p.normal_(0, resid_std, generator=g)
            elif name.endswith(("proj.weight", "embed_tokens.weight", "lm_head.weight")) \
                    and "dt_proj" not in name:
                with torch.no_grad():
                    p.normal_(0, std, generator=g)
        for layer in self.model.layers:
            if layer.attn:
                continue
            m = layer.mamba
            with torch.no_grad():
                bound = m.r ** -0.5
                m.dt_proj.weight.uniform_(-bound, bound, generator=g)
                # Mamba's dt init: dt log-uniform in [1e-3, 1e-1], bias = softplus^{-1}(dt).
                dt = torch.exp(torch.rand(m.di, generator=g) * (math.log(0.1) - math.log(1e-3))
                               + math.log(1e-3)).clamp(min=1e-4)
                m.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
                m.A_log.copy_(torch.log(torch.arange(1, m.n + 1, dtype=torch.float32)).repeat(m.di, 1))
                m.D.fill_(1.0)


# ----------------------------------------------------------------------------- safetensors

def save_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        a = tensors[name].detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4")
        b = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)  # keeps the data section 8-byte aligned for mmap readers
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)


def load_safetensors(path):
    dt = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "BF16": None}
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        s, e = info["data_offsets"]
        if info["dtype"] == "BF16":
            raw = np.frombuffer(data[s:e], dtype="<u2").astype(np.uint32) << 16
            arr = raw.view(np.float32)
        else:
            arr = np.frombuffer(data[s:e], dtype=np.dtype(dt[info["dtype"]]).newbyteorder("<"))
        out[name] = torch.from_numpy(arr.astype(np.float32).reshape(info["shape"]))
    return out


# The standard ChatML template (as Hugging Face chat models ship it): braid convert copies it into the GGUF's
# tokenizer.chat_template, where chat front ends (braid's, llama.cpp's) recognise it as "chatml".
CHATML_TEMPLATE = ("{% for message in messages %}"
                   "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
                   "{% endfor %}"
                   "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def export_hf(model, out_dir, tokenizer_path):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(model.cfg, f, indent=2)
    save_safetensors(os.path.join(out_dir, "model.safetensors"), model.state_dict())
    if tokenizer_path and os.path.exists(tokenizer_path):
        with open(tokenizer_path, "rb") as fi, open(os.path.join(out_dir, "tokenizer.model"), "wb") as fo:
            fo.write(fi.read())
        tok = Tok(tokenizer_path)
        if "<|im_start|>" in tok.control and "<|im_end|>" in tok.control:
            with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
                json.dump({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                           "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
                           "chat_template": CHATML_TEMPLATE}, f, indent=2)


def load_hf(hf_dir):
    with open(os.path.join(hf_dir, "config.json")) as f:
        cfg = json.load(f)
    model = JambaLM(cfg)
    sd = load_safetensors(os.path.join(hf_dir, "model.safetensors"))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        sys.exit("checkpoint mismatch: missing %s unexpected %s" % (missing, unexpected))
    return model


# ----------------------------------------------------------------------------- tokenizer / data

CONTROL_RE = None   # set by Tok when the vocabulary has ChatML control pieces


class Tok:
    """SentencePiece via the python module (Debian python3-sentencepiece; scripts/deps.sh --train).

    encode_doc tokenizes a document as one text, the way braid and llama.cpp tokenize a prompt: a newline
    is the byte piece <0x0A> and the word after it has no leading-space piece. Control pieces present in
    the vocabulary (ChatML's <|im_start|> and <|im_end|>) are matched in the text and emitted as their ids;
    each text fragment between them is encoded on its own, so it gets SentencePiece's dummy-prefix space,
    as llama.cpp does for text that follows a special token.
    """

    def __init__(self, path):
        import re
        import sentencepiece as spm
        self.path = path
        self.sp = spm.SentencePieceProcessor(model_file=path)
        self.nl = self.sp.piece_to_id("<0x0A>")
        self.vocab = self.sp.get_piece_size()
        self.control = {self.sp.id_to_piece(i): i for i in range(self.vocab)
                        if self.sp.is_control(i) and i not in (BOS, EOS, UNK)}
        self.split_re = re.compile("(" + "|".join(re.escape(c) for c in self.control) + ")") \
            if self.control else None

    def encode_doc(self, text):
        if self.split_re is None:
            return self.sp.encode(text)
        ids = []
        for frag in self.split_re.split(text):
            if frag in self.control:
                ids.append(self.control[frag])
            elif frag:
                ids.extend(self.sp.encode(frag))
        return ids

    def decode(self, ids):
        return self.sp.decode([i for i in ids if i not in self.control.values()])


def encode_corpus(txt, tok, out):
    with open(txt, encoding="utf-8") as f:
        docs = f.read().split("\n\f\n")
    ids = []
    for d in docs:
        if d.strip():
            ids.append(BOS)
            ids.extend(tok.encode_doc(d))
            ids.append(EOS)
    arr = np.array(ids, dtype=np.uint16)
    arr.tofile(out)
    return arr


def load_tokens(args, tok, split):
    path = os.path.join(args.out, split + ".u16")
    if os.path.exists(path):
        return np.fromfile(path, dtype=np.uint16)
    return encode_corpus(os.path.join(args.corpus, split + ".txt"), tok, path)


def text_bytes(txt):
    """UTF-8 bytes of a split's documents (separators excluded): the denominator of bits per byte."""
    with open(txt, encoding="utf-8") as f:
        return sum(len(d.encode("utf-8")) for d in f.read().split("\n\f\n") if d.strip())


# ----------------------------------------------------------------------------- training

def log(args, msg):
    line = time.strftime("%H:%M:%S") + " " + msg
    print(line, flush=True)
    with open(os.path.join(args.out, "train.log"), "a") as f:
        f.write(line + "\n")


def evaluate(model, data, T, max_seqs, bs):
    """Mean next-token loss over non-overlapping windows; with max_seqs, a fixed subset of windows spread
    evenly over the split (the split is ordered by source, so the first windows would all be one source)."""
    n_all = (len(data) - 1) // T
    wins = list(range(n_all))
    if max_seqs and max_seqs < n_all:
        wins = sorted(set(np.linspace(0, n_all - 1, max_seqs).astype(int).tolist()))
    n = len(wins)
    tot, cnt = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, n, bs):
            idx = wins[i:i + bs]
            x = torch.stack([torch.from_numpy(data[j * T:j * T + T].astype(np.int64)) for j in idx])
            y = torch.stack([torch.from_numpy(data[j * T + 1:j * T + T + 1].astype(np.int64)) for j in idx])
            dev = next(model.parameters()).device
            x, y = x.to(dev), y.to(dev)
            logits = model(x)
            tot += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
            cnt += y.numel()
    model.train()
    return tot / max(cnt, 1), cnt


def lr_at(step, total, args):
    # --sched-start S: warmup and cosine count from step S (a continuation re-warms instead of jumping
    # from a decayed min-lr straight back to the middle of the old cosine).
    s0 = args.sched_start or 0
    step, total = step - s0, total - s0
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    p = min(1.0, (step - args.warmup) / max(1, total - args.warmup))
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * p))


class ThreadGovernor:
    """Picks 1 or 2 intra-op threads from how much CPU other processes used during the last step.

    The machine is shared and this job runs at nice 19: when another job holds a core, a 2-thread
    OpenMP barrier waits on a descheduled worker for every one of the scan's small ops, which measured
    ~6x slower than running single-threaded; when the machine is idle, 2 threads are faster.
    """

    def __init__(self, max_threads):
        self.max = max_threads
        self.hz = os.sysconf("SC_CLK_TCK")
        self.ncpu = os.cpu_count() or 1
        self.prev = self._sample()

    def _sample(self):
        try:
            with open("/proc/stat") as f:
                v = [int(t) for t in f.readline().split()[1:]]
            with open("/proc/self/stat") as f:
                own = f.read().rsplit(")", 1)[1].split()
            return time.time(), v[0] + v[1] + v[2] + v[5] + v[6] + v[7], int(own[11]) + int(own[12])
        except (OSError, ValueError, IndexError):
            return None

    def update(self):
        cur = self._sample()
        if cur is None or self.prev is None or self.max < 2:
            return torch.get_num_threads()
        wall = (cur[0] - self.prev[0]) * self.hz
        others = ((cur[1] - self.prev[1]) - (cur[2] - self.prev[2])) / max(wall, 1)
        self.prev = cur
        n = 1 if others > 0.5 else min(self.max, self.ncpu)
        if n != torch.get_num_threads():
            torch.set_num_threads(n)
        return n


def train(args):
    t_start = time.time()
    deadline = t_start + args.minutes * 60
    os.makedirs(args.out, exist_ok=True)
    tok = Tok(args.tokenizer)
    args.vocab = tok.vocab
    train_data = load_tokens(args, tok, "train")
    valid_data = load_tokens(args, tok, "valid")
    chat_data = None
    if args.chat_frac > 0:
        chat_data = load_tokens(args, tok, "chat_train")
    # bits per byte = nats per token / ln 2 * tokens per byte, the latter over the whole validation split
    tok_per_byte = len(valid_data) / text_bytes(os.path.join(args.corpus, "valid.txt"))
    log(args, "data: train %d tokens, chat %d tokens (fraction of rows %.2f), valid %d tokens, %.3f bytes/token "
        "(encode took %.1fs)" % (len(train_data), 0 if chat_data is None else len(chat_data), args.chat_frac,
                                 len(valid_data), 1 / tok_per_byte, time.time() - t_start))
    bpb = lambda nats: nats / math.log(2) * tok_per_byte

    ckpt_path = os.path.join(args.out, "ckpt.pt")
    step, rng_seed, total_steps = 0, args.seed, None
    if args.resume and os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, map_location="cpu")
        cfg = ck["cfg"]
        model = JambaLM(cfg)
        model.load_state_dict(ck["model"])
        step = ck["step"]
        if args.sched_start is not None and args.sched_start < 0:
            args.sched_start = step         # -1: the new schedule starts at the resumed step
        log(args, "resumed from step %d%s" % (step, "" if args.sched_start is None else
                                               ", schedule from step %d" % args.sched_start))
    else:
        cfg = make_config(args)
        model = JambaLM(cfg)
        model.init_weights(args.seed)
        ck = None
    # --device cuda: the same code on a GPU machine (weights initialised on the CPU first, so a seed gives
    # the same model on either); the optimiser state follows the parameters when loaded below.
    model.to(args.device)
    nparam = sum(p.numel() for p in model.parameters())
    log(args, "config: %s" % json.dumps({k: cfg[k] for k in (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "attn_layer_period", "attn_layer_offset", "mamba_d_state", "mamba_dt_rank")}))
    log(args, "params: %d (%.2f MB at F16)" % (nparam, nparam * 2 / 1e6))

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "A_log" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "A_log" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
    if ck is not None:
        opt.load_state_dict(ck["opt"])
    rng = np.random.default_rng(args.seed + step)

    T, bs = args.seq_len, args.batch
    step_times = []
    reserve = None          # seconds kept back for final eval + export, measured from the periodic evals
    last_ckpt = time.time()
    tokens_seen = ck.get("tokens", step * T * bs) if ck is not None else 0

    def save_ckpt():
        torch.save({"cfg": cfg, "model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                    "tokens": tokens_seen, "args": vars(args)}, ckpt_path + ".tmp")
        os.replace(ckpt_path + ".tmp", ckpt_path)

    gov = ThreadGovernor(args.threads)
    model.train()
    while True:
        now = time.time()
        if step_times:
            st = float(np.mean(step_times[-50:])) if len(step_times) > 3 else step_times[-1]
            if args.skip_final_eval:
                est_reserve = 30  # export only
            elif reserve is None:
                # Full validation costs about forward-only time (~1/3 of a train step per batch).
                n_val_batches = math.ceil(((len(valid_data) - 1) // T) / bs)
                est_reserve = n_val_batches * st / 3 + 30
            else:
                est_reserve = reserve
            remaining = deadline - now - est_reserve
            if len(step_times) >= 3 and (total_steps is None or len(step_times) % 10 == 0):
                new_total = step + max(1, int(remaining / st))
                if total_steps is None:
                    log(args, "plan: step %.2fs, reserve %.0fs -> total_steps %d (%.2fM tokens)"
                        % (st, est_reserve, new_total, new_total * T * bs / 1e6))
                total_steps = new_total
            if remaining < st * 0.5 or (total_steps is not None and step >= total_steps):
                break
        nthreads = gov.update()
        t0 = time.time()
        lr = lr_at(step, total_steps or 10 ** 9, args)
        for g in opt.param_groups:
            g["lr"] = lr
        rows = []
        for _ in range(bs):
            src = chat_data if chat_data is not None and rng.random() < args.chat_frac else train_data
            s0 = int(rng.integers(0, len(src) - T - 1))
            rows.append(src[s0:s0 + T + 1])
        batch = np.stack(rows).astype(np.int64)
        x, y = torch.from_numpy(batch[:, :-1]).to(args.device), torch.from_numpy(batch[:, 1:]).to(args.device)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        dt = time.time() - t0
        step += 1
        tokens_seen += T * bs
        if step > 1:          # first step includes allocator warm-up
            step_times.append(dt)
        if step % args.log_every == 0 or step <= 5:
            log(args, "step %d loss %.4f lr %.2e gnorm %.2f step_time %.2fs tok/s %.0f tokens %.2fM threads %d"
                % (step, loss.item(), lr, gn, dt, T * bs / dt, tokens_seen / 1e6, nthreads))
        if step % args.eval_every == 0:
            te = time.time()
            vl, _ = evaluate(model, valid_data, T, args.eval_seqs, bs)
            log(args, "eval step %d tokens %.2fM valid_loss %.4f ppl %.1f bpb %.4f (%.1fs)"
                % (step, tokens_seen / 1e6, vl, math.exp(vl), bpb(vl), time.time() - te))
            per_batch = (time.time() - te) / math.ceil(args.eval_seqs / bs)
            n_val_batches = math.ceil(((len(valid_data) - 1) // T) / bs)
            reserve = n_val_batches * per_batch * 1.2 + 30
            step_times.append(step_times[-1] if step_times else dt)  # keep the planner's count moving
        if time.time() - last_ckpt > args.ckpt_minutes * 60:
            save_ckpt()
            last_ckpt = time.time()

    save_ckpt()
    log(args, "training done: %d steps, %.2fM tokens, %.1f min" % (step, tokens_seen / 1e6, (time.time() - t_start) / 60))
    te = time.time()
    vl, cnt = evaluate(model, valid_data, T, 0, bs) if not args.skip_final_eval else (None, 0)
    if vl is not None:
        log(args, "final valid_loss %.4f ppl %.2f bpb %.4f over %d tokens (%.0fs)"
            % (vl, math.exp(vl), bpb(vl), cnt, time.time() - te))
    export_hf(model, os.path.join(args.out, "hf"), args.tokenizer)
    log(args, "exported to %s" % os.path.join(args.out, "hf"))


# ----------------------------------------------------------------------------- golden logits

def dump_logits(hf_dir, out_path, text_file, n_tokens=128, n_gen=32):
    model = load_hf(hf_dir).double().eval()
    tok = Tok(os.path.join(hf_dir, "tokenizer.model"))
    with open(text_file, encoding="utf-8") as f:
        text = f.read(20000)
    text = text.split("\n\f\n")[0]
    ids = ([BOS] + tok.encode_doc(text))[:n_tokens]
    with torch.no_grad():
        x = torch.tensor([ids])
        logits = model(x, exact=True)[0]
        gen, seq = [], list(ids)
        for _ in range(n_gen):
            last = model(torch.tensor([seq]), exact=True)[0, -1]
            nxt = int(torch.argmax(last).item())       # torch.argmax returns the first maximal index
            gen.append(nxt)
            seq.append(nxt)
    V = logits.shape[-1]
    with open(out_path, "wb") as f:
        f.write(b"BRGL")
        f.write(struct.pack("<IIII", 1, V, len(ids), n_gen))
        f.write(struct.pack("<Q", 0))
        f.write(np.asarray(ids, dtype="<i4").tobytes())
        f.write(logits.numpy().astype("<f4").tobytes())
        f.write(np.asarray(gen, dtype="<i4").tobytes())
    print("wrote %s: %d tokens, vocab %d, greedy %s" % (out_path, len(ids), V, gen))


# ----------------------------------------------------------------------------- self test

def selftest():
    global _SCAN_LIB
    torch.manual_seed(0)
    b, T, d, n = 2, 7, 3, 4
    x = torch.randn(b, T, d, dtype=torch.float64, requires_grad=True)
    delta = F.softplus(torch.randn(b, T, d, dtype=torch.float64)).requires_grad_()
    A = (-torch.rand(d, n, dtype=torch.float64) - 0.1).requires_grad_()
    B = torch.randn(b, T, n, dtype=torch.float64, requires_grad=True)
    C = torch.randn(b, T, n, dtype=torch.float64, requires_grad=True)
    ok = torch.autograd.gradcheck(SelectiveScan.apply, (x, delta, A, B, C), eps=1e-6, atol=1e-6)
    print("gradcheck SelectiveScan:", ok)
    ins = (x, delta, A, B, C)
    y1 = SelectiveScan.apply(*ins)
    y2 = scan_reference(*ins)
    w = torch.randn_like(y1)
    g1 = torch.autograd.grad((y1 * w).sum(), ins)
    g2 = torch.autograd.grad((y2 * w).sum(), ins)
    err = max([(y1 - y2).abs().max().item()] + [(a - c).abs().max().item() for a, c in zip(g1, g2)])
    print("max |fast - reference| (values and grads): %.3e" % err)
    # Whole-model check: fast scan path == exact loop path.
    ns = argparse.Namespace(vocab=64, hidden=32, intermediate=None, layers=4, heads=4, kv_heads=2,
                            attn_period=2, attn_offset=1)
    m = JambaLM(make_config(ns)).double()
    m.init_weights(1)
    ids = torch.randint(0, 64, (2, 9))
    e = (m(ids) - m(ids, exact=True)).abs().max().item()
    print("model fast vs exact max diff: %.3e" % e)
    ok_c = True
    if scan_lib() is not None:
        # The fused C scan: gradcheck in float64, then float32 at a training-like shape against the torch
        # SelectiveScan run in float64 (the float32 sums over n and T round differently: tolerance 1e-4
        # relative to each output's largest magnitude).
        ok_c = torch.autograd.gradcheck(SelectiveScanC.apply, ins, eps=1e-6, atol=1e-6)
        print("gradcheck SelectiveScanC:", ok_c)
        b, T, d, n = 3, 64, 48, 16
        x32 = torch.randn(b, T, d)
        d32 = F.softplus(torch.randn(b, T, d) - 2)
        A32 = -torch.exp(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(d, 1))
        B32, C32 = torch.randn(b, T, n), torch.randn(b, T, n)
        w = torch.randn(b, T, d)
        res = []
        for fn, dtp in ((SelectiveScanC.apply, torch.float32), (SelectiveScan.apply, torch.float64)):
            ins2 = [v.to(dtp).requires_grad_() for v in (x32, d32, A32, B32, C32)]
            yv = fn(*ins2)
            res.append([yv] + list(torch.autograd.grad((yv * w.to(dtp)).sum(), ins2)))
        rel = max(((a.double() - c).abs().max() / c.abs().max()).item() for a, c in zip(*res))
        print("float32 C scan vs float64 torch scan, max relative diff (values and grads): %.3e" % rel)
        # Whole float32 model: loss and parameter gradients with the C scan vs the torch scan (the old path).
        ns = argparse.Namespace(vocab=128, hidden=48, intermediate=None, layers=4, heads=4, kv_heads=2,
                                attn_period=4, attn_offset=1)
        m = JambaLM(make_config(ns))
        m.init_weights(2)
        ids = torch.randint(0, 128, (2, 65))
        grads = []
        for env in ("0", "1"):
            saved, _SCAN_LIB = _SCAN_LIB, (False if env == "1" else _SCAN_LIB)
            m.zero_grad()
            loss = F.cross_entropy(m(ids[:, :-1]).reshape(-1, 128), ids[:, 1:].reshape(-1))
            loss.backward()
            grads.append((loss.item(), [p.grad.clone() for p in m.parameters()]))
            _SCAN_LIB = saved
        gerr = max(((a - c).abs().max() / (c.abs().max() + 1e-12)).item() for a, c in zip(grads[0][1], grads[1][1]))
        lerr = abs(grads[0][0] - grads[1][0])
        print("float32 model, C scan vs torch scan: loss %.6f vs %.6f, max relative grad diff %.3e"
              % (grads[0][0], grads[1][0], gerr))
        ok_c = ok_c and rel < 1e-4 and gerr < 1e-4 and lerr < 1e-5
    else:
        print("selective_scan.c unavailable: fused scan not tested")
    if not (ok and ok_c and err < 1e-9 and e < 1e-9):
        sys.exit("SELFTEST FAILED")
    print("SELFTEST OK")


def main():
    # Every training step allocates and frees ~GBs of large activations; glibc serves those with
    # mmap/munmap and the resulting page faults cost as much as the maths on this machine. Keeping
    # them on a never-trimmed heap must be set before the allocator starts, hence the re-exec.
    if os.environ.get("BRAID_MALLOC_SET") != "1":
        env = dict(os.environ, BRAID_MALLOC_SET="1", MALLOC_MMAP_MAX_="0",
                   MALLOC_TRIM_THRESHOLD_="100000000000", MALLOC_TOP_PAD_="1000000000")
        os.execve(sys.executable, [sys.executable] + sys.argv, env)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="build/corpus", help="dir with train.txt / valid.txt")
    ap.add_argument("--tokenizer", default="build/train/tokenizer.model")
    ap.add_argument("--out", default="build/train", help="logs, token caches, ckpt.pt, hf/")
    ap.add_argument("--minutes", type=float, default=60, help="wall-clock budget incl. final eval+export")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--intermediate", type=int, default=None, help="FFN size (default 2*hidden)")
    ap.add_argument("--layers", type=int, default=18)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--attn-period", type=int, default=9)
    ap.add_argument("--attn-offset", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-lr", type=float, default=1e-4)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--log-every", type=int, default=5)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--eval-seqs", type=int, default=32, help="fixed validation subset for periodic evals")
    ap.add_argument("--ckpt-minutes", type=float, default=5)
    ap.add_argument("--threads", type=int, default=2, help="max torch threads (drops to 1 when CPU is contended)")
    ap.add_argument("--chat-frac", type=float, default=0.0,
                    help="fraction of batch rows drawn from chat_train.txt (ChatML conversations)")
    ap.add_argument("--device", default="cpu", help="torch device for training (cpu, cuda)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--skip-final-eval", action="store_true",
                    help="no full-validation pass at the end (on a busy CPU it costs ~1/3 of the budget; "
                         "scripts/eval_chat.py measures bits per byte with braid instead)")
    ap.add_argument("--sched-start", type=int, default=None, metavar="STEP",
                    help="with --resume: warmup + cosine run from STEP (-1: the resumed step) to the planned end")
    ap.add_argument("--selftest", action="store_true")
    ap.add_argument("--export", metavar="DIR", help="export build/train/ckpt.pt (under --out) as HF dir")
    ap.add_argument("--dump-logits", nargs=2, metavar=("HF_DIR", "OUT_GOLDEN"))
    ap.add_argument("--tokens-from", metavar="TEXT_FILE", help="text for --dump-logits")
    args = ap.parse_args()

    if args.selftest:
        selftest()
    elif args.dump_logits:
        if not args.tokens_from:
            ap.error("--dump-logits needs --tokens-from")
        dump_logits(args.dump_logits[0], args.dump_logits[1], args.tokens_from)
    elif args.export:
        ck = torch.load(os.path.join(args.out, "ckpt.pt"), map_location="cpu")
        model = JambaLM(ck["cfg"])
        model.load_state_dict(ck["model"])
        export_hf(model, args.export, args.tokenizer)
        print("exported step %d to %s" % (ck["step"], args.export))
    else:
        train(args)


if __name__ == "__main__":
    main()
