#!/usr/bin/env python3
# braid chat driven through a real pseudo-terminal (and piped): streaming, Ctrl-C within 200 ms, a storm of
# Ctrl-C, the terminal restored, /save + /load, /regen and /undo costs, a 20-column terminal with UTF-8.
import atexit, fcntl, os, pty, random, re, select, shutil, signal, struct, subprocess, sys, tempfile, termios, time

BRAID, MODEL = sys.argv[1], sys.argv[2]
TMP = tempfile.mkdtemp(prefix="braid_chat_")
# removed when the test ends, by the parent only (a pty child that fails to exec must not take it away)
_parent = os.getpid()
atexit.register(lambda: os.getpid() == _parent and shutil.rmtree(TMP, ignore_errors=True))
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


class Chat:
    """braid chat on a pty of the given width; out collects everything it wrote."""

    def __init__(self, *args, cols=80):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.environ["XDG_STATE_HOME"] = TMP + "/state"
            os.environ.pop("NO_COLOR", None)
            os.execv(BRAID, [BRAID, "chat", "-m", MODEL, "--temp", "0", *args])
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, cols, 0, 0))
        self.out = b""

    def read(self, secs):
        got, end = b"", time.time() + secs
        while time.time() < end:
            r, _, _ = select.select([self.fd], [], [], 0.01)
            if r:
                try:
                    b = os.read(self.fd, 65536)
                except OSError:
                    break
                if not b:
                    break
                got += b
        self.out += got
        return got

    def wait_for(self, pattern, secs=20):
        """Reads until pattern (bytes regex) appears in what is read from now on; returns the time it took."""
        start, seen = time.time(), b""
        while time.time() - start < secs:
            seen += self.read(0.01)
            if re.search(pattern, seen):
                return time.time() - start, seen
        raise TimeoutError("no %r in %r" % (pattern, seen[-300:]))

    def send(self, b):
        os.write(self.fd, b)

    def lflag(self):
        return termios.tcgetattr(self.fd)[3]

    def finish(self, secs=10):
        end = time.time() + secs
        while time.time() < end:
            self.read(0.05)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, signal.SIGKILL)
        return None


PROMPT = rb"\r\x1b\[J> \r\x1b\[2C$"  # the editor drawing an empty prompt
# Answers long enough to interrupt: in its own ChatML format the bundled model answers in one short
# sentence and stops at <|im_end|>; in the plain format it writes on until -n or EOS. The context is
# large because interrupted answers stay in it: the 5.2M model writes about 2,000 tokens/s, so the 35
# interrupted turns below can hold 10k tokens, and a full 4096 ended the storm with "[context full".
LONG = ("-n", "-1", "--template", "plain", "-c", "32768")


def streaming_and_ctrl_c():
    c = Chat(*LONG)
    c.wait_for(PROMPT)
    raw = c.lflag()
    check(not (raw & termios.ICANON) and not (raw & termios.ECHO), "the terminal is in raw mode while chatting")
    stops = []
    for i in range(5):
        c.send(b"tell me about the sea\r")
        # streaming: answer text arrives while the answer is still being generated (no prompt yet)
        _, seen = c.wait_for(rb"\r\n[^\r\n]{8,}")
        if i == 0:
            check(not re.search(PROMPT, seen), "a turn streams output before the answer is complete")
        time.sleep(0.2)
        t0 = time.time()
        c.send(b"\x03")
        dt, _ = c.wait_for(rb"\[stopped\][^>]*> ")
        stops.append(dt)
    stops.sort()
    check(stops[2] < 0.2, "Ctrl-C returns to the prompt within 200 ms (median of 5: %.0f ms; all %s)"
          % (stops[2] * 1e3, ", ".join("%.0f" % (s * 1e3) for s in stops)))
    c.send(b"/stats\r")
    _, seen = c.wait_for(rb"reprocessed[^\n]*\n[^>]*> ")
    m = re.search(rb"tokens +(\d+) of", seen)
    check(m and int(m.group(1)) > 0, "after the stops the conversation holds the interrupted answers")
    # a storm of Ctrl-C: during answers, during typing; never at an empty prompt (that exits, by design)
    rnd = random.Random(7)
    for i in range(50):
        if rnd.random() < 0.6:
            c.send(b"write a long story\r")
            time.sleep(rnd.uniform(0.0, 0.15))
            c.send(b"\x03")
            c.wait_for(rb"\[stopped[^\]]*\][^>]*> |\[answer cut[^>]*> ", 30)
        else:
            c.send("half a l\u00efne".encode()[: rnd.randint(1, 10)])
            c.read(rnd.uniform(0.0, 0.05))
            c.send(b"\x03")
            c.wait_for(PROMPT)
        c.read(0.01)
    c.send(b"hello again\r")
    _, seen = c.wait_for(rb"\r\n[^\r\n]{4,}")
    c.send(b"\x03")
    c.wait_for(rb"\[stopped\][^>]*> ")
    check(True, "after 50 Ctrl-C presses the next turn answers")
    c.send(b"\x04")
    rc = c.finish()
    check(rc == 0, "Ctrl-D exits with status 0 (got %s)" % rc)
    fl = c.lflag()
    check(bool(fl & termios.ICANON) and bool(fl & termios.ECHO) and bool(fl & termios.ISIG),
          "the terminal is back in cooked mode (ICANON, ECHO, ISIG) after exit")
    check(b"\x1b[?2004l" in c.out, "bracketed paste is switched off at exit")


