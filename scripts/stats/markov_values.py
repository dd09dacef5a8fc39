"""Reference values for the DataDriven (Markov removal effect) test in sluice's src/attribution/models.rs.

Run: /root/.cache/sluice-test-tools/venv/bin/python scripts/stats/markov_values.py   (numpy; the literals were
printed by numpy 2.4.6)

Mirrors the test's deterministic path generator exactly (a 64-bit LCG), builds the full transition matrix
(start, the channels, and the absorbing conversion and null), and computes the absorption probabilities with
numpy.linalg.solve. A removal is built independently of the Rust code: the removed state's column is moved to
null and the state is dropped from the transient set before solving. Prints Rust literals (shortest round-trip digits).
"""
import numpy as np

SEED = 2024
PATHS = 200
HOUR_MS = 3_600_000
CHANNELS = ["Direct", "Email", "Organic Search", "Paid Search", "Social"]
PICK = [0, 1, 1, 2, 2, 2, 3, 4]
MASK = (1 << 64) - 1


class Lcg:
    def __init__(self, seed):
        self.state = seed

    def next(self):
        self.state = (self.state * 6364136223846793005 + 1442695040888963407) & MASK
        return self.state >> 33


def generated():
    rng = Lcg(SEED)
    converting, values, null = [], [], []
    for _ in range(PATHS):
        converts = rng.next() % 3 == 0
        length = rng.next() % 5
        groups = [CHANNELS[PICK[rng.next() % 8]] for _ in range(length)]
        if converts:
            values.append((rng.next() % 10_000) / 100.0)
            # An empty converting path is one Direct touch (Conversion::effective_touches).
            converting.append(groups or ["Direct"])
        else:
            null.append(groups)
    return converting, values, null


def lit(x):
    # repr is the shortest string that reads back as the same f64 (what clippy's excessive_precision wants).
    s = repr(float(x))
    if not any(c in s for c in '.en'):
        s += '.0'
    return s


def main():
    converting, values, null = generated()
    groups = sorted({g for p in converting + null for g in p})
    states = ["start"] + groups + ["conversion", "null"]
    at = {s: i for i, s in enumerate(states)}
    counts = np.zeros((len(states), len(states)))
    for path, end in [(p, "conversion") for p in converting] + [(p, "null") for p in null]:
        seq = ["start"] + path + [end]
        for a, b in zip(seq, seq[1:]):
            counts[at[a], at[b]] += 1
    conv, nul = at["conversion"], at["null"]
    # Absorbing states stay where they are.
    counts[conv, conv] = counts[nul, nul] = 1
    P = counts / counts.sum(axis=1, keepdims=True)

    def p_conversion(P, transient):
        Q = P[np.ix_(transient, transient)]
        r = P[transient, conv]
        x = np.linalg.solve(np.eye(len(transient)) - Q, r)
        return x[transient.index(at["start"])]

    transient = [at[s] for s in ["start"] + groups]
    base = p_conversion(P, transient)
    removed = {}
    for g in groups:
        R = P.copy()
        R[:, nul] += R[:, at[g]]
        R[:, at[g]] = 0
        removed[g] = p_conversion(R, [t for t in transient if t != at[g]])
    effects = {g: 1 - removed[g] / base for g in groups}
    total_effect = sum(effects.values())
    count, value = len(converting), sum(values)

    print(f"// {count} conversions, {len(null)} null paths, total value {lit(value)}")
    print(f"const P_CONVERSION: f64 = {lit(base)};")
    print("const REMOVED: [(&str, f64); %d] = [" % len(groups))
    for g in groups:
        print(f'    ("{g}", {lit(removed[g])}),')
    print("];")
    print("// (group, conversions, value), in group name order")
    print("const ROWS: [(&str, f64, f64); %d] = [" % len(groups))
    for g in groups:
        f = effects[g] / total_effect
        print(f'    ("{g}", {lit(count * f)}, {lit(value * f)}),')
    print("];")


if __name__ == "__main__":
    main()
