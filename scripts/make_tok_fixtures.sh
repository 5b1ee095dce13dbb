#!/usr/bin/env bash
# Regenerates tests/fixtures/tok: three small SentencePiece models trained by Debian's spm_train, and
# the ids Debian's SentencePiece 0.1.97 gives each case of cases.txt under each model (*.ids).
#
# Usage: scripts/make_tok_fixtures.sh
# Needs: apt-get download + dpkg-deb (Debian mirror), spm_train/spm_encode (package sentencepiece),
#        /usr/bin/python3 with python3-sentencepiece (the same library, for cases spm_encode cannot take).
#
# Training text: the first 60000 lines of the Python 3.11 info manual (python3.11-doc, PSF licence).
# It is downloaded into a temporary directory and not kept; only the small models are committed.
#
# The models:
#   test.model  unigram, 512 pieces, byte fallback, identity normaliser, spaces kept, a <pad> control
#               piece and a <sep> user-defined piece: set up the way Llama-style tokenizers are.
#   bpe.model   BPE, 512 pieces, byte fallback, identity normaliser: what llama.cpp's "llama"
#               vocabularies are segmented as.
#   norm.model  unigram, 300 pieces, no byte fallback (unknown characters become <unk>), a small custom
#               normalisation table (so it has a precompiled charsmap), extra whitespace removed, no
#               dummy prefix, and a custom unknown surface.
#
# cases.txt is written by hand (see its header); each line is NAME<TAB>TEXT with \\ \t \n \r \xNN escapes.
# Expected ids come from spm_encode --output_format=id for every case it can take on one line (no \n,
# \r or NUL), and from python3-sentencepiece for all cases; the script stops if the two ever disagree.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$ROOT/tests/fixtures/tok"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"

command -v spm_train >/dev/null || { echo "spm_train missing: apt-get install sentencepiece" >&2; exit 1; }
/usr/bin/python3 -c 'import sentencepiece' 2>/dev/null ||
    { echo "python3-sentencepiece missing: apt-get install python3-sentencepiece" >&2; exit 1; }

# apt-get download drops privileges to _apt, so download into a world-writable directory.
chmod 777 "$WORK"
(cd "$WORK" && apt-get download python3.11-doc >/dev/null 2>&1 && dpkg-deb -x python3.11-doc_*.deb doc)
zcat "$WORK"/doc/usr/share/info/python3.11.info.gz | sed -n '1,60000p' >"$WORK/corpus.txt"

# Full-width Latin capitals to ASCII, the fi ligature to "fi", OHM SIGN to OMEGA, ideographic space to space.
{
    for i in $(seq 0 25); do printf '%X\t%X\n' $((0xFF21 + i)) $((0x41 + i)); done
    printf 'FB01\t66 69\n2126\t3A9\n3000\t20\n'
} >"$WORK/rules.tsv"

# Relative paths, run inside $WORK: the trainer records input and prefix in the model, and a
# temporary directory's name would make every run's files differ.
cd "$WORK"
common=(--input=corpus.txt --num_threads=1 --minloglevel=2 --max_sentence_length=8192)
train() {
    local name="$1"
    shift
    spm_train "${common[@]}" --model_prefix="$name" "$@" >"$name.log" 2>&1 || { cat "$name.log" >&2; exit 1; }
}
train test --model_type=unigram --vocab_size=512 \
    --byte_fallback=true --normalization_rule_name=identity --remove_extra_whitespaces=false \
    --add_dummy_prefix=true --split_digits=true --allow_whitespace_only_pieces=true \
    --pad_id=3 --user_defined_symbols='<sep>'
train bpe --model_type=bpe --vocab_size=512 \
    --byte_fallback=true --normalization_rule_name=identity --remove_extra_whitespaces=false \
    --add_dummy_prefix=true --split_digits=true
train norm --model_type=unigram --vocab_size=300 \
    --byte_fallback=false --normalization_rule_tsv=rules.tsv --remove_extra_whitespaces=true \
    --add_dummy_prefix=false --character_coverage=1.0 --unk_surface='<?>'

for m in test bpe norm; do
    cp "$WORK/$m.model" "$OUT/$m.model"
done

/usr/bin/python3 - "$OUT" "$WORK" <<'PY'
import os, re, subprocess, sys
import sentencepiece as spm

out, work = sys.argv[1], sys.argv[2]

def unescape(s):
    b = bytearray()
    i = 0
    raw = s.encode("utf-8")
    while i < len(raw):
        c = raw[i]
        if c != 0x5C:
            b.append(c); i += 1; continue
        e = chr(raw[i + 1])
        if e == "x":
            b.append(int(raw[i + 2:i + 4], 16)); i += 4
        else:
            b.append({"\\": 0x5C, "t": 9, "n": 10, "r": 13}[e]); i += 2
    return bytes(b)

cases = []
with open(os.path.join(out, "cases.txt"), encoding="utf-8") as f:
    for line in f:
        line = line.rstrip("\n")
        if not line or line.startswith("#"):
            continue
        name, text = line.split("\t", 1)
        cases.append((name, unescape(text)))

for m in ("test", "bpe", "norm"):
    model = os.path.join(out, m + ".model")
    sp = spm.SentencePieceProcessor(model_file=model)
    ids = {name: sp.encode(text) for name, text in cases}
    one_line = [(n, t) for n, t in cases if not re.search(b"[\n\r\0]", t)]
    inp = os.path.join(work, m + ".in")
    with open(inp, "wb") as f:
        f.write(b"".join(t + b"\n" for _, t in one_line))
    res = subprocess.run(["spm_encode", "--model=" + model, "--output_format=id", "--input=" + inp],
                         check=True, capture_output=True).stdout.decode().split("\n")
    for (n, _), line in zip(one_line, res):
        got = [int(x) for x in line.split()]
        if got != ids[n]:
            sys.exit("%s/%s: spm_encode %s != python %s" % (m, n, got, ids[n]))
    with open(os.path.join(out, m + ".ids"), "w") as f:
        f.write("# NAME<TAB>ids from SentencePiece 0.1.97 (spm_encode --output_format=id) for %s.model\n" % m)
        for n, _ in cases:
            f.write("%s\t%s\n" % (n, " ".join(map(str, ids[n]))))
    print("%s.model: %d pieces, %d cases (%d checked against spm_encode)" %
          (m, sp.get_piece_size(), len(cases), len(one_line)))
PY
