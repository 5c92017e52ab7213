#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
"""Eviction policies for the cache's ways, simulated.

The cache keeps WAYS ways per page kind and vCPU (rust/cache.rs), one per
L2 page the vCPU switches between; when all are in use, a miss evicts one
(VcpuCaches::victim, least recently used).  This script replays access
patterns of an L1 that runs several L2s on one vCPU against four policies
and prints, for each, the hit ratio and the expected cost of the three
pages of one switch, from the per-operation benchmark's measured costs
(make bench, op_map_unmap rows; pass others with --costs).

Deterministic (fixed seeds).  It is evidence for a design decision
(Documentation/cache-design.md, "Eviction"), not a test.
"""
import argparse
import random

WAYS = 8
PAGES_PER_SWITCH = 3
LENGTH = 20000


def replay(policy, seq, seed=1):
    """Hit ratio of `policy` over the accesses `seq`."""
    rng = random.Random(seed)
    ways, last, hits = [None] * WAYS, [0] * WAYS, 0
    for now, key in enumerate(seq, 1):
        if key in ways:
            i = ways.index(key)
            hits += 1
        elif None in ways:
            i = ways.index(None)
        elif policy == "lru":
            i = min(range(WAYS), key=last.__getitem__)
        elif policy == "random":
            i = rng.randrange(WAYS)
        elif policy == "old-half":
            i = sorted(range(WAYS), key=last.__getitem__)[rng.randrange(WAYS // 2)]
        elif policy == "mru":
            i = max(range(WAYS), key=last.__getitem__)
        else:
            raise ValueError(policy)
        ways[i], last[i] = key, now
    return hits / len(seq)


def patterns():
    rng = random.Random(7)
    out = {}
    for n in (9, 12, 16, 32):
        out[f"round-robin {n}"] = [i % n for i in range(LENGTH)]
    for n in (12, 16):
        out[f"uniform {n}"] = [rng.randrange(n) for _ in range(LENGTH)]
    for n in (16, 64):
        weights = [1 / (k + 1) for k in range(n)]
        out[f"zipf {n}"] = rng.choices(range(n), weights, k=LENGTH)
    out["6 hot + 20 cold"] = [rng.randrange(6) if rng.random() < 0.9 else 6 + rng.randrange(20)
                              for _ in range(LENGTH)]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--costs", nargs=3, type=float, metavar=("HIT", "MISS", "STOCK"),
                    action="append",
                    help="ticks per map()+unmap() pair: cache hit, cache miss, stock"
                         " (repeatable; default: 2026-12-02 ordinary and unmanaged memory)")
    args = ap.parse_args()
    costs = args.costs or [(99, 1991, 905), (99, 8824, 7551)]
    policies = ["lru", "random", "old-half", "mru"]
    print("hit ratio per policy; then ticks per switch (three pages) with lru,"
          " with random and with stock, for each set of costs")
    print(f"{'pattern':18}" + "".join(f"{p:>10}" for p in policies)
          + "".join(f"  {'costs ' + '/'.join(str(int(v)) for v in c):>28}" for c in costs))
    for name, seq in patterns().items():
        ratio = {p: replay(p, seq) for p in policies}
        line = f"{name:18}" + "".join(f"{ratio[p]:10.3f}" for p in policies)
        for hit, miss, stock in costs:
            per = {p: PAGES_PER_SWITCH * (ratio[p] * hit + (1 - ratio[p]) * miss)
                   for p in ("lru", "random")}
            line += (f"  lru {per['lru']:6.0f} rnd {per['random']:6.0f}"
                     f" stock {PAGES_PER_SWITCH * stock:6.0f}")
        print(line)


if __name__ == "__main__":
    main()
