#!/usr/bin/env bash
# braid generate's search flags end to end on the bundled model: beam 1 and best-of-1 against plain runs,
# each best-of-N candidate against the same seed alone, and a verifier program that fails, hangs, or
# prints garbage giving one clear error line (exit 1), never a pick; flags that do not go together (exit 2).
set -u
BRAID=$1
M=$2
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# expect CODE PATTERN -- command...: exit code CODE, stderr matching PATTERN, one line when failing
expect() {
  local code=$1 pat=$2; shift 3
  "$@" >"$WORK/out" 2>"$WORK/err" </dev/null
  local rc=$?
  if [[ $rc -ne $code ]]; then bad "$* -> exit $rc, wanted $code; stderr: $(head -c 300 "$WORK/err")"; return; fi
  if [[ -n "$pat" ]] && ! grep -qE -- "$pat" "$WORK/err"; then bad "$* -> stderr lacks /$pat/: $(head -c 300 "$WORK/err")"; return; fi
  if [[ $code -ne 0 && $(wc -l <"$WORK/err") -ne 1 ]]; then bad "$* -> $(wc -l <"$WORK/err") lines on stderr, wanted 1"; return; fi
  ok
}

P="The whale"
G=(generate -m "$M" -p "$P" -n 24 --log-disable)
# beam of one = greedy, token for token
expect 0 "" -- "$BRAID" "${G[@]}" --temp 0 --ids
greedy=$(cat "$WORK/out")
expect 0 "" -- "$BRAID" "${G[@]}" --beam 1 --ids
[[ "$(cat "$WORK/out")" == "$greedy" ]] && ok || bad "beam 1: $(cat "$WORK/out") | greedy: $greedy"
# best-of-1 = the plain sample with the same seed, as text too
expect 0 "" -- "$BRAID" "${G[@]}" --seed 77
plain=$(cat "$WORK/out")
expect 0 "" -- "$BRAID" "${G[@]}" --seed 77 --best-of 1
[[ "$(cat "$WORK/out")" == "$plain" ]] && ok || bad "best-of-1: $(cat "$WORK/out") | plain: $plain"
# best-of-4: candidate i is the sample with seed 77+i alone; the pick has the best score
expect 0 "" -- "$BRAID" "${G[@]}" --seed 77 --best-of 4 --json
python3 - "$WORK/out" "$BRAID" "$M" "$P" <<'PY' && ok || bad "best-of-4 candidates against lone runs"
import json, subprocess, sys
out, braid, model, prompt = sys.argv[1:]
r = json.load(open(out))
assert len(r["candidates"]) == 4 and r["forwards"] <= 24, r
for i, c in enumerate(r["candidates"]):
    alone = subprocess.run([braid, "generate", "-m", model, "-p", prompt, "-n", "24", "--log-disable", "--ids",
                            "--seed", str(77 + i)], capture_output=True, text=True, check=True).stdout.split()
    assert c["seed"] == 77 + i and [str(t) for t in c["tokens"]] == alone, (i, c["tokens"], alone)
assert max(c["score"] for c in r["candidates"]) == r["candidates"][r["best"]]["score"]
PY
# a verifier that works: the score is the number of 'e's; the pick has the most
cat >"$WORK/count_e.sh" <<'SH'
tr -cd e | wc -c
SH
expect 0 "" -- "$BRAID" "${G[@]}" --seed 3 --best-of 4 --json --verifier "sh $WORK/count_e.sh"
python3 - "$WORK/out" "$P" <<'PY' && ok || bad "verifier scores"
import json, sys
r = json.load(open(sys.argv[1]))
for c in r["candidates"]:
    assert c["score"] == (sys.argv[2] + c["text"]).count("e"), c
assert r["candidates"][r["best"]]["score"] == max(c["score"] for c in r["candidates"])
PY
# verifiers that fail, hang, print garbage, print nothing, print two numbers, or do not exist
expect 1 "verifier 'exit 3' failed \(exit status 3\)" -- "$BRAID" "${G[@]}" --best-of 2 --verifier "exit 3"
expect 1 "did not finish within 0.5 s" -- "$BRAID" "${G[@]}" --best-of 2 --verifier "sleep 30" --verifier-timeout 0.5
expect 1 "did not finish within 0.5 s" -- "$BRAID" "${G[@]}" --best-of 2 --verifier "echo 1; sleep 30" --verifier-timeout 0.5
expect 1 "printed 'banana', not a number" -- "$BRAID" "${G[@]}" --best-of 2 --verifier "echo banana"
expect 1 "printed '', not a number" -- "$BRAID" "${G[@]}" --best-of 2 --verifier "cat >/dev/null"
expect 1 "not a number" -- "$BRAID" "${G[@]}" --best-of 2 --verifier "echo 1 2"
expect 1 "not a number" -- "$BRAID" "${G[@]}" --best-of 2 --verifier "echo nan"
expect 1 "killed by signal 9" -- "$BRAID" "${G[@]}" --best-of 2 --verifier 'kill -9 $$'
expect 1 "could not be run" -- "$BRAID" "${G[@]}" --best-of 2 --verifier "/nonexistent/verifier 2>/dev/null"
# a verifier that reads nothing still gives its score
expect 0 "" -- "$BRAID" "${G[@]}" -n 200 --best-of 2 --verifier "echo 0.5"
# self-consistency and step beam run; the model as its own verifier runs
expect 0 "self-consistency, 4 candidates" -- "$BRAID" generate -m "$M" -p "$P" -n 12 --self-consistency 4 --answer-regex "([a-z]+)"
expect 0 "step-beam, 2 candidates" -- "$BRAID" generate -m "$M" -p "$P" -n 12 --beam 2 --beam-step " " --verifier "sh $WORK/count_e.sh"
expect 0 "best-of, 3 candidates" -- "$BRAID" generate -m "$M" -p "$P" -n 8 --best-of 3 --verifier-prompt " Is this right?"
# flags that do not go together
expect 2 "at most one of" -- "$BRAID" "${G[@]}" --best-of 2 --beam 2
expect 2 "go together" -- "$BRAID" "${G[@]}" --self-consistency 4
expect 2 "go together" -- "$BRAID" "${G[@]}" --answer-regex "x"
expect 2 "needs --beam" -- "$BRAID" "${G[@]}" --beam-step x
expect 2 "one of --verifier and --verifier-prompt" -- "$BRAID" "${G[@]}" --best-of 2 --verifier x --verifier-prompt y
expect 2 "a verifier scores" -- "$BRAID" "${G[@]}" --beam 2 --verifier x
expect 2 "go with --best-of" -- "$BRAID" "${G[@]}" --json
expect 2 "best-of wants a count" -- "$BRAID" "${G[@]}" --best-of 0
expect 1 "answer regex" -- "$BRAID" "${G[@]}" --self-consistency 2 --answer-regex "(["
echo "search cli: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
