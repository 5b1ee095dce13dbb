#!/usr/bin/env bash
# End-to-end checks of the braid program as a user runs it: good runs work, and every bad
# input (flag, file, model) gives one clear line on stderr and a non-zero exit, never a crash.
set -u
BRAID=$1
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
pass=0 fail=0

ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# expect CODE PATTERN -- command...: exit code CODE, stderr one line matching PATTERN
expect() {
  local code=$1 pat=$2; shift 3
  "$@" >"$WORK/out" 2>"$WORK/err" </dev/null
  local rc=$?
  local lines
  lines=$(wc -l <"$WORK/err")
  if [[ $rc -ne $code ]]; then bad "$* -> exit $rc, wanted $code; stderr: $(head -c 300 "$WORK/err")"; return; fi
  if [[ -n "$pat" ]] && ! grep -qE -- "$pat" "$WORK/err"; then bad "$* -> stderr lacks /$pat/: $(head -c 300 "$WORK/err")"; return; fi
  if [[ $code -ne 0 && $lines -ne 1 ]]; then bad "$* -> $lines lines on stderr, wanted 1"; return; fi
  ok
}

M=$WORK/tiny.gguf
expect 0 "wrote" -- "$BRAID" synth "$M" --preset tiny --seed 3
expect 0 "" -- "$BRAID" info "$M"
grep -q "plan:            M M M M A M M M M" "$WORK/out" && ok || bad "info plan line: $(cat "$WORK/out")"
grep -q "kv cache:        256 B per token" "$WORK/out" && ok || bad "info kv line"
expect 0 "tok/s" -- "$BRAID" generate -m "$M" --tokens 1,2,3 -n 8 --temp 0
[[ $(wc -w <"$WORK/out") -eq 8 ]] && ok || bad "generate printed $(cat "$WORK/out")"
greedy1=$(cat "$WORK/out")
expect 0 "" -- "$BRAID" generate -m "$M" --tokens 1,2,3 -n 8 --temp 0 --threads 1 --batch 1
[[ "$(cat "$WORK/out")" == "$greedy1" ]] && ok || bad "greedy output depends on threads/batch"
expect 0 "" -- "$BRAID" generate -m "$M" --tokens 1,2,3 -n 8 --temp 0.9 --seed 5
s1=$(cat "$WORK/out")
expect 0 "" -- "$BRAID" generate -m "$M" --tokens 1,2,3 -n 8 --temp 0.9 --seed 5
[[ "$(cat "$WORK/out")" == "$s1" ]] && ok || bad "same seed, different output"
expect 0 "" -- "$BRAID" generate -m "$M" --tokens 1,2,3 -n 8 --temp 0.9 --seed 5 --no-mmap
[[ "$(cat "$WORK/out")" == "$s1" ]] && ok || bad "--no-mmap changes the output"
expect 1 "cannot open" -- "$BRAID" generate -m "$WORK/missing.gguf" --tokens 1 --no-mmap

