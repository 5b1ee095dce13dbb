#!/usr/bin/env bash
# The braid program against hostile files outside the parsers: FIFOs and devices as models and
# tokenizers (must not hang or read forever), a device or link as convert's output (must be refused
# before the work starts), and a model truncated while it runs (one line and exit 1, not SIGBUS).
set -u
BRAID=$1
FX=$(cd "$(dirname "$0")/../fixtures" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# expect CODE PATTERN -- command...: within 30 s, exit CODE and one stderr line matching PATTERN
expect() {
  local code=$1 pat=$2; shift 3
  timeout 30 "$@" >"$WORK/out" 2>"$WORK/err" </dev/null
  local rc=$?
  if [[ $rc -eq 124 ]]; then bad "$* -> hung (killed after 30 s)"; return; fi
  if [[ $rc -ne $code ]]; then bad "$* -> exit $rc, wanted $code; stderr: $(head -c 300 "$WORK/err")"; return; fi
  if ! grep -qE -- "$pat" "$WORK/err"; then bad "$* -> stderr lacks /$pat/: $(head -c 300 "$WORK/err")"; return; fi
  if [[ $(wc -l <"$WORK/err") -ne 1 ]]; then bad "$* -> $(wc -l <"$WORK/err") lines on stderr, wanted 1"; return; fi
  ok
}

F=$WORK/fifo
mkfifo "$F"
expect 1 "not a regular file" -- "$BRAID" info "$F"
expect 1 "not a regular file" -- "$BRAID" generate -m "$F" --tokens 1,2 -n 2
expect 1 "not a regular file" -- "$BRAID" tokenize -m "$F" hello
expect 1 "not a regular file" -- "$BRAID" tokenize -m /dev/zero hello
expect 1 "leak-nul-piece.model is not a GGUF model" -- "$BRAID" tokenize -m "$(dirname "$0")/tok_model/regressions/leak-nul-piece.model" hello

# a checkpoint whose tokenizer.model is a FIFO, then /dev/zero: refused, and no OUT.part left behind
H=$WORK/hf
mkdir "$H"
ln -s "$FX/hf_tiny/config.json" "$FX/hf_tiny/model.safetensors" "$H/"
mkfifo "$H/tokenizer.model"
expect 1 "tokenizer.model is not a regular file" -- "$BRAID" convert "$H" "$WORK/out.gguf" --type F32
[[ ! -e "$WORK/out.gguf" && ! -e "$WORK/out.gguf.part" ]] && ok || bad "convert left $(ls "$WORK")"
rm "$H/tokenizer.model"
ln -s /dev/zero "$H/tokenizer.model"
expect 1 "tokenizer.model is not a regular file" -- "$BRAID" convert "$H" "$WORK/out.gguf" --type F32
[[ ! -e "$WORK/out.gguf" && ! -e "$WORK/out.gguf.part" ]] && ok || bad "convert left $(ls "$WORK")"

# outputs that are not regular files; the device is our own node (root only), never the real /dev/null
ln -s "$WORK/victim" "$WORK/link.gguf"
echo keep >"$WORK/victim"
expect 1 "link.gguf exists and is a symbolic link" -- "$BRAID" convert "$FX/hf_tiny" "$WORK/link.gguf"
[[ -L "$WORK/link.gguf" && "$(cat "$WORK/victim")" == keep ]] && ok || bad "convert replaced a symlink or its target"
expect 1 "exists and is a FIFO" -- "$BRAID" convert "$FX/hf_tiny" "$F"
if mknod "$WORK/null" c 1 3 2>/dev/null; then
  expect 1 "exists and is a device" -- "$BRAID" convert "$FX/hf_tiny" "$WORK/null"
  [[ -c "$WORK/null" ]] && ok || bad "convert replaced a device node"
fi

# a model truncated under a running generate: the next read of its mapped weights faults (SIGBUS)
M=$WORK/m.gguf
"$BRAID" synth "$M" --preset tiny --seed 9 >/dev/null 2>&1 || bad "synth"
timeout 60 "$BRAID" generate -m "$M" --tokens 1,2,3 -n 500000 --ctx 1000000 --temp 0 --threads 1 --ids \
  >"$WORK/gen.out" 2>"$WORK/gen.err" &
pid=$!
for _ in $(seq 600); do [[ -s "$WORK/gen.out" ]] && break; sleep 0.05; done
truncate -s 0 "$M"
wait $pid
rc=$?
if [[ $rc -eq 1 ]] && [[ "$(tail -n 1 "$WORK/gen.err")" == "braid: error: the model file changed or was truncated while in use" ]]; then
  ok
else
  bad "generate on a truncated model: exit $rc, stderr: $(tail -c 300 "$WORK/gen.err")"
fi

echo "hostile_cli: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
