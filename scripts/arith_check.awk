# The exact checker of scripts/arith_task.py as a fast verifier program (one awk process per candidate):
# reads prompt + completion on stdin, prints 1 or 0. -v partial=1 scores a partial solution (step beam).
BEGIN { RS = "\001" }
{ text = text $0 }
function fail() { print 0; exit }
function pass() { print 1; exit }
function startswith(s, p) { return substr(s, 1, length(p)) == p }
END {
    if (!match(text, /Q:[0-9]+([+-][0-9]+)+/)) fail()
    prob = substr(text, RSTART + 2, RLENGTH - 2)
    # operands and operators
    n = 0; s = prob
    while (match(s, /^[+-]?[0-9]+/)) {
        tok = substr(s, 1, RLENGTH); s = substr(s, RLENGTH + 1)
        n++
        if (n == 1) { num[1] = tok + 0 } else { op[n - 1] = substr(tok, 1, 1); num[n] = substr(tok, 2) + 0 }
    }
    v = num[1]
    for (i = 1; i < n; i++) v = op[i] == "+" ? v + num[i + 1] : v - num[i + 1]
    ans = v
    nl = index(text, "\n")
    body = nl ? substr(text, nl + 1) : ""
    m = split(body, L, "\n")
    # split drops nothing: a body ending in "\n" has an empty last element only in some awks; normalise
    if (substr(body, length(body)) == "\n" || body == "") { L[++m] = "" ; if (m >= 2 && L[m - 1] == "") m-- }
    if (!partial) {
        for (j = 1; j <= m; j++) if (startswith(L[j], "A:")) { if (substr(L[j], 3) == ans "") pass(); fail() }
        fail()
    }
    v = num[1]; i = 1
    for (j = 1; j <= m; j++) {
        last = j == m; ln = L[j]
        if (last && ln == "") break
        if (startswith(ln, "A:")) {
            a = substr(ln, 3)
            if ((i == n && a == v "") || (last && startswith(v "", a))) pass()
            fail()
        }
        if (i >= n) fail()
        w = op[i] == "+" ? v + num[i + 1] : v - num[i + 1]
        want = v op[i] num[i + 1] "=" w
        if (ln != want && !(last && startswith(want, ln))) fail()
        v = w; i++
    }
    pass()
}
