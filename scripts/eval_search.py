# Accuracy of braid's test-time search strategies on the arithmetic task model (models/arith-jamba.gguf):
# greedy, self-consistency, best-of-N (log-probability, exact checker), token and step-level beam.
"""Each held-out problem is one `braid generate --json` run; the chosen candidate is checked exactly by
scripts/arith_task.py. Compute per problem: tokens the model evaluated (the prompt once, then every
candidate's tokens and verifier questions, as braid counts them) and the wall time of the run (model
load, search and every verifier process included).

  scripts/eval_search.py [--braid build/tools/braid] [--model models/arith-jamba.gguf] [--problems 500]
                         [--search 500] [--large 500] [--jobs 2] [--only greedy,sc4,...] [--csv F] [--plot F.png]

--search and --large cap the problems (the first ones of the same set) for the search rows and for the
costliest of them (N = 64, step beam W = 16, which runs a verifier process per candidate per step), so the
table fits a few minutes on a busy machine; the table says how many each row used.
"""
import argparse
import concurrent.futures as cf
import json
import os
import random
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import arith_task as at  # noqa: E402

CHECK = "awk -f %s/arith_check.awk" % HERE
SAMPLE = ["--temp", "1.0", "--top-k", "0", "--top-p", "1", "--min-p", "0"]


def configs():
    c = [("greedy", "greedy", 1, ["--beam", "1"])]
    for n in (4, 16, 64):
        c.append(("sc%d" % n, "self-consistency", n, SAMPLE + ["--self-consistency", str(n), "--answer-regex", "A:(-?[0-9]+)"]))
    for n in (4, 16, 64):
        c.append(("bon%d" % n, "best-of-N, log-prob", n, SAMPLE + ["--best-of", str(n)]))
    for n in (4, 16, 64):
        c.append(("bonv%d" % n, "best-of-N, checker", n, SAMPLE + ["--best-of", str(n), "--verifier", CHECK]))
    for w in (4, 16):
        c.append(("beam%d" % w, "token beam", w, ["--beam", str(w)]))
    for w in (4, 16):
        c.append(("step%d" % w, "step beam, checker", w, SAMPLE + ["--beam", str(w), "--beam-step", "\\n", "--beam-expand", "4",
                                                                    "--verifier", CHECK + " -v partial=1"]))
    return c


def run_one(braid, model, prompt, extra, seed):
    cmd = [braid, "generate", "-m", model, "-p", prompt, "-n", "64", "-t", "1", "--log-disable", "--json",
           "--no-display-prompt", "--seed", str(seed)] + extra
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t
    if p.returncode != 0:
        sys.exit("braid failed (%d): %s\n%s" % (p.returncode, " ".join(cmd), p.stderr))
    r = json.loads(p.stdout)
    text = r["candidates"][r["best"]]["text"]
    return at.score(prompt + text, False) == 1.0, r["tokens_decoded"] + r["prompt_tokens"], wall


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--braid", default="build/tools/braid")
    ap.add_argument("--model", default="models/arith-jamba.gguf")
    ap.add_argument("--problems", type=int, default=500)
    ap.add_argument("--search", type=int, default=500, help="problems for the search rows (the first of the set)")
    ap.add_argument("--large", type=int, default=500, help="problems for the N = 64 rows and the step beam at W = 16")
    ap.add_argument("--k", type=int, default=4, help="operands per problem")
    ap.add_argument("--seed", type=int, default=20261202, help="held-out problems (training used other seeds)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated row ids (greedy, sc4, bon16, bonv64, beam4, step16, ...)")
    ap.add_argument("--csv")
    ap.add_argument("--plot")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    problems = [at.prompt_text(*at.make_problem(rng, a.k)) for _ in range(a.problems)]
    rows = []
    only = set(a.only.split(",")) if a.only else None
    print("| strategy | N or W | accuracy | tokens decoded per problem | wall s per problem | problems |")
    print("|---|---|---|---|---|---|")
    for rid, name, n, extra in configs():
        if only and rid not in only:
            continue
        large = n >= 64 or (rid.startswith("step") and n >= 16)
        probs = problems if rid == "greedy" else problems[:a.large] if large else problems[:a.search]
        with cf.ThreadPoolExecutor(a.jobs) as ex:
            res = list(ex.map(lambda ip: run_one(a.braid, a.model, ip[1], extra, 1000 + ip[0]), enumerate(probs)))
        acc = sum(r[0] for r in res) / len(res)
        tok = sum(r[1] for r in res) / len(res)
        wall = sum(r[2] for r in res) / len(res)
        rows.append((rid, name, n, acc, tok, wall, len(res)))
        print("| %s | %d | %.1f%% | %.0f | %.3f | %d |" % (name, n, 100 * acc, tok, wall, len(res)), flush=True)
    if a.csv:
        with open(a.csv, "w") as f:
            f.write("id,strategy,n,accuracy,tokens_per_problem,wall_s_per_problem,problems\n")
            for r in rows:
                f.write('%s,"%s",%d,%.4f,%.1f,%.4f,%d\n' % r)
    if a.plot:
        plot(rows, a.plot)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=110)
    groups = {}
    for rid, name, n, acc, tok, wall, k in rows:
        groups.setdefault(name, []).append((tok, 100 * acc, n))
    marks = "osD^vP*X"
    for i, (name, pts) in enumerate(groups.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marks[i % len(marks)], label=name)
        for x, y, n in pts:
            ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("tokens decoded per problem (log scale)")
    ax.set_ylabel("accuracy on held-out problems (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("arith-jamba: accuracy against compute (labels: N or W)")
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    main()
