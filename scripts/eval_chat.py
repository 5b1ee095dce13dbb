# Evaluates bundled-model candidates with braid itself: bits per byte on held-out prose (comparable across
# tokenizers), a content-word score on held-out chat questions against a random-gloss baseline, and samples.
"""Usage:
  eval_chat.py --braid build/tools/braid --model NEW.gguf --tokenizer NEW/tokenizer.model
               [--old OLD.gguf] --corpus build/corpus [--n 300] [--out report.md]

Bits per byte: the validation documents are written as one plain text (blank line between documents),
each model scores it with `braid perplexity --all-tokens -c 256` (BOS plus 255 tokens per window, every
token scored), and bpb = tokens * ln(ppl) / ln 2 / bytes of that text. The total negative log-likelihood
over the same bytes is comparable whatever the tokenizer.

Chat score: the held-out WordNet "what does WORD mean" questions from chat_valid.jsonl (about lemmas whose
gloss lies in the validation split, never trained on) are asked in ChatML through `braid generate --ids`
(greedy, up to 48 tokens, cut at <|im_end|>). An answer scores when it shares a content word (not a stop
word, not a word of the question's lemma, plural -s folded) with the reference definition. The baseline
answers every question with the definition of another held-out lemma (random, seeded). Part-of-speech
questions score when the answer names the right part of speech; baseline: a random part of speech among
those asked. "Clearly beats" is judged by an exact one-sided sign test on the paired outcomes (questions
the model gets and the baseline misses against the reverse).

Matching test (--hf DIR, the HF export the GGUF was converted from; PyTorch, which the golden checks tie to
braid's logits): the held-out "what does WORD mean" items are cut into disjoint pairs (A, B) with different
definitions; the model is right on a pair when log p(answer_A | question_A) + log p(answer_B | question_B)
exceeds the same with the two definitions swapped (the answer template stays each word's own). Every
definition and every question appears once on each side, so a definition's own likelihood (its length, its
common words) cancels and only the fit between word and definition counts; chance is exactly 50%. It is run
on all items and again on nouns only (one answer template, so grammar alone cannot decide a pair).
"""
import argparse
import json
import math
import os
import random
import re
import subprocess
import sys

import sentencepiece as spm

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
STOP = set("""a an the of to in on at by for with from as is are was were be been being or and not no any
some that this these those which who whom whose what when where how it its into than then there their them
they he she his her one ones something someone especially usually often etc used use using make made
having has have had do does done can may might will would should could very more most less such other""".split())


def words(text):
    out = set()
    for w in re.findall(r"[a-z]+", text.lower()):
        if len(w) < 3 or w in STOP:
            continue
        out.add(w[:-1] if w.endswith("s") and len(w) > 3 else w)
    return out


def overlap(answer, reference, lemma):
    return bool((words(answer) - words(lemma)) & (words(reference) - words(lemma)))


