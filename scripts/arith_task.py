# The search task model's task: chains of 2-digit additions and subtractions worked out one step a line;
# the problem generator, its character tokenizer and the exact checker (also usable as a verifier program).
"""Multi-step arithmetic, written step by step.

A problem and its worked solution (the model is prompted with the first line and writes the rest):

    Q:23+45-17+38
    23+45=68
    68-17=51
    51+38=89
    A:89

Operands are 1..99; every running value stays in 0..999 (a '-' that would go below 0 becomes '+', a '+'
that would pass 999 becomes '-'). Problems have K operands (K-1 steps).

  arith_task.py gen --k K --n N --seed S OUT.txt      N problems, one "Q:..." line each
  arith_task.py spm-text OUT.txt                        text for spm_train (every character the task uses)
  arith_task.py check [--partial]                       reads prompt + completion on stdin, prints a score:
        1 when the answer line is right, 0 otherwise; with --partial (step-level search) 1 while every
        line so far is a correct step of this problem, 0 at the first wrong one.
"""
import random
import re
import sys

PROMPT_RE = re.compile(r"Q:(\d+(?:[+-]\d+)+)")


def make_problem(rng, k):
    nums = [rng.randint(1, 99)]
    ops = []
    v = nums[0]
    for _ in range(k - 1):
        b = rng.randint(1, 99)
        op = rng.choice("+-")
        if op == "-" and v - b < 0:
            op = "+"
        if op == "+" and v + b > 999:
            op = "-"
        v = v + b if op == "+" else v - b
        nums.append(b)
        ops.append(op)
    return nums, ops


def prompt_text(nums, ops):
    return "Q:" + str(nums[0]) + "".join(o + str(b) for o, b in zip(ops, nums[1:])) + "\n"


def solution_text(nums, ops):
    v, lines = nums[0], []
    for o, b in zip(ops, nums[1:]):
        w = v + b if o == "+" else v - b
        lines.append("%d%s%d=%d\n" % (v, o, b, w))
        v = w
    return "".join(lines) + "A:%d\n" % v


def parse_prompt(text):
    m = PROMPT_RE.search(text)
    if not m:
        return None
    toks = re.findall(r"[+-]|\d+", m.group(1))
    nums = [int(toks[0])] + [int(t) for t in toks[2::2]]
    return nums, toks[1::2]


def answer(nums, ops):
    v = nums[0]
    for o, b in zip(ops, nums[1:]):
        v = v + b if o == "+" else v - b
    return v


def score(text, partial):
    """text: the prompt line followed by what the model wrote."""
    p = parse_prompt(text)
    if p is None:
        return 0.0
    nums, ops = p
    body = text[text.index("\n") + 1:] if "\n" in text else ""
    lines = body.split("\n")
    if not partial:
        for ln in lines:
            if ln.startswith("A:"):
                return 1.0 if ln[2:] == str(answer(nums, ops)) else 0.0
        return 0.0
    v, i = nums[0], 0
    for j, ln in enumerate(lines):
        last = j == len(lines) - 1
        if last and ln == "":
            break
        if ln.startswith("A:"):
            return 1.0 if i == len(ops) and ln[2:] == str(v) or last and str(v).startswith(ln[2:]) else 0.0
        if i >= len(ops):
            return 0.0
        w = v + nums[i + 1] if ops[i] == "+" else v - nums[i + 1]
        want = "%d%s%d=%d" % (v, ops[i], nums[i + 1], w)
        if ln != want and not (last and want.startswith(ln)):
            return 0.0
        v, i = w, i + 1
    return 1.0


def main():
    a = sys.argv[1:]
    if a and a[0] == "gen":
        k = int(a[a.index("--k") + 1])
        n = int(a[a.index("--n") + 1])
        rng = random.Random(int(a[a.index("--seed") + 1]))
        with open(a[-1], "w") as f:
            for _ in range(n):
                f.write(prompt_text(*make_problem(rng, k)))
    elif a and a[0] == "spm-text":
        rng = random.Random(0)
        with open(a[1], "w") as f:
            for _ in range(2000):
                nums, ops = make_problem(rng, rng.randint(2, 6))
                f.write((prompt_text(nums, ops) + solution_text(nums, ops)).replace("\n", " ").replace(" ", "\n"))
    elif a and a[0] == "check":
        print("%g" % score(sys.stdin.read(), "--partial" in a))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