# usage errors: exit 2
expect 2 "unknown command" -- "$BRAID" frobnicate
expect 2 "unknown option '--bogus'" -- "$BRAID" generate -m "$M" --tokens 1 --bogus
expect 2 "needs a value" -- "$BRAID" generate -m "$M" --tokens
expect 2 "wants a count" -- "$BRAID" generate -m "$M" --tokens 1 -n 12x
expect 2 "temperature" -- "$BRAID" generate -m "$M" --tokens 1 --temp -1
expect 2 "ids like" -- "$BRAID" generate -m "$M" --tokens 1,,2
expect 2 "exactly one of" -- "$BRAID" generate -m "$M"
expect 2 "no model" -- "$BRAID" generate --tokens 1
expect 2 "no model file" -- "$BRAID" info
expect 2 "unknown preset" -- "$BRAID" synth "$WORK/x.gguf" --preset huge
expect 2 "multiple of" -- "$BRAID" synth "$WORK/x.gguf" --hidden 30 --heads 4
expect 2 "letters for" -- "$BRAID" synth "$WORK/x.gguf" --plan MMA
# runtime errors: exit 1, one line naming the problem
expect 1 "cannot open .*nope.gguf" -- "$BRAID" info "$WORK/nope.gguf"
expect 1 "not a regular file" -- "$BRAID" info "$WORK"
head -c 1000 "$M" >"$WORK/trunc.gguf"
expect 1 "trunc.gguf: .*truncated" -- "$BRAID" info "$WORK/trunc.gguf"
printf 'hello world, not a model' >"$WORK/text.gguf"
expect 1 "not a GGUF file" -- "$BRAID" generate -m "$WORK/text.gguf" --tokens 1
sed 's/jamba/llama/' "$M" >"$WORK/llama.gguf"
expect 1 "unsupported architecture 'llama'" -- "$BRAID" info "$WORK/llama.gguf"
expect 1 "outside the vocabulary" -- "$BRAID" generate -m "$M" --tokens 1,99999
expect 0 "does not fit.*generating at most 5" -- "$BRAID" generate -m "$M" --tokens 1,2,3 -n 10 --ctx 8 --temp 0
[[ $(wc -w <"$WORK/out") -eq 5 ]] && ok || bad "-n past the context: $(cat "$WORK/out")"
expect 1 "leaves no room" -- "$BRAID" generate -m "$M" --tokens 1,2,3,4 --ctx 4
expect 1 "no tokenizer" -- "$BRAID" generate -m "$M" -p "hello"
expect 1 "cannot create" -- "$BRAID" synth "$WORK/no/such/dir/x.gguf"

# convert and perplexity: bad directories, bad text
expect 2 "want HF_DIR and OUT.gguf" -- "$BRAID" convert "$WORK"
expect 1 "config.json" -- "$BRAID" convert "$WORK" "$WORK/out.gguf"
mkdir -p "$WORK/hf" && echo '{"architectures": ["LlamaForCausalLM"]}' >"$WORK/hf/config.json"
expect 1 "LlamaForCausalLM" -- "$BRAID" convert "$WORK/hf" "$WORK/out.gguf"
[[ ! -e "$WORK/out.gguf" ]] && ok || bad "a failed convert left $WORK/out.gguf behind"
# tokenizer_config.json's chat_template travels into tokenizer.chat_template; a list of templates is refused
HFT=$(dirname "$0")/fixtures/hf_tiny
mkdir -p "$WORK/hfc" && cp "$HFT"/config.json "$HFT"/model.safetensors "$HFT"/tokenizer.model "$WORK/hfc/"
printf '{"chat_template": "{%% for m in messages %%}<|im_start|>{{ m.role }}\\n{{ m.content }}<|im_end|>\\n{%% endfor %%}"}' \
  >"$WORK/hfc/tokenizer_config.json"
expect 0 "" -- "$BRAID" convert "$WORK/hfc" "$WORK/chat.gguf"
grep -qaF "tokenizer.chat_template" "$WORK/chat.gguf" && grep -qaF "<|im_start|>{{ m.role }}" "$WORK/chat.gguf" &&
  ok || bad "convert dropped the chat template"
echo '{"chat_template": [{"name": "default", "template": "x"}]}' >"$WORK/hfc/tokenizer_config.json"
expect 1 "chat_template wants one template string, found array" -- "$BRAID" convert "$WORK/hfc" "$WORK/chat2.gguf"
: >"$WORK/empty.txt"
echo "The quick brown fox jumps over the lazy dog. It was a bright cold day in April." >"$WORK/text.txt"
expect 1 "no tokenizer" -- "$BRAID" perplexity -m "$M" "$WORK/text.txt"
MT=$WORK/tok.gguf
FIX=$(dirname "$0")/fixtures/tok/test.model
expect 0 "wrote" -- "$BRAID" synth "$MT" --preset tiny --vocab-model "$FIX" --seed 2
expect 1 "the text is empty" -- "$BRAID" perplexity -m "$MT" "$WORK/empty.txt"
expect 0 "" -- "$BRAID" perplexity -m "$MT" "$WORK/text.txt" --ctx 16
grep -qE "^perplexity: [0-9.]+ over [0-9]+ tokens" "$WORK/out" && ok || bad "perplexity output: $(cat "$WORK/out")"
expect 0 "tok/s" -- "$BRAID" generate -m "$MT" -p "The quick brown" -n 8 --temp 0
expect 1 "cannot" -- "$BRAID" perplexity -m "$M" "$WORK/missing.txt"
expect 2 "unknown option" -- "$BRAID" perplexity -m "$M" --frob "$WORK/empty.txt"

