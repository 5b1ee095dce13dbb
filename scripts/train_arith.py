# Trains the search task model (models/arith-jamba.gguf): a tiny Jamba on scripts/arith_task.py's
# step-by-step arithmetic, with scripts/train_tiny.py's model, selective scan and HF export.
"""Usage:
  spm_train ... (see scripts/make_arith.sh)  -> OUT/arith.model, OUT/arith.vocab (character vocabulary)
  train_arith.py --out OUT --minutes M [--hidden 128 --layers 4 ...]
Every batch is fresh problems with 2..5 operands (generator seed per step, held-out problems use other
seeds); the loss counts only the solution tokens. The learning-rate schedule is planned from the
measured step time to end inside the budget. Every --eval-every steps it decodes greedily (in PyTorch)
200 held-out 4-operand problems and exports OUT/hf-STEP/ so a checkpoint in the wanted accuracy band
can be picked afterwards; OUT/hf/ is the last one.
"""
import argparse
import math
import os
import random
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import arith_task as at  # noqa: E402
import train_tiny as tt  # noqa: E402


class CharTok:
    """The character vocabulary spm_train wrote (OUT/arith.vocab: one piece a line, in id order); a newline
    is the byte piece <0x0A>, as SentencePiece with byte fallback (and braid) encode it."""

    def __init__(self, vocab_path):
        with open(vocab_path, encoding="utf-8") as f:
            pieces = [ln.split("\t")[0] for ln in f.read().splitlines()]
        self.n = len(pieces)
        self.id = {p: i for i, p in enumerate(pieces)}
        self.id["\n"] = self.id["<0x0A>"]
        self.piece = {i: ("\n" if p == "<0x0A>" else p) for i, p in enumerate(pieces)}

    def encode(self, s):
        return [self.id[c] for c in s]

    def decode(self, ids):
        return "".join(self.piece[i] for i in ids if i > 2)


def batch(tok, rng, bs):
    rows, masks = [], []
    for _ in range(bs):
        nums, ops = at.make_problem(rng, rng.randint(2, 5))
        p = [tt.BOS] + tok.encode(at.prompt_text(nums, ops))
        s = tok.encode(at.solution_text(nums, ops)) + [tt.EOS]
        rows.append(p + s)
        masks.append([0] * len(p) + [1] * len(s))
    T = max(len(r) for r in rows)
    ids = torch.full((bs, T), tt.EOS, dtype=torch.long)
    m = torch.zeros(bs, T)
    for i, (r, k) in enumerate(zip(rows, masks)):
        ids[i, :len(r)] = torch.tensor(r)
        m[i, :len(k)] = torch.tensor(k, dtype=torch.float)
    return ids, m


@torch.no_grad()
def greedy_accuracy(model, tok, problems, max_new=48):
    model.eval()
    prompts = [[tt.BOS] + tok.encode(at.prompt_text(n, o)) for n, o in problems]
    # all problems have the same operand count and 1-2 digit operands: pad on the left is not possible
    # without positions, so decode each prompt length group as one batch
    right = 0
    groups = {}
    for i, p in enumerate(prompts):
        groups.setdefault(len(p), []).append(i)
    for L, idx in groups.items():
        ids = torch.tensor([prompts[i] for i in idx])
        out = [[] for _ in idx]
        done = [False] * len(idx)
        for _ in range(max_new):
            nxt = model(ids)[:, -1].argmax(-1)
            ids = torch.cat([ids, nxt[:, None]], 1)
            for j, t in enumerate(nxt.tolist()):
                if not done[j]:
                    if t == tt.EOS:
                        done[j] = True
                    else:
                        out[j].append(t)
            if all(done):
                break
        for j, i in enumerate(idx):
            text = at.prompt_text(*problems[i]) + tok.decode(out[j])
            right += at.score(text, False) == 1.0
    model.train()
    return right / len(problems)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=25)
    ap.add_argument("--hidden", type=int, default=96)
    ap.add_argument("--intermediate", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--attn-period", type=int, default=2)
    ap.add_argument("--attn-offset", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--min-lr", type=float, default=2e-4)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--eval-every", type=int, default=150)
    ap.add_argument("--init", metavar="HF_DIR", help="start from an exported checkpoint (a second, shorter run)")
    ap.add_argument("--first-step", type=int, default=0, help="with --init: number the steps on from here")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    tok = CharTok(os.path.join(args.out, "arith.vocab"))
    args.vocab = tok.n
    cfg = tt.make_config(args)
    cfg["max_position_embeddings"] = 256
    if args.init:
        model = tt.load_hf(args.init)
        cfg = model.cfg
        args.warmup = min(args.warmup, 10)
    else:
        model = tt.JambaLM(cfg)
        model.init_weights(args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    vrng = random.Random(10 ** 6)
    valid = [at.make_problem(vrng, 4) for _ in range(200)]
    logf = open(os.path.join(args.out, "train.log"), "a")

    def log(msg):
        line = time.strftime("%H:%M:%S") + " " + msg
        print(line, flush=True)
        logf.write(line + "\n")
        logf.flush()

    log("params %d, cfg %s" % (n_params, {k: cfg[k] for k in ("hidden_size", "num_hidden_layers",
                                                             "intermediate_size", "vocab_size")}))
    t0 = time.time()
    deadline = t0 + args.minutes * 60
    total, step, gov = None, 0, tt.ThreadGovernor(2)
    base = args.first_step  # batches and export names continue from the first run's numbering
    ema = None
    while True:
        if total is None and step == 20:
            per = (time.time() - t0) / 20
            total = max(100, int((deadline - time.time() - 120) / per) + 20)
            log("%.2f s/step: planning %d steps" % (per, total))
        if total is not None and step >= total:
            break
        if time.time() > deadline:  # a busier machine than planned for: stop on time, keep what there is
            log("out of time at step %d of %d" % (step, total or 0))
            break
        lr = args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * min(1, step / (total or 10 ** 9))))
        if step < args.warmup:
            lr = args.lr * (step + 1) / args.warmup
        for g in opt.param_groups:
            g["lr"] = lr
        ids, m = batch(tok, random.Random((base + step) * 7919 + args.seed), args.batch)
        logits = model(ids[:, :-1])
        lt = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
        loss = (lt * m[:, 1:].reshape(-1)).sum() / m[:, 1:].sum()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        gov.update()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        step += 1
        if step % 10 == 0:
            log("step %d loss %.4f (ema %.4f) lr %.2e" % (step, loss.item(), ema, lr))
        if step % args.eval_every == 0 or (total is not None and step == total):
            acc = greedy_accuracy(model, tok, valid)
            d = os.path.join(args.out, "hf-%d" % (base + step))
            tt.export_hf(model, d, os.path.join(args.out, "arith.model"))
            log("step %d greedy accuracy (200 problems, 4 operands) %.3f -> %s" % (base + step, acc, d))
    tt.export_hf(model, os.path.join(args.out, "hf"), os.path.join(args.out, "arith.model"))
    log("done: %d steps in %.1f min" % (step, (time.time() - t0) / 60))


if __name__ == "__main__":
    main()