def signals_restore():
    c = Chat(*LONG)
    c.wait_for(PROMPT)
    c.send(b"write a long story\r")
    c.wait_for(rb"\r\n[^\r\n]{8,}")
    os.kill(c.pid, signal.SIGTERM)
    rc = c.finish()
    fl = c.lflag()
    check(rc == 128 + signal.SIGTERM and bool(fl & termios.ICANON) and bool(fl & termios.ECHO),
          "SIGTERM during an answer exits %s with the terminal restored" % rc)
    c = Chat()
    c.wait_for(PROMPT)
    c.send(b"\x03")
    check(c.finish() == 0, "Ctrl-C at an empty prompt exits with status 0")


def history():
    return open(TMP + "/state/braid/chat_history", encoding="utf-8").read().splitlines()


def editing():
    c = Chat("-n", "8")

    def submit(keys, what):
        c.send(keys)
        c.read(0.1)
        c.send(b"\r")
        c.wait_for(rb"\r\n[^>]*> \r\x1b\[2C$", 20)
        got = history()[-1] if history() else None
        return got

    c.wait_for(PROMPT)
    keys = (b"hello world\x01X\x05Y\x17there\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x0b\x15abc def"
            b"\x1b[H\x1b[3~\x1b[F\x7f\x17ok")
    got = submit(keys, "keys")
    check(got == "bc ok", "Ctrl-A/E/W/K/U, Home/End, Delete, Backspace, arrows edit the line (%r)" % got)
    got = submit(b"\x1b[200~line one\nline two\x1b[201~", "paste")
    check(got == "line one\\nline two", "a bracketed paste keeps its newline in the message (%r)" % got)
    c.send(b"first\\\r")
    c.read(0.1)
    got = submit(b"second", "backslash")
    check(got == "first\\nsecond", "a trailing backslash continues the message on a new line (%r)" % got)
    got = submit(b"\x1b[A\x1b[A\x1b[A", "history")
    check(got == "bc ok", "up-arrow brings back earlier lines (%r)" % got)
    # /edit: the last message comes back into the editor, the exchange is dropped
    submit(b"edit me", "turn")
    c.send(b"/edit\r")
    c.wait_for(rb"> edit me", 20)
    got = submit(b" again", "edit")
    check(got == "edit me again", "/edit puts the last message back in the editor (%r)" % got)
    c.send(b"/stats\r")
    _, seen = c.wait_for(rb"reprocessed[^\n]*\n[^>]*> ")
    m = re.search(rb"tokens +(\d+) of .*?\((\d+) messages\)", seen)
    check(m and int(m.group(2)) == 2 * 5, "after /edit the conversation has no trace of the dropped exchange (%s)"
          % (m.group(2) if m else None))
    c.send(b"\x04")
    check(c.finish() == 0, "exit 0 after editing")


