#!/usr/bin/env bash
# braid summarize end to end on the bundled model: a pipe gives the file's output byte for byte, every
# bad input gets one line and its exit status, progress is well formed in a pipe and on a terminal,
# Ctrl-C ends a run cleanly, tree mode and the attention window run.
set -u
BRAID=$1
M=$2
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# expect CODE PATTERN -- command...: exit code CODE; on failure exactly one stderr line matching PATTERN
expect() {
  local code=$1 pat=$2; shift 3
  "$@" >"$WORK/out" 2>"$WORK/err"
  local rc=$?
  if [[ $rc -ne $code ]]; then bad "$* -> exit $rc, wanted $code; stderr: $(head -c 400 "$WORK/err")"; return; fi
  if [[ -n "$pat" ]] && ! grep -qE -- "$pat" "$WORK/err"; then bad "$* -> stderr lacks /$pat/: $(head -c 400 "$WORK/err")"; return; fi
  if [[ $code -ne 0 && $(wc -l <"$WORK/err") -ne 1 ]]; then bad "$* -> $(wc -l <"$WORK/err") lines on stderr, wanted 1"; return; fi
  ok
}

# A document of a few hundred tokens: English-like sentences, some multibyte characters.
DOC=$WORK/doc.txt
for i in $(seq 1 24); do
  echo "Chapter $i. The whale swam past the ship at dawn, and the captain — Ahab — watched the café of the sea."
  echo "Ishmael wrote of it in his journal: naïve sailors, old harpoons, and $i barrels of oil in the hold."
done >"$DOC"
S="$BRAID summarize -m $M -n 12 -t 2"

# pipe and file: the same summary, byte for byte (greedy), however the pipe chunks the bytes
expect 0 "" -- $S -q "$DOC"
cp "$WORK/out" "$WORK/file.out"
[[ -s "$WORK/file.out" ]] && ok || bad "no summary from the file"
expect 0 "" -- bash -c "cat '$DOC' | $S -q -"
cmp -s "$WORK/out" "$WORK/file.out" && ok || bad "pipe output differs from the file's"
expect 0 "" -- bash -c "(head -c 1001 '$DOC'; sleep 0.3; tail -c +1002 '$DOC' | head -c 777; sleep 0.3; tail -c +1779 '$DOC') | $S -q -"
cmp -s "$WORK/out" "$WORK/file.out" && ok || bad "a pipe written in pieces gives another summary"
expect 0 "" -- $S -q -f "$DOC"
cmp -s "$WORK/out" "$WORK/file.out" && ok || bad "-f FILE differs from FILE"

# progress in a pipe: only whole lines, each of a known form, percentages rising to 100
expect 0 "document tokens .* read in .* tok/s.*peak RSS" -- $S -b 64 "$DOC"
if grep -q $'\r\|\x1b' "$WORK/err"; then bad "terminal codes in piped progress"; else ok; fi
bad_lines=$(grep -vE '^braid summarize: ([0-9]+% read, [0-9.k]+ tokens, [0-9.k]+ tok/s, KV [0-9.]+ MiB, SSM [0-9.]+ MiB|[0-9]+ document tokens \(.*\) read in [0-9.]+ s \([0-9.]+ tok/s\); summary [0-9]+ tokens; .*)$' "$WORK/err")
[[ -z "$bad_lines" ]] && ok || bad "malformed progress lines: $bad_lines"
pcts=$(grep -oE '^braid summarize: [0-9]+% read' "$WORK/err" | grep -oE '[0-9]+' | tr '\n' ' ')
[[ "$pcts" =~ ^([0-9]+\ )+$ && "$pcts" == *"100 " ]] && ok || bad "percentages '$pcts' do not reach 100"
prev=-1; for p in $pcts; do [[ $p -gt $prev ]] || bad "percentages not rising: $pcts"; prev=$p; done
expect 0 "" -- $S -q "$DOC"
[[ ! -s "$WORK/err" ]] && ok || bad "--quiet still wrote: $(cat "$WORK/err")"

# progress on a terminal: a bar redrawn in place, cleared before the summary line
if command -v python3 >/dev/null; then
  python3 - "$BRAID" "$M" "$DOC" "$WORK/pty.out" <<'EOF' && ok || bad "progress on a pty (above)"
import os, pty, re, sys
braid, model, doc, out = sys.argv[1:]
pid, fd = pty.fork()
if pid == 0:
    # stderr on the terminal, the summary to a file
    so = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(so, 1)
    os.execv(braid, [braid, "summarize", "-m", model, "-n", "8", "-t", "2", "-b", "32", doc])
