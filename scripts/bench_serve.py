#!/usr/bin/env python3
# Measures braid serve on 127.0.0.1: generated tokens/s and time to first token at several numbers of concurrent
# streaming clients, and a follow-up turn's time to first token with the prompt cache and without it.
# Usage: scripts/bench_serve.py BRAID MODEL [--clients 1,4,8] [--requests 16] [--tokens 64] [--turn-tokens 4000]
# (--requests may be a list, one count per client count; --turn-tokens 0 skips the follow-up turn)
import argparse
import json
import re
import socket
import statistics
import subprocess
import tempfile
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("braid")
ap.add_argument("model")
ap.add_argument("--clients", default="1,4,8")
ap.add_argument("--requests", default="16", help="requests per client count (or a list, one per client count)")
ap.add_argument("--tokens", type=int, default=64, help="max_tokens per request (EOS ignored)")
ap.add_argument("--turn-tokens", type=int, default=4000, help="length of the conversation for the follow-up test")
ap.add_argument("-t", "--threads", default="")
args = ap.parse_args()


def start(*extra):
    log = tempfile.TemporaryFile("w+")
    cmd = [args.braid, "serve", "-m", args.model, "--port", "0", *extra] + (["-t", args.threads] if args.threads else [])
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(600):
        log.seek(0)
        m = re.search(r"listening on http://[0-9.]+:(\d+)", log.read())
        if m:
            return p, int(m.group(1))
        time.sleep(0.05)
    raise SystemExit("server did not start")


def stream(port, path, body):
    data = json.dumps(dict(body, stream=True)).encode()
    s = socket.create_connection(("127.0.0.1", port))
    t0 = time.time()
    s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (path.encode(), len(data)) + data)
    f = s.makefile("rb")
    first, usage, text = None, None, []
    for line in f:
        if line.startswith(b"data: {"):
            j = json.loads(line[6:])
            ch = (j["choices"] or [{}])[0]
            piece = ch.get("text") or (ch.get("delta") or {}).get("content")
            if piece:
                text.append(piece)
                if first is None:
                    first = time.time() - t0
            usage = j.get("usage") or usage
        if line.startswith(b"data: [DONE]"):
            break
    s.close()
    return first, usage, "".join(text), time.time() - t0


prompts = ["Once upon a time", "The history of the", "In the beginning", "Python is a programming language"]
clients = [int(x) for x in args.clients.split(",")]
n_req = [int(x) for x in args.requests.split(",")]
n_req = n_req * len(clients) if len(n_req) == 1 else n_req
for n, n_requests in zip(clients, n_req):
    p, port = start("-np", str(n), "--cache-ram", "0")
    stream(port, "/v1/completions", {"prompt": "warm up", "max_tokens": 4})
    res, lock, nxt = [], threading.Lock(), [0]

    def client():
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= n_requests:
                return
            r = stream(port, "/v1/completions", {"prompt": prompts[i % len(prompts)] + f" {i}", "max_tokens": args.tokens,
                                                  "temperature": 0.8, "seed": i, "ignore_eos": True})
            with lock:
                res.append(r)

    t0 = time.time()
    ths = [threading.Thread(target=client) for _ in range(n)]
    [t.start() for t in ths]
    [t.join() for t in ths]
    wall = time.time() - t0
    gen = sum(r[1]["completion_tokens"] for r in res)
    ttft = sorted(r[0] for r in res)
    print(f"clients {n}: {len(res)} requests, {gen} tokens in {wall:.2f} s = {gen / wall:.1f} generated tok/s; "
          f"per stream {statistics.median(args.tokens / r[3] for r in res):.1f} tok/s; "
          f"time to first token p50 {statistics.median(ttft):.3f} s", flush=True)
    p.terminate()
    p.wait()

if args.turn_tokens <= 0:
    raise SystemExit(0)
# a follow-up turn: with the cache (same server) and without (a server that has never seen the conversation)
words = "the river runs past the old mill and the miller counts his sacks of grain before the winter comes . "
msgs = [{"role": "system", "content": words * max(1, args.turn_tokens // 32)}, {"role": "user", "content": "Tell me about the mill."}]
p, port = start("-np", "1", "-c", str(args.turn_tokens + 1024))
first1, u1, text, _ = stream(port, "/v1/chat/completions", {"messages": msgs, "max_tokens": 16, "temperature": 0})
msgs += [{"role": "assistant", "content": text}, {"role": "user", "content": "And the grain?"}]
first2, u2, _, _ = stream(port, "/v1/chat/completions", {"messages": msgs, "max_tokens": 16, "temperature": 0})
p.terminate()
p.wait()
p, port = start("-np", "1", "-c", str(args.turn_tokens + 1024))
first3, u3, _, _ = stream(port, "/v1/chat/completions", {"messages": msgs, "max_tokens": 16, "temperature": 0})
p.terminate()
p.wait()
print(f"turn 1: {u1['prompt_tokens']} prompt tokens, first token after {first1:.3f} s")
print(f"turn 2 with the cache: {u2['prompt_tokens']} prompt tokens, {u2['prompt_tokens_details']['cached_tokens']} cached, "
      f"first token after {first2:.3f} s")
print(f"turn 2 without it (a fresh server): {u3['prompt_tokens']} prompt tokens, "
      f"{u3['prompt_tokens_details']['cached_tokens']} cached, first token after {first3:.3f} s")
