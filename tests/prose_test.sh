#!/usr/bin/env bash
# The bundled model answers the README's example prompts (and scripts/run.sh's default) with English prose:
# at braid's default sampling settings, most output tokens are words and almost no characters are markup.
# Usage: prose_test.sh BRAID MODEL.gguf REPO_ROOT
set -u
BRAID=$1 MODEL=$2 ROOT=$3
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# Every -p "..." prompt of a generate line in the README, and those of scripts/run.sh (its default one and
# its example).
mapfile -t prompts < <( (grep -h 'generate' "$ROOT/README.md"; cat "$ROOT/scripts/run.sh") |
  grep -o -- '-p "[^"]*"' | sed 's/^-p "//; s/"$//' | sort -u)
if [[ ${#prompts[@]} -lt 2 ]]; then echo "FAIL: found ${#prompts[@]} example prompts in README.md and scripts/run.sh"; exit 1; fi

fail=0
for p in "${prompts[@]}"; do
  for seed in 1 2 3; do
    if ! "$BRAID" generate -m "$MODEL" -p "$p" -n 64 --seed "$seed" --no-display-prompt >"$WORK/out" 2>"$WORK/err"; then
      echo "FAIL: generate -p '$p' --seed $seed: $(head -c 300 "$WORK/err")"; fail=1; continue
    fi
    cat "$WORK/out" >>"$WORK/all"
    echo >>"$WORK/all"
  done
done
# Words: whitespace-separated tokens that are letters (inner apostrophes/hyphens allowed) once the
# punctuation prose uses around words is stripped. Markup: characters that mark up text or code, and URLs.
/usr/bin/env python3 - "$WORK/all" <<'PY' || fail=1
import re, sys
text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
toks = text.split()
words = [t for t in toks if re.fullmatch(r"[A-Za-z]+(['’\-][A-Za-z]+)*", t.strip(".,;:!?\"'’‘“”()-—"))]
markup = sum(text.count(c) for c in "*_<>{}[]|\\/=#@~^`‘") + 4 * len(re.findall(r"https?:|www\.|::", text))
chars = len(text) or 1
print("prose: %d tokens, %d words (%.1f%%), %d markup characters (%.2f%% of %d)"
      % (len(toks), len(words), 100 * len(words) / max(len(toks), 1), markup, 100 * markup / chars, chars))
ok = len(words) >= 60 and len(words) >= 0.85 * len(toks) and markup <= 0.01 * chars
if not ok:
    print("FAIL: want >= 60 words, >= 85% of tokens words, <= 1% markup characters; output was:\n" + text[:2000])
sys.exit(0 if ok else 1)
PY
exit $fail