class Chat:
    """ChatML prompts as token ids (control pieces by id, text fragments encoded on their own, as the
    trainer did) and greedy replies from braid."""

    def __init__(self, braid, model, tokenizer, max_new=48):
        self.braid, self.model, self.max_new = braid, model, max_new
        self.sp = spm.SentencePieceProcessor(model_file=tokenizer)
        self.start, self.end = self.sp.piece_to_id(IM_START), self.sp.piece_to_id(IM_END)
        if not (self.sp.is_control(self.start) and self.sp.is_control(self.end)):
            sys.exit("eval_chat: %s has no ChatML control pieces" % tokenizer)

    def prompt_ids(self, messages):
        ids = [self.sp.bos_id()]
        for role, text in messages:
            ids += [self.start] + self.sp.encode(role + "\n" + text) + [self.end] + self.sp.encode("\n")
        return ids + [self.start] + self.sp.encode("assistant\n")

    def reply(self, messages):
        ids = self.prompt_ids(messages)
        r = subprocess.run([self.braid, "generate", "-m", self.model, "--tokens", ",".join(map(str, ids)),
                            "--no-bos", "--ids", "--temp", "0", "-n", str(self.max_new), "--log-disable"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit("eval_chat: braid generate failed: %s" % r.stderr.strip())
        out = [int(t) for t in re.findall(r"-?\d+", r.stdout)]
        if self.end in out:
            out = out[:out.index(self.end)]
        return self.sp.decode([t for t in out if not self.sp.is_control(t)]).strip()


def sign_test(wins, losses):
    """One-sided exact binomial p-value of at least `wins` successes in wins + losses fair coin flips."""
    n = wins + losses
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2 ** n if n else 1.0


def matching_test(hf_dir, means, n_pairs, seed=11, batch=32):
    """Returns (pairs right, pairs) for the swap test described in the module docstring."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torch
    import torch.nn.functional as F
    import train_tiny as tt
    model = tt.load_hf(hf_dir).eval()
    tok = tt.Tok(os.path.join(hf_dir, "tokenizer.model"))
    items = [h for h in means if h["reference"] in h["answer"]]
    random.Random(seed).shuffle(items)
    pairs, used = [], set()
    for i, a in enumerate(items):
        if i in used:
            continue
        for j in range(i + 1, len(items)):
            b = items[j]
            if j not in used and b["reference"] != a["reference"] and b["word"] != a["word"]:
                pairs.append((a, b))
                used.update((i, j))
                break
        if len(pairs) == n_pairs:
            break

    def conv(h, ref):
        ans = h["answer"].replace(h["reference"], ref, 1)
        return "%suser\n%s%s\n%sassistant\n%s%s" % (IM_START, h["question"], IM_END, IM_START, ans, IM_END)

    texts = []
    for a, b in pairs:
        texts += [conv(a, a["reference"]), conv(b, b["reference"]), conv(a, b["reference"]), conv(b, a["reference"])]
    seqs = [[tt.BOS] + tok.encode_doc(t) for t in texts]
    scores = []
    with torch.no_grad():
        for k in range(0, len(seqs), batch):
            chunk = seqs[k:k + batch]
            L = max(len(q) for q in chunk)
            x = torch.zeros(len(chunk), L, dtype=torch.long)
            mask = torch.zeros(len(chunk), L - 1)
            for r, q in enumerate(chunk):
                x[r, :len(q)] = torch.tensor(q)
                mask[r, :len(q) - 1] = 1
            lp = F.log_softmax(model(x[:, :-1]).float(), -1).gather(-1, x[:, 1:, None])[..., 0]
            scores += (lp * mask).sum(1).tolist()   # causal model: right padding changes nothing before it
    right = sum(scores[4 * p] + scores[4 * p + 1] > scores[4 * p + 2] + scores[4 * p + 3] for p in range(len(pairs)))
    return right, len(pairs)


def bits_per_byte(braid, model, text_path):
    r = subprocess.run([braid, "perplexity", "-m", model, "-c", "256", "--all-tokens", text_path],
                       capture_output=True, text=True)
    m = re.search(r"perplexity: ([\d.]+) over (\d+) tokens", r.stdout)
    if r.returncode != 0 or not m:
        sys.exit("eval_chat: braid perplexity failed on %s: %s" % (model, r.stderr.strip()[-300:]))
    ppl, n = float(m.group(1)), int(m.group(2))
    nbytes = os.path.getsize(text_path)
    return n * math.log(ppl) / math.log(2) / nbytes, ppl, n, nbytes


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--braid", default="build/tools/braid")
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokenizer", required=True, help="the new model's tokenizer.model (ChatML pieces)")
    ap.add_argument("--old", help="the model to compare bits per byte with")
    ap.add_argument("--corpus", default="build/corpus")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--skip-bpb", action="store_true")
    ap.add_argument("--hf", help="the HF export of --model: also run the definition matching test (PyTorch)")
    ap.add_argument("--pairs", type=int, default=300, help="pairs for the matching test")
    ap.add_argument("--out", help="also write the report (markdown) here")
    args = ap.parse_args()
    rep = []

    def say(s=""):
        print(s, flush=True)
        rep.append(s)

    if not args.skip_bpb:
        with open(os.path.join(args.corpus, "valid.txt"), encoding="utf-8") as f:
            docs = [d.strip("\n") for d in f.read().split("\n\f\n") if d.strip()]
        plain = os.path.join(args.corpus, "valid_plain.txt")
        with open(plain, "w", encoding="utf-8") as f:
            f.write("\n\n".join(docs) + "\n")
        say("## Bits per byte on the validation split (%s, %d documents)" % (plain, len(docs)))
        say()
        say("| model | tokens | perplexity (per token) | bits per byte |")
        say("|---|---:|---:|---:|")
        res = {}
        for name, path in (("old", args.old), ("new", args.model)):
            if path:
                b, ppl, n, nb = bits_per_byte(args.braid, path, plain)
                res[name] = b
                say("| %s `%s` | %d | %.2f | %.4f |" % (name, path, n, ppl, b))
        if "old" in res:
            say()
            say("new vs old: %+.1f%% bits per byte" % (100 * (res["new"] / res["old"] - 1)))
        say()

    with open(os.path.join(args.corpus, "chat_valid.jsonl"), encoding="utf-8") as f:
        held = [json.loads(l) for l in f]
    rnd = random.Random(7)
    chat = Chat(args.braid, args.model, args.tokenizer)

    means = [h for h in held if h["kind"] == "mean"]
    rnd.shuffle(means)
    qs = means[:args.n]
    hits = base = only_model = only_base = 0
    for i, h in enumerate(qs):
        ans = chat.reply([("user", h["question"])])
        h["model"] = ans
        hm = overlap(ans, h["reference"], h["word"])
        other = rnd.choice([m for m in means if m["word"] != h["word"]])
        hb = overlap(other["reference"], h["reference"], h["word"])
        hits, base = hits + hm, base + hb
        only_model, only_base = only_model + (hm and not hb), only_base + (hb and not hm)
        if (i + 1) % 50 == 0:
            print("  %d/%d: model %d, baseline %d" % (i + 1, len(qs), hits, base), file=sys.stderr, flush=True)
    say("## Held-out questions")
    say()
    say("| questions | model: shares a content word with the reference | random-gloss baseline |")
    say("|---|---:|---:|")
    say("| %d \"what does WORD mean\" | %d (%.1f%%) | %d (%.1f%%) |"
        % (len(qs), hits, 100 * hits / len(qs), base, 100 * base / len(qs)))
    pos = [h for h in held if h["kind"] == "pos"]
    rnd.shuffle(pos)
    pos = pos[:100]
    kinds = sorted(set(h["reference"] for h in pos))
    ph = pb = 0
    for h in pos:
        ans = chat.reply([("user", h["question"])]).lower()
        ph += all(k in ans for k in h["reference"].split()) and \
            not any(k in ans for k in ("noun", "verb", "adjective", "adverb") if k not in h["reference"])
        pb += rnd.choice(kinds) == h["reference"]
    say("| %d part of speech | %d (%.1f%%) right | %d (%.1f%%) (random among the %d answers) |"
        % (len(pos), ph, 100 * ph / len(pos), pb, 100 * pb / len(pos), len(kinds)))
    say()
    say("Definitions, paired: %d questions only the model gets, %d only the baseline gets; one-sided sign test "
        "p = %.2g." % (only_model, only_base, sign_test(only_model, only_base)))
    say()

    if args.hf:
        right, n = matching_test(args.hf, means, args.pairs)
        say("## Matching held-out words with their definitions")
        say()
        say("%d disjoint pairs of held-out \"what does WORD mean\" items: the model prefers the right pairing of "
            "word and definition over the swapped one in **%d (%.1f%%)**; chance 50%%, one-sided binomial p = %.2g."
            % (n, right, 100 * right / n, sign_test(right, n - right)))
        # both words nouns: the same answer template on both sides, so grammar cannot decide the pair
        nouns = [h for h in means if not h["answer"].startswith("To ") and " is " + h["reference"] in h["answer"]]
        right, n = matching_test(args.hf, nouns, args.pairs)
        say()
        say("Pairs of two nouns only (same answer template): **%d of %d (%.1f%%)**, p = %.2g."
            % (right, n, 100 * right / n, sign_test(right, n - right)))
        say()

    say("## Sample conversations (greedy, held-out words)")
    say()
    uses = [h for h in held if h["kind"] == "use"]
    pys = [h for h in held if h["kind"] == "python"]
    convs = [[h["question"]] for h in qs[:3]] + [[h["question"]] for h in uses[:2]] + [[h["question"]] for h in pys[:1]]
    for h in qs[3:5]:
        convs.append(["What does %s mean?" % h["word"], "Use %s in a sentence." % h["word"],
                      "Which part of speech is %s?" % h["word"]])
    convs += [["What does love mean?", "Give a synonym for love."], ["Tell me about the sea."]]
    for c in convs[:args.samples]:
        msgs = []
        say("```")
        for q in c:
            msgs.append(("user", q))
            a = chat.reply(msgs)
            msgs.append(("assistant", a))
            say("user: " + q)
            say("assistant: " + a)
        say("```")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write("\n".join(rep) + "\n")


if __name__ == "__main__":
    main()