# memory: measured table, CSV and plot, a what-if plan, and bad lengths
expect 0 "" -- "$BRAID" memory -m "$M" --ctx 256,512 --csv "$WORK/m.csv" --plot "$WORK/m.svg" --threads 1
grep -q "plan:  M M M M A M M M M" "$WORK/out" && ok || bad "memory table lacks the plan"
[[ $(wc -l <"$WORK/m.csv") -eq 3 ]] && head -1 "$WORK/m.csv" | grep -q "^context,kv_bytes" && ok || bad "memory csv: $(cat "$WORK/m.csv")"
grep -q "<svg" "$WORK/m.svg" && grep -q "</svg>" "$WORK/m.svg" && ok || bad "memory svg incomplete"
# readable plot: axis titles with units, labelled minor gridlines, computed dashed, legend says which
grep -q "memory (MiB, log scale)" "$WORK/m.svg" && grep -q "context length (tokens, log scale)" "$WORK/m.svg" &&
  grep -q "stroke-dasharray" "$WORK/m.svg" && grep -q ">measured: " "$WORK/m.svg" && grep -q ">computed: " "$WORK/m.svg" &&
  grep -q "stroke='#eee'" "$WORK/m.svg" && ok || bad "memory svg lacks titles, minor grid or measured/computed styles"
expect 0 "" -- "$BRAID" memory -m "$M" --ctx 256 --plan MAMAMAMAM --threads 1
grep -q "what-if" "$WORK/out" && grep -q "plan:  M A M A M A M A M" "$WORK/out" && ok || bad "what-if plan not used: $(head -3 "$WORK/out")"
expect 2 "no lengths" -- "$BRAID" memory -m "$M"
expect 2 "lengths like" -- "$BRAID" memory -m "$M" --ctx 1k,zz
expect 2 "letters for" -- "$BRAID" memory -m "$M" --ctx 256 --plan MAM
expect 2 "at least two lengths" -- "$BRAID" memory -m "$M" --ctx 256 --plot "$WORK/one.svg"
expect 1 "cannot write" -- "$BRAID" memory -m "$M" --ctx 256 --csv "$WORK/no/such/dir/m.csv"

