#!/usr/bin/env bash
# docs/deploy/nginx.conf on 127.0.0.1: two braid servers behind Debian's nginx. Every turn of a conversation
# (same X-Conversation-Id) reaches the server that holds it (its next turn is served from the cache),
# conversations spread over both servers, and a stream passes through unbuffered to [DONE].
# Usage: tests/deploy_test.sh BRAID MODEL WORKDIR   (skips with a message when nginx is missing)
set -uo pipefail
braid=$1 model=$2 work=$3
here=$(cd "$(dirname "$0")" && pwd)
nginx=$(command -v nginx || echo /usr/sbin/nginx)
if [[ ! -x $nginx ]]; then echo "SKIP: no nginx (scripts/deps.sh --tests installs nginx-light)"; exit 0; fi
rm -rf "$work"; mkdir -p "$work"
# start runs in a command substitution (a subshell), so the servers' pids go to files, not a variable
cleanup() {
  for f in "$work"/*.serve-pid "$work/nginx.pid"; do [[ -f $f ]] && kill "$(cat "$f")" 2>/dev/null; done
  return 0
}
trap cleanup EXIT
start() { # NAME -> port
  "$braid" serve -m "$model" --port 0 -np 2 >"$work/$1.log" 2>&1 &
  echo $! >"$work/$1.serve-pid"
  for _ in $(seq 600); do
    p=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$work/$1.log" | grep -o '[0-9]*$') && { echo "$p"; return; }
    sleep 0.05
  done
  echo "server $1 did not start" >&2; exit 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
a=$(start a); b=$(start b); lb=$(free_port)
sed -e "s|@DIR@|$work|g" -e "s|@PORT_A@|$a|" -e "s|@PORT_B@|$b|" -e "s|@PORT_LB@|$lb|" "$here/../docs/deploy/nginx.conf" >"$work/nginx.conf"
"$nginx" -c "$work/nginx.conf" -p "$work" -e "$work/error.log" || { echo "FAIL: nginx did not start"; cat "$work/error.log"; exit 1; }
for _ in $(seq 100); do curl -s "http://127.0.0.1:$lb/health" >/dev/null && break; sleep 0.05; done
python3 - "$lb" "$a" "$b" <<'PY'
import json, sys, urllib.request
lb, a, b = sys.argv[1:]
fails = []
def post(port, body, conv):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json", "X-Conversation-Id": conv})
    return urllib.request.urlopen(req, timeout=300)
def metric(port, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    return float([l.split()[1] for l in text.splitlines() if l.startswith(name + " ")][0])
words = "the river runs past the old mill and the miller counts his sacks of grain . "
for i in range(8):
    conv = f"conversation-{i}"
    msgs = [{"role": "system", "content": words * 20}, {"role": "user", "content": f"Question {i}?"}]
    j = json.load(post(lb, {"messages": msgs, "max_tokens": 8, "temperature": 0}, conv))
    msgs += [{"role": "assistant", "content": j["choices"][0]["message"]["content"]}, {"role": "user", "content": "More?"}]
    # a stream through the balancer: events arrive and end with [DONE]
    r = post(lb, {"messages": msgs, "max_tokens": 8, "temperature": 0, "stream": True}, conv)
    body = r.read().decode()
    usage = [json.loads(l[6:]) for l in body.split("\n") if l.startswith("data: {")][-1]["usage"]
    if not body.rstrip().endswith("data: [DONE]"):
        fails.append(f"{conv}: the stream did not end with [DONE]")
    new = usage["prompt_tokens"] - usage["prompt_tokens_details"]["cached_tokens"]
    # a turn's own tokens (17 in ChatML, the bundled model's template); the other server would have to
    # read the whole 300-token system message again
    if new > 40:
        fails.append(f"{conv}: turn 2 evaluated {new} tokens: it reached the other server")
ra, rb = metric(a, "braid_requests_total"), metric(b, "braid_requests_total")
print(f"completions: server A {ra:.0f}, server B {rb:.0f}")
# Spread: the ring's points depend on the servers' random ports, so 8 conversations can all hash to
# one server now and then; 64 more conversation ids on a cheap route make that chance negligible.
# Each /metrics read counts itself on its own server, hence the 1 taken off.
ha, hb = metric(a, "braid_http_requests_total"), metric(b, "braid_http_requests_total")
for i in range(64):
    req = urllib.request.Request(f"http://127.0.0.1:{lb}/v1/models", headers={"X-Conversation-Id": f"spread-{i}"})
    urllib.request.urlopen(req, timeout=60).read()
sa = metric(a, "braid_http_requests_total") - ha - 1
sb = metric(b, "braid_http_requests_total") - hb - 1
print(f"64 more conversation ids: server A {sa:.0f}, server B {sb:.0f}")
if sa + sb != 64:
    fails.append(f"the 64 spread requests were counted {sa + sb:.0f} times")
if ra + sa == 0 or rb + sb == 0:
    fails.append("the conversations did not spread over both servers")
for f in fails:
    print("FAIL:", f)
sys.exit(1 if fails else 0)
PY
rc=$?
[[ $rc -eq 0 ]] && echo "deploy: nginx keeps each conversation on its server"
exit $rc
