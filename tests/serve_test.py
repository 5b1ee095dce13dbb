#!/usr/bin/env python3
# braid serve over a real socket on 127.0.0.1: greedy completions equal braid generate, the prompt cache, disconnects,
# hostile requests, concurrent streaming clients, and the npm openai client. Python standard library only.
import argparse
import http.client
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("--braid", required=True)
ap.add_argument("--model", required=True)
ap.add_argument("--work", required=True, help="folder for the npm client and logs")
ap.add_argument("--quick", action="store_true", help="smaller load and conversation (sanitizer builds)")
ap.add_argument("--only", default="", help="comma-separated test names")
args = ap.parse_args()
os.makedirs(args.work, exist_ok=True)

HOST = "127.0.0.1"
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, flush=True)
    return cond


class Server:
    def __init__(self, *extra, name="srv"):
        self.log = open(os.path.join(args.work, name + ".log"), "w+")
        self.p = subprocess.Popen([args.braid, "serve", "-m", args.model, "--host", HOST, "--port", "0", *extra],
                                  stdout=self.log, stderr=subprocess.STDOUT)
        t0 = time.time()
        self.port = None
        while time.time() - t0 < 60 and self.p.poll() is None:
            self.log.seek(0)
            m = re.search(r"listening on http://[0-9.]+:(\d+)", self.log.read())
            if m:
                self.port = int(m.group(1))
                break
            time.sleep(0.05)
        if not self.port:
            self.log.seek(0)
            sys.exit("server did not start: " + self.log.read())

    def rss_kib(self):
        with open(f"/proc/{self.p.pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

    def stop(self):
        self.p.terminate()
        try:
            rc = self.p.wait(30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = -9
        check(rc == 0, f"server exits 0 on SIGTERM (got {rc})")
        self.log.seek(0)
        tail = self.log.read()[-2000:]
        check("Sanitizer" not in tail and "runtime error" not in tail, "no sanitizer report: " + tail)


def request(port, method, path, body=None, headers=None, timeout=120):
    c = http.client.HTTPConnection(HOST, port, timeout=timeout)
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    c.request(method, path, data, h)
    r = c.getresponse()
    out = r.read()
    c.close()
    return r.status, out, r


def post(port, path, body, **kw):
    st, out, r = request(port, "POST", path, body, **kw)
    return st, json.loads(out), r


def stream(port, path, body, close_after=None, timeout=300, pieces=None, until=None, events=None):
    """Streams an SSE response: (text, last chunk, t_first_token, saw_done). pieces, a list, gets each text chunk;
    until, a function called after each event, ends the stream (the client goes away) when it returns true;
    events, a list, gets every event's JSON."""
    body = dict(body, stream=True)
    s = socket.create_connection((HOST, port), timeout=timeout)
    data = json.dumps(body).encode()
    t0 = time.time()
    s.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
              str(len(data)).encode() + b"\r\n\r\n" + data)
    f = s.makefile("rb")
    status = f.readline()
    if b" 200 " not in status:
        rest = f.read()
        s.close()
        raise RuntimeError("stream status " + status.decode() + rest.decode(errors="replace"))
    while f.readline() not in (b"\r\n", b""):
        pass
    text, last, t_first, done, n_events = [], None, None, False, 0
    buf = b""
    while True:
        size = f.readline()
        if not size:
            break
        n = int(size.strip(), 16)
        if n == 0:
            f.readline()
            break
        buf += f.read(n)
        f.read(2)
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            assert ev.startswith(b"data: "), ev
            d = ev[6:]
            if d == b"[DONE]":
                done = True
                continue
            j = json.loads(d)
            last = j
            if events is not None:
                events.append(j)
            ch = j["choices"][0] if j.get("choices") else {}
            piece = ch.get("text") if "text" in ch else (ch.get("delta") or {}).get("content")
            if piece:
                if t_first is None:
                    t_first = time.time() - t0
                text.append(piece)
                if pieces is not None:
                    pieces.append(piece)
            n_events += 1
            if (close_after and n_events >= close_after) or (until and until()):
                s.close()
                return "".join(text), last, t_first, False
    s.close()
    return "".join(text), last, t_first, done


def generate(prompt, n, *extra):
    out = subprocess.run([args.braid, "generate", "-m", args.model, "-p", prompt, "-n", str(n), "--temp", "0",
                          "--no-display-prompt", "--log-disable", *extra], capture_output=True, check=True)
    t = out.stdout.decode()
    return t[:-1] if t.endswith("\n") else t


def metrics(port):
    st, out, _ = request(port, "GET", "/metrics")
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(braid_\w+) ([0-9.e+-]+)$", out.decode(), re.M)}


PROMPTS = ["Once upon a time", "The history of the", "In the beginning God created", "Python is a programming language",
           "The whale", "Mr. President, members of Congress", "def main():", "Call me Ishmael."]


def want(name):
    return not args.only or name in args.only.split(",")


# ------------------------------------------------------------------------------------------------------------
srv = Server("-np", "4", "-c", "8192", "--timeout", "3", name="main")
port = srv.port
print(f"server on port {port}", flush=True)

if want("parity"):
    # greedy: the same text as braid generate, streamed and not
    for p in PROMPTS[:4]:
        ref = generate(p, 32)
        st, j, _ = post(port, "/v1/completions", {"prompt": p, "max_tokens": 32, "temperature": 0})
        check(st == 200, f"completion status {st}")
        got = j["choices"][0]["text"]
        check(got == ref, f"non-streamed completion equals generate for {p!r}: {got!r} vs {ref!r}")
        check(j["usage"]["prompt_tokens"] > 0 and j["usage"]["completion_tokens"] <= 32, "usage counts")
        text, last, _, done = stream(port, "/v1/completions", {"prompt": p, "max_tokens": 32, "temperature": 0})
        check(text == ref and done, f"streamed completion equals generate for {p!r}: {text!r} vs {ref!r}")
        check(last["choices"][0]["finish_reason"] in ("stop", "length"), "a finish_reason in the last chunk")
    # the same seed gives the same sampled text; chat streamed equals chat not streamed
    body = {"prompt": "The whale", "max_tokens": 24, "temperature": 0.9, "seed": 42}
    a = post(port, "/v1/completions", body)[1]["choices"][0]["text"]
    b = stream(port, "/v1/completions", body)[0]
    check(a == b, f"seeded sampling repeats: {a!r} vs {b!r}")
    msgs = [{"role": "user", "content": "What is a whale?"}]
    a = post(port, "/v1/chat/completions", {"messages": msgs, "max_tokens": 24, "temperature": 0})[1]
    b, last, _, done = stream(port, "/v1/chat/completions", {"messages": msgs, "max_tokens": 24, "temperature": 0})
    check(a["choices"][0]["message"]["content"] == b and done, "chat streamed equals chat not streamed")
    check(a["object"] == "chat.completion" and last["object"] == "chat.completion.chunk", "chat object names")
    # stop strings end the text before them
    ref = generate("Once upon a time", 32)
    cut = ref[5:9]
    j = post(port, "/v1/completions", {"prompt": "Once upon a time", "max_tokens": 32, "temperature": 0, "stop": [cut]})[1]
    check(j["choices"][0]["text"] == ref[:ref.index(cut)] and j["choices"][0]["finish_reason"] == "stop",
          f"stop string {cut!r}: {j['choices'][0]['text']!r}")
    # n and best_of through the search module: candidate i is sampled with seed + i, ranked by mean log-probability
    body = {"prompt": "The whale", "max_tokens": 12, "temperature": 0.9, "seed": 5}
    singles = {post(port, "/v1/completions", dict(body, seed=5 + i))[1]["choices"][0]["text"] for i in range(3)}
    st, j, _ = post(port, "/v1/completions", dict(body, n=3))
    texts = [c["text"] for c in j["choices"]]
    check(st == 200 and [c["index"] for c in j["choices"]] == [0, 1, 2], f"n=3 gives three choices: {j}")
    check(set(texts) == singles, f"n=3's choices are the samples of seeds 5, 6, 7: {texts} vs {singles}")
    st, j, _ = post(port, "/v1/completions", dict(body, n=1, best_of=3))
    check(st == 200 and len(j["choices"]) == 1 and j["choices"][0]["text"] in singles and
          j["usage"]["completion_tokens"] >= 3, f"best_of=3 returns one of the three: {j}")

    def by_choice(evs, chat):
        """A stream's events by choice index: texts, finish reasons, and the index of each text chunk in order."""
        texts, fins, order = {}, {}, []
        for e in evs:
            for c in e.get("choices") or []:
                piece = (c.get("delta") or {}).get("content") if chat else c.get("text")
                if piece:
                    texts[c["index"]] = texts.get(c["index"], "") + piece
                    order.append(c["index"])
                if c.get("finish_reason"):
                    check(c["index"] not in fins, f"one finish_reason per choice ({c['index']})")
                    fins[c["index"]] = c["finish_reason"]
        return texts, fins, order

    # n > 1 streamed token by token: every choice's chunks carry its index, interleaved as the choices are decoded
    # together; each choice's streamed text equals the non-streamed one (seeded sampling and greedy)
    for b, chat in [(dict(body, n=3, max_tokens=24), False), (dict(body, n=2, temperature=0, max_tokens=16), False),
                    ({"messages": [{"role": "user", "content": "What is a whale?"}], "n": 3, "max_tokens": 16,
                      "temperature": 0.9, "seed": 11}, True)]:
        path = "/v1/chat/completions" if chat else "/v1/completions"
        st, whole, _ = post(port, path, b)
        want_t = {c["index"]: c["message"]["content"] if chat else c["text"] for c in whole["choices"]}
        want_f = {c["index"]: c["finish_reason"] for c in whole["choices"]}
        evs = []
        _, last, _, done = stream(port, path, b, events=evs)
        texts, fins, order = by_choice(evs, chat)
        texts = {i: texts.get(i, "") for i in want_t}
        check(st == 200 and done and texts == want_t, f"n={b['n']} streamed choices equal the whole ones: {texts} vs {want_t}")
        check(fins == want_f, f"n={b['n']}: each streamed choice ends with its finish_reason: {fins} vs {want_f}")
        check(last["usage"]["completion_tokens"] == whole["usage"]["completion_tokens"], "n > 1 stream: usage")
        switches = sum(1 for x, y in zip(order, order[1:]) if x != y)
        check(switches >= len(want_t), f"n={b['n']}: the choices' chunks interleave as they are decoded ({order})")
    # greedy: every choice is the single greedy answer
    g = post(port, "/v1/completions", dict(body, n=1, temperature=0, max_tokens=16))[1]["choices"][0]["text"]
    st, j, _ = post(port, "/v1/completions", dict(body, n=2, temperature=0, max_tokens=16))
    check([c["text"] for c in j["choices"]] == [g, g], f"greedy n=2: both choices are the greedy answer {g!r}: {j}")
    # best_of > n ranks whole candidates: its stream sends each choice whole, then its finish
    evs = []
    _, last, _, done = stream(port, "/v1/completions", dict(body, n=1, best_of=3), events=evs)
    texts, fins, _ = by_choice(evs, False)
    check(done and set(texts) == {0} and texts[0] in singles and set(fins) == {0}, f"best_of=3 streamed: {texts} {fins}")
    # presence and frequency penalties (OpenAI's: counts over the answer so far): greedy text equals braid generate
    # with the same penalties, and a large one changes the answer
    for p, pen in [("Once upon a time", {"frequency_penalty": 2}), ("The history of the", {"presence_penalty": 1.5}),
                   ("The whale", {"frequency_penalty": 0.7, "presence_penalty": -0.5})]:
        plain_t = post(port, "/v1/completions", {"prompt": p, "max_tokens": 40, "temperature": 0})[1]["choices"][0]["text"]
        st, j, _ = post(port, "/v1/completions", dict({"prompt": p, "max_tokens": 40, "temperature": 0}, **pen))
        got = j["choices"][0]["text"]
        flags = [x for k, v in pen.items() for x in ("--" + k.replace("_", "-"), str(v))]
        ref = generate(p, 40, *flags)
        check(st == 200 and got == ref, f"{pen}: the server's answer equals braid generate {' '.join(flags)}: {got!r} vs {ref!r}")
        if "frequency_penalty" in pen and pen["frequency_penalty"] >= 2:
            check(got != plain_t, f"{pen} changes the greedy answer: {got!r}")
        b, _, _, _ = stream(port, "/v1/completions", dict({"prompt": p, "max_tokens": 40, "temperature": 0}, **pen))
        check(b == got, f"{pen}: streamed equals whole")
    msgs = [{"role": "user", "content": "What is a whale?"}]
    a = post(port, "/v1/chat/completions", {"messages": msgs, "max_tokens": 24, "temperature": 0})[1]
    b = post(port, "/v1/chat/completions", {"messages": msgs, "max_tokens": 24, "temperature": 0, "frequency_penalty": 2})[1]
    check(a["choices"][0]["message"]["content"] != b["choices"][0]["message"]["content"],
          "chat: frequency_penalty 2 changes the greedy answer")
    for pen in ["presence_penalty", "frequency_penalty"]:
        for v in [2.5, -2.01, "1", True, [1]]:
            st, j, _ = post(port, "/v1/completions", {"prompt": "a", "max_tokens": 2, pen: v})
            check(st == 400 and j["error"]["param"] == pen, f"{pen}={v!r} is refused with 400: {st} {j}")
        st, j, _ = post(port, "/v1/completions", {"prompt": "a", "max_tokens": 2, pen: -2})
        check(st == 200, f"{pen}=-2 is accepted")
    st, out, _ = request(port, "GET", "/v1/models")
    check(st == 200 and json.loads(out)["data"][0]["object"] == "model", "/v1/models")
    st, out, _ = request(port, "GET", "/health")
    check(st == 200 and json.loads(out)["status"] == "ok", "/health")
    st, out, _ = request(port, "GET", "/")
    check(st == 200 and b"/v1/chat/completions" in out and b"http" not in out.replace(b"http://", b""), "the chat page")

if want("cache"):
    # second turn of a long conversation: only the new tokens are evaluated, and the first token comes much sooner
    words = "the river runs past the old mill and the miller counts his sacks of grain before the winter comes . "
    n_sys = 60 if args.quick else 130  # about 29 tokens a sentence with the bundled BPE vocabulary
    msgs = [{"role": "system", "content": words * n_sys}, {"role": "user", "content": "Tell me about the mill."}]
    text, last, t1, done = stream(port, "/v1/chat/completions", {"messages": msgs, "max_tokens": 16, "temperature": 0})
    u1 = last["usage"]
    print(f"turn 1: {u1['prompt_tokens']} prompt tokens, {u1['prompt_tokens_details']['cached_tokens']} cached, "
          f"first token after {t1:.3f} s", flush=True)
    msgs += [{"role": "assistant", "content": text}, {"role": "user", "content": "And the grain?"}]
    text2, last2, t2, done = stream(port, "/v1/chat/completions", {"messages": msgs, "max_tokens": 16, "temperature": 0})
    u2 = last2["usage"]
    cached = u2["prompt_tokens_details"]["cached_tokens"]
    evaluated = u2["prompt_tokens"] - cached
    new_turn = u2["prompt_tokens"] - u1["prompt_tokens"] - u1["completion_tokens"]
    print(f"turn 2: {u2['prompt_tokens']} prompt tokens, {cached} cached, {evaluated} evaluated (the new turn: "
          f"{new_turn} tokens), first token after {t2:.3f} s", flush=True)
    check(u1["prompt_tokens_details"]["cached_tokens"] == 0, "first turn has nothing cached")
    check(u1["prompt_tokens"] > (1500 if args.quick else 3500), f"the conversation is long ({u1['prompt_tokens']})")
    # the answer's last sampled token is evaluated only when the next turn comes (it ended the answer)
    check(evaluated <= new_turn + 1, f"turn 2 evaluates only the new turn: {evaluated} vs {new_turn}")
    check(t2 < t1 / 5, f"turn 2 first token far sooner: {t2:.3f} s vs {t1:.3f} s")
    # a third request with turn 1's prompt again (a branch): served from the snapshot, nothing re-evaluated but
    # the last token
    st, j, _ = post(port, "/v1/chat/completions", {"messages": msgs[:2], "max_tokens": 16, "temperature": 0})
    check(j["choices"][0]["message"]["content"] == text, "the same prompt again gives the same greedy answer")
    check(j["usage"]["prompt_tokens_details"]["cached_tokens"] >= j["usage"]["prompt_tokens"] - 1,
          f"the same prompt again is served from the cache ({j['usage']})")

if want("disconnect"):
    # one slot: a client that goes away mid-stream must free it for the next request at once
    one = Server("-np", "1", name="one")
    t0 = time.time()
    text, last, _, done = stream(one.port, "/v1/completions",
                                 {"prompt": "The whale", "max_tokens": 4000, "temperature": 1.0, "ignore_eos": True},
                                 close_after=3)
    check(not done, "the first stream was cut")
    t1 = time.time()
    st, j, _ = post(one.port, "/v1/completions", {"prompt": "Hello", "max_tokens": 4, "temperature": 0}, timeout=60)
    dt = time.time() - t1
    check(st == 200 and dt < 10, f"the next request is served at once after a disconnect ({dt:.2f} s)")
    m = metrics(one.port)
    check(m["braid_slots_busy"] == 0 and m["braid_requests_cancelled_total"] >= 1,
          f"the slot was freed and the request cancelled: {m}")
    check(m["braid_tokens_generated_total"] < 500, f"generation stopped when the client left ({m['braid_tokens_generated_total']})")
    # the same with four choices decoding together: every one stops, the slot is free again
    stream(one.port, "/v1/completions", {"prompt": "The whale", "max_tokens": 4000, "temperature": 1.0, "ignore_eos": True,
                                         "n": 4}, close_after=6)
    t1 = time.time()
    st, j, _ = post(one.port, "/v1/completions", {"prompt": "Hello", "max_tokens": 4, "temperature": 0}, timeout=60)
    dt = time.time() - t1
    m2 = metrics(one.port)
    check(st == 200 and dt < 10 and m2["braid_slots_busy"] == 0 and m2["braid_requests_cancelled_total"] >= 2,
          f"n=4: a disconnect cancels every choice and frees the slot ({dt:.2f} s, {m2['braid_slots_busy']} busy)")
    check(m2["braid_tokens_generated_total"] - m["braid_tokens_generated_total"] < 4 * 500,
          f"n=4: generation stopped when the client left ({m2['braid_tokens_generated_total']})")
    one.stop()

if want("hostile"):
    def raw(data, read=True, timeout=10):
        s = socket.create_connection((HOST, port), timeout=timeout)
        try:
            s.sendall(data)
            if not read:
                return s
            out = b""
            while True:
                try:
                    k = s.recv(65536)
                except socket.timeout:
                    break
                if not k:
                    break
                out += k
                if b"\r\n\r\n" in out:
                    head, _, rest = out.partition(b"\r\n\r\n")
                    m = re.search(rb"Content-Length: (\d+)", head)
                    if m and len(rest) >= int(m.group(1)):
                        break
            return out
        finally:
            if read:
                s.close()

    def http_post(path, body, extra=b""):
        return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + extra +
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

    def status_of(out):
        m = re.match(rb"HTTP/1.1 (\d+)", out)
        return int(m.group(1)) if m else None

    def error_shape(out):
        body = out.partition(b"\r\n\r\n")[2]
        try:
            e = json.loads(body)["error"]
            return isinstance(e["message"], str) and "type" in e
        except Exception:
            return False

    rng = random.Random(7)
    good = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).encode()
    cases = []
    for i in range(120):  # truncated JSON
        cut = rng.randrange(0, len(good) - 1)
        cases.append((http_post(b"/v1/chat/completions", good[:cut]), 400, "truncated JSON"))
    fields = ["max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "stop", "n", "stream", "messages", "prompt",
              "presence_penalty", "frequency_penalty"]
    bad_values = ["x", [], {}, True, -5, 1e300, 10 ** 30, None, [1, "a"], "1"]
    for f in fields:
        for v in bad_values:
            if v is None and f == "max_tokens":
                continue  # null is the default: until the end of the context
            body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, f: v}
            if f == "prompt":
                body = {"prompt": v, "max_tokens": 2}
            path = b"/v1/completions" if f == "prompt" else b"/v1/chat/completions"
            data = json.dumps(body).encode()
            cases.append((http_post(path, data), None, f"{f}={v!r}"))  # None: 200 when the value happens to be valid
    for raw_num in [b"1e999", b"-1e999", b"123456789012345678901234567890", b"NaN", b"Infinity", b"0x10"]:
        cases.append((http_post(b"/v1/chat/completions", b'{"messages":[{"role":"user","content":"hi"}],"max_tokens":' +
                                raw_num + b"}"), 400, f"number {raw_num!r}"))
    for bad_utf8 in [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82"]:
        cases.append((http_post(b"/v1/chat/completions", b'{"messages":[{"role":"user","content":"a' + bad_utf8 +
                                b'"}],"max_tokens":2}'), 400, f"invalid UTF-8 {bad_utf8!r}"))
    cases += [
        (http_post(b"/v1/chat/completions", b'{"max_tokens":2}'), 400, "missing messages"),
        (http_post(b"/v1/chat/completions", b'{"messages":[]}'), 400, "empty messages"),
        (http_post(b"/v1/chat/completions", b'{"messages":[{"role":"wizard","content":"hi"}]}'), 400, "unknown role"),
        (http_post(b"/v1/chat/completions", b'{"messages":[{"content":"hi"}]}'), 400, "message without role"),
        (http_post(b"/v1/chat/completions", b'[1,2,3]'), 400, "not an object"),
        (http_post(b"/v1/chat/completions", b''), 400, "empty body"),
        (http_post(b"/v1/chat/completions", b'{"messages":[{"role":"user","content":"hi"}],"n":3,"best_of":2}'), 400,
         "best_of below n"),
        (http_post(b"/v1/chat/completions", b'{"messages":[{"role":"user","content":"hi"}],"n":99}'), 400, "n=99"),
        (http_post(b"/v1/nothing", b'{}'), 404, "unknown route"),
        (b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404, "path traversal"),
        (b"GET /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405, "GET on a POST route"),
        (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n", 413, "body over the limit"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n", 431, "oversized header"),
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(3000)) + b"\r\n", 431, "too many headers"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n", 400, "not HTTP (a TLS hello)"),
        (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
         b"zz\r\nabc\r\n0\r\n\r\n", 400, "bad chunk size"),
        (http_post(b"/v1/completions", json.dumps({"prompt": "word " * 9000, "max_tokens": 2}).encode()), 400,
         "context_length_exceeded"),
    ]
    n_ok = 0
    for data, want_status, what in cases:
        out = raw(data)
        st = status_of(out)
        if want_status is None:
            good_case = st == 200 or (st == 400 and error_shape(out))
        else:
            good_case = st == want_status and error_shape(out)
        n_ok += good_case
        check(good_case, f"hostile request {what}: status {st}, {out[:200]!r}")
        if what == "context_length_exceeded":
            check(b"context_length_exceeded" in out, "context_length_exceeded code")
    print(f"hostile: {n_ok}/{len(cases)} requests answered as expected", flush=True)
    # chunked request bodies are read
    body = good
    chunked = b"".join(b"%x\r\n" % len(body[i:i + 7]) + body[i:i + 7] + b"\r\n" for i in range(0, len(body), 7)) + b"0\r\n\r\n"
    out = raw(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" +
              chunked)
    check(status_of(out) == 200, f"chunked request body: {out[:200]!r}")
    # keep-alive: two requests on one connection, the second pipelined
    s = socket.create_connection((HOST, port), timeout=30)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    out = b""
    while True:
        k = s.recv(65536)
        if not k:
            break
        out += k
    s.close()
    check(out.count(b"HTTP/1.1 200") == 2, f"keep-alive and pipelining: {out!r}")
    # slow senders: a request that does not complete within --timeout (3 s) is dropped; others are still served
    slow = [raw(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{", read=False) for _ in range(20)]
    time.sleep(0.5)
    st, _, _ = request(port, "GET", "/health")
    check(st == 200, "served while slow senders hold connections")
    time.sleep(4)
    closed = 0
    for s in slow:
        s.settimeout(2)
        try:
            closed += s.recv(100) == b""
        except (socket.timeout, ConnectionResetError):
            closed += 0
        s.close()
    check(closed == 20, f"slow senders were disconnected after the timeout ({closed}/20)")
    st, j, _ = post(port, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    check(st == 200 and j["choices"][0]["message"]["role"] == "assistant", "still serving after the hostile requests")
    # a limit on connections: past 256 open ones, a new one is answered 503 and closed; once they go, all is well
    held = [socket.create_connection((HOST, port), timeout=10) for _ in range(256)]
    time.sleep(0.3)
    extra = socket.create_connection((HOST, port), timeout=10)
    out = b""
    while True:
        k = extra.recv(65536)
        if not k:
            break
        out += k
    extra.close()
    check(status_of(out) == 503, f"connection 257 is refused with 503: {out[:120]!r}")
    for h in held:
        h.close()
    time.sleep(0.3)
    check(request(port, "GET", "/health")[0] == 200, "served again once the connections closed")
    # API key: 401 without or with a wrong key (compared in constant time), 200 with it; /health stays open
    keyed = Server("-np", "1", "--api-key", "s3cret", name="keyed")
    st, j, _ = post(keyed.port, "/v1/completions", {"prompt": "a", "max_tokens": 1})
    check(st == 401 and j["error"]["code"] == "invalid_api_key", "401 without a key")
    st, j, _ = post(keyed.port, "/v1/completions", {"prompt": "a", "max_tokens": 1}, headers={"Authorization": "Bearer s3cre"})
    check(st == 401, "401 with a wrong key")
    st, j, _ = post(keyed.port, "/v1/completions", {"prompt": "a", "max_tokens": 1}, headers={"Authorization": "Bearer s3cret"})
    check(st == 200, "200 with the key")
    check(request(keyed.port, "GET", "/health")[0] == 200, "/health without a key")
    keyed.stop()
    # overload: one slot, no queue: the second concurrent request gets 503 with Retry-After
    # (the first request streams until the check is done, then its client leaves: no race with its length)
    tight = Server("-np", "1", "--queue", "0", name="tight")
    streaming, checked = threading.Event(), threading.Event()
    th = threading.Thread(target=lambda: stream(tight.port, "/v1/completions",
                                                {"prompt": "The whale", "max_tokens": 4000, "temperature": 0, "ignore_eos": True},
                                                until=lambda: streaming.set() or checked.is_set()))
    th.start()
    check(streaming.wait(60), "the long request streams")
    st, j, r = post(tight.port, "/v1/completions", {"prompt": "a", "max_tokens": 1})
    check(st == 503 and r.getheader("Retry-After") == "1", f"503 with Retry-After when full: {st}")
    checked.set()
    th.join()
    tight.stop()

if want("load"):
    # concurrent streaming clients: every answer complete and equal to the sequential greedy one; nothing leaked
    n_req, n_cli = (64, 16) if args.quick else (200, 32)
    jobs = [(PROMPTS[i % len(PROMPTS)], 8 + (i * 7) % 17) for i in range(n_req)]
    seq = {}
    for p, n in sorted(set(jobs)):
        seq[(p, n)] = post(port, "/v1/completions", {"prompt": p, "max_tokens": n, "temperature": 0})[1]["choices"][0]["text"]
    rss0 = srv.rss_kib()
    results, ttft, errors = [None] * n_req, [], []
    lock = threading.Lock()
    nxt = [0]

    def client():
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= n_req:
                return
            p, n = jobs[i]
            try:
                text, last, tf, done = stream(port, "/v1/completions", {"prompt": p, "max_tokens": n, "temperature": 0})
                results[i] = (text, done)
                with lock:
                    ttft.append(tf if tf is not None else 0)
            except Exception as e:
                with lock:
                    errors.append(repr(e))

    t0 = time.time()
    ths = [threading.Thread(target=client) for _ in range(n_cli)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(600)
    wall = time.time() - t0
    check(not errors, f"load: no request failed ({errors[:3]})")
    complete = sum(1 for r in results if r and r[1])
    same = sum(1 for i, r in enumerate(results) if r and r[0] == seq[jobs[i]])
    check(complete == n_req, f"load: {complete}/{n_req} responses complete")
    check(same == n_req, f"load: {same}/{n_req} greedy outputs equal the sequential ones")
    diffs = [(jobs[i], r[0], seq[jobs[i]]) for i, r in enumerate(results) if r and r[0] != seq[jobs[i]]][:2]
    if diffs:
        print("differences:", diffs)
    m = metrics(port)
    check(m["braid_slots_busy"] == 0 and m["braid_queue_length"] == 0, f"load: no slot leaked ({m['braid_slots_busy']})")
    rss1 = srv.rss_kib()
    check(abs(rss1 - rss0) < 64 * 1024, f"load: RSS after {rss1} KiB vs before {rss0} KiB (bound 64 MiB)")
    ttft.sort()
    p50 = statistics.median(ttft)
    p99 = ttft[min(len(ttft) - 1, int(0.99 * len(ttft)))]
    print(f"load: {n_req} requests from {n_cli} clients in {wall:.1f} s; time to first token p50 {p50:.3f} s, "
          f"p99 {p99:.3f} s; RSS {rss0} -> {rss1} KiB", flush=True)

if want("openai"):
    npm = shutil.which("npm")
    node = shutil.which("node")
    nm = os.path.join(args.work, "npm")
    ok = os.path.isdir(os.path.join(nm, "node_modules", "openai"))
    if not ok and npm and node:
        os.makedirs(nm, exist_ok=True)
        r = subprocess.run([npm, "install", "--prefix", nm, "--no-audit", "--no-fund", "openai@4"], capture_output=True,
                           timeout=300)
        ok = r.returncode == 0
    if not ok:
        print("SKIP openai client: npm could not install the 'openai' package (offline?)", flush=True)
    else:
        js = os.path.join(nm, "client.mjs")
        with open(js, "w") as f:
            f.write("""
import OpenAI from 'openai';
const client = new OpenAI({ baseURL: process.argv[2], apiKey: 'none' });
const r = await client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'What is a whale?' }],
  max_tokens: 16, temperature: 0 });
let s = '';
const st = await client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'What is a whale?' }],
  max_tokens: 16, temperature: 0, stream: true });
for await (const chunk of st) s += chunk.choices[0]?.delta?.content || '';
console.log(JSON.stringify({ plain: r.choices[0].message.content, streamed: s, usage: r.usage }));
""")
        r = subprocess.run([node, js, f"http://{HOST}:{port}/v1"], capture_output=True, timeout=120,
                           env=dict(os.environ, NODE_PATH=os.path.join(nm, "node_modules")))
        check(r.returncode == 0, "openai client ran: " + r.stderr.decode()[-500:])
        if r.returncode == 0:
            out = json.loads(r.stdout)
            check(out["plain"] == out["streamed"] and out["usage"]["completion_tokens"] > 0,
                  f"openai client: streamed equals plain ({out})")
            print("openai client: ok", flush=True)

if want("page"):
    # the chat page in headless Chromium (Debian's chromium, driven by playwright-core from npm): type, see it stream
    chromium = shutil.which("chromium")
    npm, node = shutil.which("npm"), shutil.which("node")
    nm = os.path.join(args.work, "npm")
    ok = os.path.isdir(os.path.join(nm, "node_modules", "playwright-core"))
    if not ok and chromium and npm and node:
        os.makedirs(nm, exist_ok=True)
        r = subprocess.run([npm, "install", "--prefix", nm, "--no-audit", "--no-fund", "playwright-core@1"],
                           capture_output=True, timeout=300)
        ok = r.returncode == 0
    if not chromium:
        print("SKIP chat page: no chromium (scripts/deps.sh --tests installs it)", flush=True)
    elif not ok:
        print("SKIP chat page: npm could not install playwright-core (offline?)", flush=True)
    else:
        js = os.path.join(nm, "page.mjs")
        with open(js, "w") as f:
            f.write("""
import { chromium } from 'playwright-core';
const browser = await chromium.launch({ executablePath: process.argv[3], args: ['--no-sandbox'] });
const page = await browser.newPage();
const external = [];
page.on('request', r => { if (!r.url().startsWith(process.argv[2])) external.push(r.url()); });
await page.goto(process.argv[2]);
await page.fill('#max', '24');
await page.fill('#temp', '0');
await page.fill('#input', 'What is a whale?');
// every text the answer's box showed, in order: a streamed answer is shown once per chunk received, so this
// does not depend on how the chunks were grouped on the way (a fast answer may arrive in one read)
await page.evaluate(() => {
  window.shown = [];
  new MutationObserver(recs => {
    for (const r of recs)
      if (r.target.classList && r.target.classList.contains('assistant'))
        for (const n of r.addedNodes) if (n.nodeType === 3) window.shown.push(n.data);
  }).observe(document.getElementById('log'), { subtree: true, childList: true, characterData: true });
});
await page.click('#send');
await page.waitForSelector('.assistant[data-done="1"]', { timeout: 60000 });
const answer = await page.textContent('.assistant');
const stat = await page.textContent('#stat');
const shown = await page.evaluate(() => window.shown.slice());
// a second turn: the page sends the conversation, the server finds it cached
await page.fill('#input', 'And a dolphin?');
await page.click('#send');
await page.waitForSelector('.assistant:nth-of-type(4)[data-done="1"]', { timeout: 60000 });
const stat2 = await page.textContent('#stat');
console.log(JSON.stringify({ answer, stat, stat2, shown, external }));
await browser.close();
""")
        r = subprocess.run([node, js, f"http://{HOST}:{port}/", chromium], capture_output=True, timeout=180,
                           env=dict(os.environ, NODE_PATH=os.path.join(nm, "node_modules")))
        check(r.returncode == 0, "chat page script ran: " + r.stderr.decode()[-800:])
        if r.returncode == 0:
            out = json.loads(r.stdout)
            want_text = post(port, "/v1/chat/completions", {"messages": [{"role": "user", "content": "What is a whale?"}],
                                                            "max_tokens": 24, "temperature": 0})[1]
            check(out["answer"] == want_text["choices"][0]["message"]["content"],
                  f"the page shows the streamed answer: {out['answer']!r}")
            # the same request streamed here: its text chunks, counted at the HTTP level
            chunks = []
            stream(port, "/v1/chat/completions", {"messages": [{"role": "user", "content": "What is a whale?"}],
                                                  "max_tokens": 24, "temperature": 0}, pieces=chunks)
            grown = ["".join(chunks[:i + 1]) for i in range(len(chunks))]
            shown = out["shown"]
            check(len(chunks) > 3, f"the answer streams in several chunks ({len(chunks)})")
            check(shown == grown, f"the page showed the answer chunk by chunk as it streamed: {len(shown)} texts for "
                                  f"{len(chunks)} chunks ({shown[:4]!r} vs {grown[:4]!r})")
            check(not out["external"], f"the page fetched nothing from elsewhere: {out['external']}")
            m2 = re.search(r"\((\d+) cached\)", out["stat2"])
            check(m2 and int(m2.group(1)) > 0, f"the page's second turn was served from the cache: {out['stat2']!r}")
            print(f"chat page: ok ({len(shown)} texts shown for {len(chunks)} chunks; {out['stat2']})", flush=True)

m = metrics(port)
check(m["braid_slots_busy"] == 0, "no slot busy at the end")
srv.stop()
if failures:
    print(f"{len(failures)} checks failed")
    sys.exit(1)
print("all serve checks passed")