data = b""
while True:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    data += chunk
_, status = os.waitpid(pid, 0)
text = data.decode("utf-8")
ok = os.WEXITSTATUS(status) == 0
bar = re.compile(r"^\[[=> ]{20}\] +\d+%  ETA \d+:\d\d  [0-9.k]+ tok  [0-9.k]+ tok/s  KV [0-9.]+ MiB  SSM [0-9.]+ MiB$")
parts = text.split("\r\x1b[K")
if len(parts) < 3 or parts[0] != "":
    ok = False
    print("no bar drawn in place:", repr(text[:300]))
for p in parts[1:-1]:
    if not bar.match(p):
        ok = False
        print("malformed bar:", repr(p))
if not re.match(r"^braid summarize: \d+ document tokens .*\r?\n$", parts[-1]):
    ok = False
    print("the bar was not cleared before the last line:", repr(parts[-1]))
sys.exit(0 if ok else 1)
EOF
fi

# bad input: one line, exit 1 (runtime) or 2 (usage)
: >"$WORK/empty.txt"
expect 1 "empty" -- $S "$WORK/empty.txt"
expect 1 "standard input: the document is empty" -- bash -c "$S - </dev/null"
printf 'Hello there \xff world\n' >"$WORK/bad.txt"
expect 1 "bad.txt: invalid UTF-8 at byte offset 12 .*--lossy" -- $S "$WORK/bad.txt"
printf 'Caf\xc3\xa9 ok, then cut short: \xe6\x97' >"$WORK/cut.txt"
expect 1 "invalid UTF-8 at byte offset 26" -- $S "$WORK/cut.txt"
expect 0 "bad bytes replaced" -- $S --lossy "$WORK/bad.txt"
expect 1 "is a directory" -- $S "$WORK"
expect 1 "is a directory" -- bash -c "$S - <'$WORK'"
expect 1 "cannot read .*nope.txt: No such file" -- $S "$WORK/nope.txt"
expect 1 "/proc/self/mem: cannot read the document: Input/output error" -- $S /proc/self/mem
if [[ $(id -u) -ne 0 ]]; then
  cp "$DOC" "$WORK/locked.txt" && chmod 000 "$WORK/locked.txt"
  expect 1 "cannot read .*locked.txt: Permission denied" -- $S "$WORK/locked.txt"
fi
expect 1 "standard input is closed" -- bash -c "$S - <&-"
expect 1 "the document is [0-9]+ tokens.*context of 256.*--attn-window" -- $S -c 256 "$DOC"
expect 1 "the document passed [0-9]+ tokens.*--attn-window" -- bash -c "cat '$DOC' | $S -c 256 -"
expect 2 "no document" -- $S
expect 2 "no model" -- "$BRAID" summarize "$DOC"
expect 2 "once" -- $S "$DOC" -f "$DOC"
expect 2 "stream or tree" -- $S --mode fast "$DOC"
expect 2 "tree mode keeps" -- $S --mode tree --attn-window 64 "$DOC"
expect 2 "chatml" -- $S --chat-template nonesuch "$DOC"
expect 2 "unexpected argument" -- $S "$DOC" "$DOC"

# the attention window: a context far smaller than the document, memory bounded
expect 0 "document tokens" -- $S -c 256 --attn-window 128 "$DOC"
[[ -s "$WORK/out" ]] && ok || bad "no summary with a window"
# tree mode: sections in one batch of sequences, then their summaries
expect 0 "sections, [2-9] levels" -- $S --mode tree -c 400 -n 16 "$DOC"

# Ctrl-C while reading a pipe that has not ended: exit 130, one note, no bar left behind
mkfifo "$WORK/fifo"
(cat "$DOC"; sleep 30) >"$WORK/fifo" &
writer=$!
$S - <"$WORK/fifo" >"$WORK/out" 2>"$WORK/err" &
pid=$!
sleep 3
kill -INT $pid
wait $pid
rc=$?
kill $writer 2>/dev/null
wait $writer 2>/dev/null
[[ $rc -eq 130 ]] && ok || bad "Ctrl-C: exit $rc, wanted 130; $(cat "$WORK/err")"
grep -q "interrupted after [0-9]+ document tokens" -E "$WORK/err" && ok || bad "Ctrl-C note: $(cat "$WORK/err")"

echo "summarize CLI: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