def crash_restores():
    c = Chat(*LONG)
    c.wait_for(PROMPT)
    c.send(b"write a long story\r")
    c.wait_for(rb"\r\n[^\r\n]{8,}")
    os.kill(c.pid, signal.SIGSEGV)
    rc = c.finish()
    fl = c.lflag()
    check(rc == -signal.SIGSEGV and bool(fl & termios.ICANON) and bool(fl & termios.ECHO),
          "a crash (SIGSEGV) during an answer leaves the terminal restored (exit %s)" % rc)


class Screen:
    """Just enough of a terminal for what the editor writes: autowrap, wide characters, CR, LF, CUU, CUF, ED."""

    def __init__(self, cols):
        self.cols, self.rows, self.r, self.c, self.pending = cols, {}, 0, 0, False

    def feed(self, data):
        s = data.decode("utf-8", "replace")
        i = 0
        while i < len(s):
            ch = s[i]
            if ch == "\x1b":
                m = re.match(r"\x1b\[(\??)(\d*)([A-Za-z~])", s[i:])
                if not m:
                    i += 1
                    continue
                n = int(m.group(2) or 1)
                if m.group(3) == "A":
                    self.r -= n
                elif m.group(3) == "C":
                    self.c = min(self.cols - 1, self.c + n)
                elif m.group(3) == "J":
                    for r in list(self.rows):
                        if r > self.r:
                            del self.rows[r]
                    row = self.rows.get(self.r, {})
                    for k in list(row):
                        if k >= self.c:
                            del row[k]
                if m.group(3) in "ACJ":
                    self.pending = False
                i += m.end()
                continue
            i += 1
            if ch == "\r":
                self.c, self.pending = 0, False
            elif ch == "\n":
                self.r, self.pending = self.r + 1, False
            else:
                w = 2 if "\u1100" <= ch <= "\u115f" or "\u2e80" <= ch <= "\ua4cf" or "\uac00" <= ch <= "\ud7a3" else 1
                if self.pending or self.c + w > self.cols:
                    self.r, self.c, self.pending = self.r + 1, 0, False
                self.rows.setdefault(self.r, {})[self.c] = ch
                if w == 2:
                    self.rows[self.r][self.c + 1] = ""
                self.c += w
                if self.c >= self.cols:
                    self.c, self.pending = self.cols - 1, True

    def line(self, r):
        row = self.rows.get(r, {})
        return "".join(row.get(k, " ") for k in range(self.cols)).rstrip()


def narrow_utf8():
    # starts wide, then the window shrinks to 20 columns (SIGWINCH) before the line is typed
    c = Chat(cols=80)
    c.wait_for(PROMPT)
    fcntl.ioctl(c.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 20, 0, 0))
    c.read(0.3)
    text = "h\u00e9llo w\u00f6rld \u65e5\u672c\u8a9e \u30c6\u30b9\u30c8 caf\u00e9 na\u00efve end"
    c.send(text.encode())
    # edits: three lefts (before "end"), a backspace (the space before it)
    c.send(b"\x1b[D\x1b[D\x1b[D\x7f")
    c.send("\u00df".encode())  # type a two-byte character in the middle
    c.read(0.3)
    want = text[:-4] + "\u00df" + text[-3:]
    scr = Screen(20)
    scr.feed(c.out)
    # the rows from the prompt's row down, joined, must read "> " + the edited text
    rows = sorted(scr.rows)
    prompts = [r for r in rows if scr.line(r).startswith("> ")]
    check(len(prompts) == 1, "redrawing left no stale copy of the line on the screen (%d rows start with '> ')"
          % len(prompts))
    first = prompts[-1]
    shown = "".join(
        "".join(scr.rows.get(r, {}).get(k, " ") for k in range(20)) for r in range(first, max(rows) + 1)
    )
    shown = re.sub(r" +$", "", shown)
    # a wide character that did not fit at a row's end leaves one blank cell there, as terminals do
    expect_cells = ""
    col = 0
    for ch in "> " + want:
        w = 2 if "\u1100" <= ch <= "\u115f" or "\u2e80" <= ch <= "\ua4cf" else 1
        if col + w > 20:
            expect_cells += " " * (20 - col)
            col = 0
        expect_cells += ch
        col = (col + w) % 20 if col + w < 20 else 0
    check(shown == expect_cells, "a terminal resized to 20 columns shows the edited UTF-8 line unbroken (%r)"
          % shown)
    c.send(b"\r")
    c.wait_for(rb"\r\n[^\r\n]{2,}", 20)
    c.send(b"\x03")
    c.read(0.5)
    c.send(b"\x04")
    check(c.finish() == 0, "exit 0 after the narrow-terminal turn")
    hist = history()
    check(hist and hist[-1] == want, "the history file holds the edited line exactly (%r)" % (hist[-1:] if hist else None))


