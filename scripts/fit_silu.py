#!/usr/bin/env python3
"""Fits the pieces of SiLU(x) = x / (1 + e^-x) for src/mpc/protocols/silu.rs (pure Python, no
dependencies): run it and paste its output over the constants there.

SiLU(x) = x + SiLU(-x), and SiLU(x) - x/2 = (x/2) tanh(x/2) is even, so two polynomials suffice:
- CENTRE: SiLU(x) - x/2 on [-A, A] as a polynomial of degree 4 in u^2, u = x / 4;
- SIDE: SiLU(x) on [-T, -A) as a polynomial of degree 8 in v = (x + C) / 8, C the interval's
  middle (a centred variable keeps the coefficients near 1, so fixed-point powers at 20 bits
  suffice); on [A, T) SiLU(x) = x + SIDE((C - x) / 8).
Outside, SiLU is 0 (x < -T, error at most T e^-T) or x. The comparisons place a cut-off within
2^-8 (a value up to 2^-8 left of one may take the piece on its right), so each fit reaches 2^-8
past the interval's ends. The fit is minimax, by Lawson's reweighted least squares.
"""
import math

A, T = 2.375, 12.0
C = (A + T) / 2
SLACK = 2.0**-8


def silu(x):
    return x / (1.0 + math.exp(-x))


def lstsq(rows, ys, ws):
    """Weighted least squares by modified Gram-Schmidt."""
    n, m = len(rows[0]), len(rows)
    cols = [[rows[i][j] * ws[i] for i in range(m)] for j in range(n)]
    b = [ys[i] * ws[i] for i in range(m)]
    r = [[0.0] * n for _ in range(n)]
    for j in range(n):
        for k in range(j):
            r[k][j] = sum(p * q for p, q in zip(cols[k], cols[j]))
            cols[j] = [q - r[k][j] * p for p, q in zip(cols[k], cols[j])]
        r[j][j] = math.sqrt(sum(q * q for q in cols[j]))
        cols[j] = [q / r[j][j] for q in cols[j]]
    qb = [sum(p * q for p, q in zip(cols[j], b)) for j in range(n)]
    c = [0.0] * n
    for j in reversed(range(n)):
        c[j] = (qb[j] - sum(r[j][k] * c[k] for k in range(j + 1, n))) / r[j][j]
    return c


def minimax(xs, basis, target, iters=80):
    rows = [basis(x) for x in xs]
    ys = [target(x) for x in xs]
    ws = [1.0] * len(xs)
    for _ in range(iters):
        c = lstsq(rows, ys, [math.sqrt(w) for w in ws])
        err = [abs(sum(a * b for a, b in zip(row, c)) - y) for row, y in zip(rows, ys)]
        ws = [w * e for w, e in zip(ws, err)]
        total = sum(ws)
        ws = [w / total for w in ws]
    return c, max(err)


def grid(lo, hi, n=1000):
    return [lo + (hi - lo) * i / n for i in range(n + 1)]


side, side_err = minimax(
    grid(-T - SLACK, -A + SLACK),
    lambda x: [((x + C) / 8) ** k for k in range(9)],
    silu,
)
centre, centre_err = minimax(
    grid(0.0, A + SLACK),
    lambda x: [(x / 4) ** (2 * k) for k in range(5)],
    lambda x: silu(x) - x / 2,
)
print(f"// A = {A}, T = {T}, C = {C}")
print(f"// max fit error: side {side_err:.2e}, centre {centre_err:.2e}, tail {T * math.exp(-T):.2e}")
print("const SIDE: [f64; 9] = [")
for v in side:
    print(f"    {v!r},")
print("];")
print("const CENTRE: [f64; 5] = [")
for v in centre:
    print(f"    {v!r},")
print("];")