# llama.cpp conventions (issue 16): generate
# A trained model shows the prompt/output join (its first generated piece starts with a space).
BUNDLED=$(dirname "$0")/../models/tiny-jamba.gguf
[[ -f $BUNDLED ]] && MG=$BUNDLED || MG=$MT
expect 0 "" -- "$BRAID" generate -m "$MG" -p "The whale" -n 8 --temp 0
full=$(cat "$WORK/out")
[[ $full == "The whale"* ]] && ok || bad "prompt not echoed: $full"
expect 0 "" -- "$BRAID" generate -m "$MG" -p "The whale" -n 8 --temp 0 --no-display-prompt
[[ "The whale$(cat "$WORK/out")" == "$full" ]] && ok || bad "--no-display-prompt: '$(cat "$WORK/out")' vs '$full'"
# prompt + output is the decoded sequence: decode prompt ids + generated ids in one go (-n 0 only echoes)
expect 0 "" -- "$BRAID" tokenize -m "$MG" "The whale"
pids=$(cut -f1 "$WORK/out" | paste -sd,)
expect 0 "" -- "$BRAID" generate -m "$MG" -p "The whale" -n 8 --temp 0 --ids
gids=$(tr ' ' ',' <"$WORK/out")
expect 0 "" -- "$BRAID" generate -m "$MG" --tokens "$pids,$gids" -n 0
[[ "$(cat "$WORK/out")" == "$full" ]] && ok || bad "prompt + output '$full' is not the decoded sequence '$(cat "$WORK/out")'"
# -f drops one trailing newline, as llama.cpp does
printf 'The whale\n' >"$WORK/p1.txt"
printf 'The whale\n\n' >"$WORK/p2.txt"
expect 0 "" -- "$BRAID" generate -m "$MG" -f "$WORK/p1.txt" -n 8 --temp 0
[[ "$(cat "$WORK/out")" == "$full" ]] && ok || bad "-f kept the trailing newline: $(cat "$WORK/out")"
expect 0 "" -- "$BRAID" generate -m "$MG" --file "$WORK/p2.txt" -n 0
printf 'The whale\n\n' | cmp -s - "$WORK/out" && ok || bad "-f dropped more than one newline: $(cat "$WORK/out")"
expect 1 "cannot read .*nope.txt: No such file" -- "$BRAID" generate -m "$MG" -f "$WORK/nope.txt"
# -r stops right after the reverse prompt: the output is a prefix of the unstopped one, ending with it
word=$(tr -s ' \n' '\n\n' <<<"${full#The whale}" | sed -n 3p)
if [[ -n $word ]]; then
  expect 0 "" -- "$BRAID" generate -m "$MG" -p "The whale" -n 8 --temp 0 -r "zzzq" --reverse-prompt "$word"
  rout=$(cat "$WORK/out")
  [[ $rout == *"$word" && $full == "$rout"* && ${#rout} -lt ${#full} ]] && ok || bad "-r '$word': '$rout' vs '$full'"
fi
# -n -1: until the context is full (this model has no end-of-text token); --ignore-eos accepted
expect 0 "" -- "$BRAID" generate -m "$M" --tokens 1,2,3 -n -1 -c 16 --temp 0 --ignore-eos
[[ $(wc -w <"$WORK/out") -eq 13 ]] && ok || bad "-n -1 with -c 16: $(cat "$WORK/out")"
expect 0 "" -- "$BRAID" generate -m "$MG" -p "The whale" -n -1 -c 24 --temp 0 --ignore-eos --ids
[[ $(wc -w <"$WORK/out") -eq 21 ]] && ok || bad "--ignore-eos -n -1 stopped early: $(cat "$WORK/out")"
# a clock seed is printed and repeats the run
expect 0 "seed [0-9]+ .*-s [0-9]+ repeats" -- "$BRAID" generate -m "$MG" -p "The whale" -n 12 --temp 1.5
r1=$(cat "$WORK/out"); seed=$(grep -oE 'seed [0-9]+' "$WORK/err" | cut -d' ' -f2)
expect 0 "" -- "$BRAID" generate -m "$MG" -p "The whale" -n 12 --temp 1.5 -s "$seed"
[[ "$(cat "$WORK/out")" == "$r1" ]] && ok || bad "-s $seed did not repeat the run"
# llama.cpp spellings; -ngl noted and ignored; --log-disable leaves stderr empty
expect 0 "note: -ngl 99 ignored: braid runs on the CPU" -- "$BRAID" generate -m "$MG" -p "The whale" --n-predict 4 \
  --ctx-size 64 --batch-size 2 --threads 1 --seed 1 --top-k 5 --top-p 0.9 --min-p 0.1 --repeat-penalty 1.1 -ngl 99 -no-cnv
expect 0 "" -- "$BRAID" generate -m "$MG" -p "The whale" -n 4 -ngl 99 --log-disable
[[ ! -s "$WORK/err" ]] && ok || bad "--log-disable printed: $(cat "$WORK/err")"
expect 0 "" -- "$BRAID" generate -m "$MG" -p "The whale" -n 2 --temp=0 --color
grep -q $'\e\[33mThe whale\e\[0m' "$WORK/out" && ok || bad "--color did not colour the prompt"
NO_COLOR=1 expect 0 "" -- "$BRAID" generate -m "$MG" -p "The whale" -n 2 --temp 0 --color
! grep -q $'\e' "$WORK/out" && ok || bad "--color ignored NO_COLOR"
expect 0 "trained on 4096" -- "$BRAID" generate -m "$M" --tokens 1,2 -n 2 -c 64k
expect 2 "takes no value" -- "$BRAID" generate -m "$M" --tokens 1 --ignore-eos=1
expect 2 "does not apply" -- "$BRAID" generate -m "$M" --tokens 1 --plot x.svg
expect 2 "wants a count >= -1" -- "$BRAID" generate -m "$M" --tokens 1 -n -2
expect 2 "wants a whole number >= -1" -- "$BRAID" generate -m "$M" --tokens 1 -s x
expect 2 "context size" -- "$BRAID" generate -m "$M" --tokens 1 -c 12q
# info and tokenize take -m and -p like the rest; a text file is not a model
expect 0 "" -- "$BRAID" info -m "$M"
grep -q "plan:            M M M M A M M M M" "$WORK/out" && ok || bad "info -m: $(cat "$WORK/out")"
expect 2 "one model file at a time" -- "$BRAID" info -m "$M" "$M"
expect 0 "" -- "$BRAID" tokenize -m "$MT" -p "The quick brown"
byp=$(cat "$WORK/out")
expect 0 "" -- "$BRAID" tokenize -m "$MT" "The quick brown"
[[ -n $byp && "$(cat "$WORK/out")" == "$byp" ]] && ok || bad "tokenize -p differs from the positional text"
expect 2 "give the text once" -- "$BRAID" tokenize -m "$MT" -p "a" "b"
expect 2 "either a text" -- "$BRAID" tokenize -m "$MT" -p "a" -f "$WORK/text.txt"
expect 1 "text.txt is not a GGUF model" -- "$BRAID" tokenize -m "$WORK/text.txt" -p "hello"
expect 1 "cannot open .*nope.gguf: No such file" -- "$BRAID" tokenize -m "$WORK/nope.gguf" -p "hello"
expect 1 "cannot read .*nope.txt: No such file" -- "$BRAID" tokenize -m "$MT" -f "$WORK/nope.txt"
# --help of every command comes from the table (and checks it: no name declared twice)
for c in info generate tokenize memory synth convert perplexity; do
  expect 0 "" -- "$BRAID" $c --help
  grep -q "^usage: braid $c" "$WORK/out" && ok || bad "$c --help: $(head -3 "$WORK/out")"
  [[ -z $(awk 'length > 100' "$WORK/out") ]] && ok || bad "$c --help has lines over 100 columns"
done

# perplexity: -f, llama-perplexity's scoring by default (second half of each window), said in the output
for i in 1 2 3 4 5 6; do cat "$WORK/text.txt"; done >"$WORK/long.txt"
expect 0 "note: .*llama-perplexity's method" -- "$BRAID" perplexity -m "$MT" -f "$WORK/long.txt" -c 16
half=$(cat "$WORK/out")
nwin=$(grep -oE '\(([0-9]+) windows of 16' <<<"$half" | grep -oE '[0-9]+' | head -1)
[[ $half =~ ^perplexity:\ [0-9.]+\ over\ ([0-9]+)\ tokens.*as\ llama-perplexity ]] && [[ ${BASH_REMATCH[1]} -eq $((nwin * 7)) ]] \
  && ok || bad "perplexity half windows: $half"
expect 0 "" -- "$BRAID" perplexity -m "$MT" "$WORK/long.txt" --ctx-size 16 --batch-size 3 --log-disable
# the same windows and tokens scored whatever the step size; the value to float rounding (1e-6 relative)
awk -v a="$half" -v b="$(cat "$WORK/out")" 'BEGIN { split(a, x, " "); split(b, y, " "); d = x[2] - y[2];
  exit !(x[4] == y[4] && d * d < 1e-12 * x[2] * x[2]) }' && [[ ! -s "$WORK/err" ]] && ok \
  || bad "perplexity depends on -b: $(cat "$WORK/out") vs $half"
expect 0 "" -- "$BRAID" perplexity -m "$MT" -f "$WORK/long.txt" -c 16 --all-tokens
grep -qE "^perplexity: [0-9.]+ over [0-9]+ tokens .*scored: every token" "$WORK/out" && ok || bad "--all-tokens: $(cat "$WORK/out")"
expect 1 "less than one window of -c 4096" -- "$BRAID" perplexity -m "$MT" -f "$WORK/text.txt" -c 4096
expect 2 "give the text once" -- "$BRAID" perplexity -m "$MT" -f "$WORK/text.txt" "$WORK/text.txt"
expect 2 "window length from 3" -- "$BRAID" perplexity -m "$MT" -f "$WORK/text.txt" -c 2
expect 1 "cannot read .*nope.txt: No such file" -- "$BRAID" perplexity -m "$MT" -f "$WORK/nope.txt"

# memory: outputs checked before measuring (no table printed, no file left), long runs announced
expect 1 "cannot write .*no/such/dir/m.svg: No such file" -- "$BRAID" memory -m "$M" -c 256,512 --plot "$WORK/no/such/dir/m.svg"
[[ ! -s "$WORK/out" ]] && ok || bad "memory measured before finding the plot path unwritable"
expect 1 "cannot write .*: Is a directory" -- "$BRAID" memory -m "$M" -c 256,512 --csv "$WORK"
expect 2 "at least two lengths" -- "$BRAID" memory -m "$M" -c 256 --plot "$WORK/one.svg" --csv "$WORK/one.csv"
[[ ! -e "$WORK/one.csv" && ! -e "$WORK/one.svg" ]] && ok || bad "a refused memory run left files behind"
expect 0 "note: prefilling 512 tokens for 2 lengths; at least .* tok/s" -- "$BRAID" memory -m "$M" --ctx-size 256,512 -t 1
"$BRAID" memory -m "$M" -c 8m -t 1 >/dev/null 2>"$WORK/err" &
pid=$!
for _ in $(seq 100); do grep -q "prefilling" "$WORK/err" && break; sleep 0.2; done
kill $pid; wait $pid 2>/dev/null
grep -qE "note: prefilling 8388608 tokens for 1 length; at least [0-9.]+ (s|minutes|hours) at" "$WORK/err" && ok \
  || bad "memory -c 8m did not say what it will do: $(cat "$WORK/err")"

# --version: commit, compiler, SIMD level found at run time, BLAS
expect 0 "" -- "$BRAID" --version
grep -qE "^commit: +([0-9a-f]{12}|unknown)$" "$WORK/out" && grep -qE "^compiler: +(gcc|clang) [0-9]" "$WORK/out" &&
  grep -qE "^simd: +(scalar|avx2|avx512) " "$WORK/out" && grep -qE "^blas: +OpenBLAS [0-9]" "$WORK/out" && ok ||
  bad "--version: $(cat "$WORK/out")"

# Ctrl-C: the timing line, then exit 130
"$BRAID" generate -m "$M" --tokens 1,2,3 -n -1 -c 64k --ignore-eos >"$WORK/out" 2>"$WORK/err" &
pid=$!
sleep 1
kill -INT $pid
wait $pid
rc=$?
[[ $rc -eq 130 ]] && grep -q "generated [0-9]* tokens.*interrupted" "$WORK/err" && ok || bad "Ctrl-C: exit $rc, $(cat "$WORK/err")"

# batched-bench and memory with an attention window (sequence state)
expect 0 "" -- "$BRAID" batched-bench -m "$M" -npp 16 -ntg 2 -npl 1,3 --rollback 40 --forks 2
grep -q "^|    3 |     16 |" "$WORK/out" && grep -q "snapshot at the turn boundary.* | 0 |" "$WORK/out" &&
  grep -q "no snapshot: re-process from the start | 20 |" "$WORK/out" && grep -q "^| 2 forks |" "$WORK/out" && ok ||
  bad "batched-bench output: $(head -c 600 "$WORK/out")"
expect 2 "npl wants counts" -- "$BRAID" batched-bench -m "$M" -npl 1,x
expect 2 "attn-window wants" -- "$BRAID" memory -m "$M" -c 64 --attn-window -1
expect 0 "" -- "$BRAID" memory -m "$M" -c 64,128 --attn-window 32
grep -q "attention window: the last 32 tokens" "$WORK/out" && ok || bad "memory --attn-window: $(head -c 300 "$WORK/out")"

# quantize, info per type, bench, and -t past the CPUs
Q=$WORK/tiny-q4km.gguf
expect 0 "wrote .*Q4_K_M.*fallback" -- "$BRAID" quantize "$M" "$Q" Q4_K_M -t 2
expect 0 "" -- "$BRAID" info "$Q"
grep -qE "^  Q5_0 +[0-9]+ tensors" "$WORK/out" && grep -qE "^  F32 +[0-9]+ tensors" "$WORK/out" && ok ||
  bad "info per-type lines: $(head -c 600 "$WORK/out")"
expect 0 "" -- "$BRAID" generate -m "$Q" --tokens 1,2,3 -n 4 --temp 0 --ids
expect 0 "wrote .*Q8_0" -- "$BRAID" quantize "$M" "$WORK/tiny-q8.gguf" q8_0
expect 2 "unknown type 'Q3_K'" -- "$BRAID" quantize "$M" "$WORK/x.gguf" Q3_K
expect 2 "want IN.gguf OUT.gguf TYPE" -- "$BRAID" quantize "$M" Q8_0
expect 1 "cannot open .*nope.gguf" -- "$BRAID" quantize "$WORK/nope.gguf" "$WORK/x.gguf" Q8_0
expect 1 "cannot create .*nodir/x.gguf" -- "$BRAID" quantize "$M" "$WORK/nodir/x.gguf" Q8_0
expect 0 "" -- "$BRAID" bench -m "$Q" -p 8 -n 4 -r 2 -o csv
[[ $(grep -c "^tiny-q4km.gguf,Q" "$WORK/out") -eq 2 ]] && head -1 "$WORK/out" | grep -q "^model,type,size_bytes" && ok ||
  bad "bench csv: $(head -c 400 "$WORK/out")"
expect 0 "" -- "$BRAID" bench -m "$Q" -p 8 -n 4 -r 2 -o json
grep -q '"test": "tg", "n": 4' "$WORK/out" && ok || bad "bench json: $(head -c 400 "$WORK/out")"
expect 0 "" -- "$BRAID" bench -m "$Q" -p 8 -n 4 -r 2
grep -qE "^\| tiny-q4km.gguf .* \| pp8 \| [0-9.]+ ± [0-9.]+ \|$" "$WORK/out" && ok || bad "bench table: $(head -c 400 "$WORK/out")"
expect 2 "-o wants md, csv or json" -- "$BRAID" bench -m "$Q" -o xml
expect 2 "no model file" -- "$BRAID" bench
for c in quantize bench; do
  expect 0 "" -- "$BRAID" $c --help
  grep -q "^usage: braid $c" "$WORK/out" && ok || bad "$c --help: $(head -3 "$WORK/out")"
done
ncpu=$(getconf _NPROCESSORS_ONLN)
expect 0 "warning: -t 999 is more than the $ncpu online CPUs; using $ncpu" -- "$BRAID" generate -m "$M" --tokens 1,2 -n 2 --temp 0 -t 999

echo "cli: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