def piped(lines, *args):
    p = subprocess.run([BRAID, "chat", "-m", MODEL, "--temp", "0", *args], input="".join(l + "\n" for l in lines),
                       capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr


def piped_mode():
    p = subprocess.run("printf 'hello\\n' | %s chat -m %s -n 16" % (BRAID, MODEL), shell=True, capture_output=True)
    check(p.returncode == 0 and len(p.stdout.strip()) > 0 and b"\x1b" not in p.stdout + p.stderr,
          "piped: printf 'hello\\n' | braid chat -n 16 answers, exits 0, no escape codes")
    rc, out, err = piped([], "-n", "4")
    check(rc == 0, "piped: empty input exits 0")


def save_load():
    f = TMP + "/s.session"
    rc, out_a, _ = piped(["hello", "/save " + f, "tell me more", "/stats"], "-n", "24")
    answer_a = out_a.split("[saved")[1].split("\n", 1)[1].split("tokens ")[0]
    rc2, out_b, _ = piped(["/load " + f, "tell me more", "/stats"], "-n", "24")
    answer_b = out_b.split("[loaded")[1].split("\n", 1)[1].split("tokens ")[0]
    check(rc == 0 and rc2 == 0 and answer_a == answer_b and len(answer_a.strip()) > 0,
          "/save then /load in a new process: the same greedy answer (%r)" % answer_a[:40])
    ta = re.findall(r"tokens +(\d+) of", out_a)[-1]
    tb = re.findall(r"tokens +(\d+) of", out_b)[-1]
    check(ta == tb, "... and the same number of tokens in the context (%s, %s)" % (ta, tb))


def regen_undo():
    rc, out, _ = piped(["hello", "/stats", "and then?", "/stats", "/regen", "/stats", "/undo", "/stats"], "-n", "24")
    stats = re.findall(r"tokens +(\d+) of.*?prefill (\d+) tokens.*?reprocessed +(\d+) tokens by the last (\S+)", out,
                       re.S)
    check(len(stats) == 4, "four /stats blocks")
    if len(stats) == 4:
        (t1, _, _, _), (t2, p2, _, _), (t3, _, r3, w3), (t4, _, r4, w4) = stats
        check(w3 == "/regen" and int(r3) <= int(p2), "/regen re-processed %s tokens (last turn %s)" % (r3, p2))
        check(int(r3) == 0, "/regen re-processed nothing: it samples from the snapshot's logits")
        check(w4 == "/undo" and int(r4) <= int(p2), "/undo re-processed %s tokens (last turn %s)" % (r4, p2))
        check(int(t4) == int(t1), "/undo left the context as it was after the first exchange (%s, %s)" % (t4, t1))


def context_limit():
    long = " ".join(["the sea is wide and deep"] * 40)
    rc, out, err = piped([long, "hi", "/stats"], "-n", "8", "-c", "64")
    check(rc == 0 and "context full" in err and "not sent" in err,
          "a turn that does not fit is refused with a message before anything is lost")
    m = re.search(r"tokens +(\d+) of 64 .*?\((\d+) messages\)", out, re.S)
    check(m and int(m.group(2)) == 2 and 0 < int(m.group(1)) <= 64,
          "... and the next turn that fits is answered (%s)" % (m.group(0)[:40] if m else out[-200:]))
    rc, out, err = piped(["hi", "tell me more"] * 6 + ["/stats"], "-n", "16", "-c", "64")
    check(rc == 0 and ("context full" in err), "an answer that fills the context stops and says so")


def options():
    p = subprocess.run([BRAID, "chat", "-m", MODEL, "--template", "bogus"], input="", capture_output=True, text=True)
    check(p.returncode == 2 and "bogus" in p.stderr, "an unknown --template is a usage error (exit 2)")
    p = subprocess.run([BRAID, "chat", "-m", MODEL, "--template", "jamba"], input="", capture_output=True, text=True)
    check(p.returncode == 1 and "<|bom|>" in p.stderr,
          "a template whose tokens the vocabulary lacks is refused, naming the token (exit 1)")
    sysf = TMP + "/sys.txt"
    open(sysf, "w").write("You are terse.\n")
    rc, out, err = piped(["hi", "/save " + TMP + "/sys.session"], "-n", "4", "--system-file", sysf)
    chat_file = open(TMP + "/sys.session.chat", encoding="utf-8").read()
    check(rc == 0 and "system 14\nYou are terse.\n" in chat_file and "template chatml" in err,
          "--system-file sets the system message; the template in use is said at start")
    p = subprocess.run([BRAID, "chat", "-m", MODEL, "--system", "a", "--system-file", sysf], input="",
                       capture_output=True, text=True)
    check(p.returncode == 2, "--system and --system-file together are a usage error")
    rc, out, err = piped(["/load " + TMP + "/missing"])
    check(rc == 0 and "cannot read" in err, "/load of a missing file says so and the chat goes on")
    # a damaged transcript (a role no template knows, a length past the end, cut short) is refused whole
    good = open(TMP + "/sys.session.chat", encoding="utf-8").read()
    for bad in [good.replace("system 14", "wizard 14"), good.replace("system 14", "system 99999"),
                good[: len(good) // 2], "braid-chat 2\n" + good.split("\n", 1)[1]]:
        open(TMP + "/sys.session.chat", "w", encoding="utf-8").write(bad)
        rc, out, err = piped(["/load " + TMP + "/sys.session", "/stats"], "-n", "4")
        check(rc == 0 and "not a braid chat transcript" in err and re.search(r"tokens +0 of", out),
              "a damaged FILE.chat is refused and nothing is loaded")


def prefill_ctrl_c():
    """Ctrl-C while a long pasted message is still being read drops the turn within 200 ms."""
    c = Chat("-n", "8", "-c", "8192")
    c.wait_for(PROMPT)
    c.send(b"hi\r")
    c.wait_for(rb"\r\n[^>]*> \r\x1b\[2C$", 20)
    c.send(b"/stats\r")
    _, seen = c.wait_for(rb"reprocessed[^\n]*\n[^>]*> ")
    before = re.search(rb"tokens +(\d+) of", seen).group(1)
    text = " ".join("word%d is here" % i for i in range(700)).encode()
    times, dropped = [], True
    for attempt in range(3):
        c.send(b"\x1b[200~" + text + b"\x1b[201~")
        c.read(0.3)
        c.send(b"\r")
        time.sleep(0.3)
        c.send(b"\x03")
        dt, seen = c.wait_for(rb"\[stopped[^\]]*\][^>]*> ", 20)
        times.append(dt)
        dropped = dropped and b"not sent" in seen
    times.sort()
    check(dropped and times[1] < 0.2, "Ctrl-C during a long prefill drops the turn within 200 ms (median of 3: "
          "%.0f ms; all %s)" % (times[1] * 1e3, ", ".join("%.0f" % (t * 1e3) for t in times)))
    c.send(b"/stats\r")
    _, seen = c.wait_for(rb"reprocessed[^\n]*\n[^>]*> ")
    after = re.search(rb"tokens +(\d+) of", seen).group(1)
    check(before == after, "... and the conversation is as it was before the turn (%s, %s tokens)"
          % (before.decode(), after.decode()))
    c.send(b"\x04")
    check(c.finish() == 0, "exit 0 after the stopped prefill")


ALL = [piped_mode, save_load, regen_undo, context_limit, options, streaming_and_ctrl_c, prefill_ctrl_c,
       signals_restore, crash_restores, narrow_utf8, editing]
# CHAT_PTY_ONLY=name,name runs only those (for looking at one behaviour again)
only = os.environ.get("CHAT_PTY_ONLY")
for f in ALL:
    if not only or f.__name__ in only.split(","):
        f()
print("%d failure(s)" % len(failures))
sys.exit(1 if failures else 0)
