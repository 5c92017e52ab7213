#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0
"""Turn the serial logs of make bench's emulator runs into tables, a TSV and a plot.

    bench-report.py OUTDIR RESULTS_DIR...
    bench-report.py --selftest      (parse a made-up log; check-style runs it)

Each RESULTS_DIR is a results/<name>/ directory of scripts/run-emulator.sh
with its serial.log (host-stamped console).  The tests' boundaries are the
TAP that testbed/init prints (see tools/nvmx-harness/src/log.rs); the data
are @@ lines in the tests' output:

    # selftests: <phase>: <test>                                 (the start)
    # @@BENCH test=nvmx_l2_loop mode=<m> iters=<n> ticks=<t> ...   (L2 round trip)
    # @@RESULT bench=<b> variant=<v> memory=<m> [phase=<p>] value=<x> unit=<u>
                                              (run-l1, nvmx_opbench_test)
    # @@L1-STATS memory=<m> <key>=<value>...                     (run-l1)
    # exit=<rc> uptime=<s> ...
    ok <N> <phase>/<test>  |  not ok <N> <phase>/<test> # ...     (the end)

Saved logs of the previous format (@@TEST-START <phase> <test> ... @@TEST-END
<phase> <test> rc=<rc>) are read too.

Writes OUTDIR/bench.tsv (bench variant memory phase value unit), OUTDIR/
l1-stats.tsv and OUTDIR/bench.png, and prints one table per benchmark with
each phase's value and stock/phase, the module's speedup.  Exits 1 if a
benchmark test failed or produced nothing.
"""

import re
import sys
from pathlib import Path

STAMP = re.compile(r"^\[\s*([0-9.]+)\] ")
# TAP lines at the top level: kernel text may come before them on the line,
# the tests' own output (behind "# ") may not.
START = re.compile(r"^([^#]*?)# selftests: (\S+): (\S+)")
EXIT = re.compile(r"^([^#]*?)# exit=(-?[0-9]+)")
RESULT = re.compile(r"^([^#]*?)(not ok|ok) [0-9]+ (\S+)/(\S+)(.*)$")
MEMORY_ORDER = ["none", "managed", "thp", "unmanaged"]
PHASE_ORDER = ["stock", "passthrough", "cache"]


def kv(text):
    """The key=value words of a marker line."""
    return dict(w.split("=", 1) for w in text.split() if "=" in w)


def parse(log):
    """Rows, L1 statistics and test outcomes of one serial.log."""
    rows, stats, tests = [], [], []
    phase = test = rc = None
    started = 0.0
    for raw in log.read_text(errors="replace").splitlines():
        m = STAMP.match(raw)
        t = float(m.group(1)) if m else None
        line = raw[m.end():] if m else raw
        start, exit_, result = START.match(line), EXIT.match(line), RESULT.match(line)
        if start or "@@TEST-START " in line:
            if start:
                phase, test = start.group(2), start.group(3)
            else:
                phase, test = line.split("@@TEST-START ", 1)[1].split()[:2]
            started = t or 0.0
            rc = None
        elif result and test and (result.group(3), result.group(4)) == (phase, test):
            if rc is None:
                rc = "4" if "# SKIP" in result.group(5) else \
                    "0" if result.group(2) == "ok" else "1"
            tests.append((phase, test, rc, (t or 0.0) - started))
            test = None
        elif exit_ and not result and test:
            rc = exit_.group(2)
        elif "@@TEST-END " in line and test:
            rc = kv(line).get("rc", "?")
            tests.append((phase, test, rc, (t or 0.0) - started))
            test = None
        elif "@@BENCH " in line and phase:
            f = kv(line.split("@@BENCH ", 1)[1])
            if f.get("test") == "nvmx_l2_loop" and int(f.get("iters", 0)) > 0:
                # mode=<memory> (all pages) or <memory>_msr / <memory>_apic
                # (only the MSR bitmap, only the two APIC pages: -p).
                memory, _, only = f["mode"].partition("_")
                value = int(f["ticks"]) / int(f["iters"])
                variant = "none" if memory == "none" else (only or "pages")
                rows.append(("l2_roundtrip", variant, memory, phase, value, "ticks"))
            elif f.get("test") == "nvmx_l2_switch" and int(f.get("iters", 0)) > 0:
                value = int(f["ticks"]) / int(f["iters"])
                rows.append(("l2_switch", f["l2s"], f["mode"], phase, value, "ticks"))
        elif "@@RESULT " in line and phase:
            f = kv(line.split("@@RESULT ", 1)[1])
            # A test that measures stock and the module in one run (the
            # per-operation benchmark) names the phase of each value.
            rows.append((f["bench"], f["variant"], f["memory"], f.get("phase", phase),
                         float(f["value"]), f["unit"]))
        elif "@@L1-STATS " in line and phase:
            stats.append((phase, kv(line.split("@@L1-STATS ", 1)[1])))
    return rows, stats, tests


def order(seq, known):
    return sorted(set(seq), key=lambda x: (known.index(x) if x in known else len(known), x))


def fmt(v, unit):
    return f"{v:.1f}" if unit == "ticks" else f"{v:.6f}"


def tables(rows):
    out = []
    for bench in dict.fromkeys(r[0] for r in rows):
        sub = [r for r in rows if r[0] == bench]
        unit = sub[0][5]
        if any(r[1] == "stock" for r in sub) or bench == "op_get_put":
            out += op_table(bench, sub, rows)
            continue
        phases = order([r[3] for r in sub], PHASE_ORDER)
        val = {(r[1], r[2], r[3]): r[4] for r in sub}
        keys = list(dict.fromkeys((r[1], r[2]) for r in sub))
        keys.sort(key=lambda k: MEMORY_ORDER.index(k[1]) if k[1] in MEMORY_ORDER else 9)
        head = f"{'variant':14} {'memory':10}" + "".join(f" {p:>12}" for p in phases)
        others = [p for p in phases if p != "stock"]
        head += "".join(f" {'stock/' + p:>18}" for p in others)
        out.append(f"{bench} ({unit}{' per round trip' if unit == 'ticks' else ' per iteration'},"
                   f" lower is better; stock/phase > 1: the phase is faster)")
        if bench == "memslot_perf":
            out.append("  (the test bed's Bochs build of memslot_perf_test:"
                       " testbed/l1/memslot_perf_test-bochs.patch)")
        out.append(head)
        for var, mem in keys:
            line = f"{var:14} {mem:10}"
            for p in phases:
                v = val.get((var, mem, p))
                line += f" {fmt(v, unit) if v is not None else '-':>12}"
            for p in others:
                s, v = val.get((var, mem, "stock")), val.get((var, mem, p))
                line += f" {(f'{s / v:.3f}x' if s and v else '-'):>18}"
            out.append(line)
        out.append("")
    return "\n".join(out)


def op_table(bench, sub, rows):
    """A bench whose stock reference is a variant (the per-operation
    benchmark): each value against op_map_unmap's stock pair."""
    stock = {r[2]: r[4] for r in rows if r[0] == "op_map_unmap" and r[1] == "stock"}
    out = [f"{bench} (ticks per pair, lower is better; stock/value: how many times"
           f" cheaper than kvm_vcpu_map()+kvm_vcpu_unmap())",
           f"{'variant':14} {'memory':10} {'phase':12} {'value':>12} {'stock/value':>14}"]
    for r in sorted(sub, key=lambda r: (MEMORY_ORDER.index(r[2]) if r[2] in MEMORY_ORDER
                                        else 9, r[1] != "stock", r[1])):
        s = stock.get(r[2])
        ratio = f"{s / r[4]:.1f}x" if s and r[4] else "-"
        out.append(f"{r[1]:14} {r[2]:10} {r[3]:12} {fmt(r[4], r[5]):>12} {ratio:>14}")
    out.append("")
    return out


def checks(rows, stats):
    """The numbers issue 8 asks about, computed, not asserted."""
    out = []
    val = {(r[0], r[1], r[2], r[3]): r[4] for r in rows}
    for var in dict.fromkeys(r[1] for r in rows if r[0] == "memslot_perf"):
        m = val.get(("memslot_perf", var, "managed", "cache"))
        u = val.get(("memslot_perf", var, "unmanaged", "cache"))
        if m and u:
            out.append(f"memslot_perf {var}: cache, unmanaged/managed = {u / m:.3f}")
    for (bench, var, mem, phase), v in val.items():
        floor = val.get(("l2_roundtrip", "none", "none", phase))
        if bench == "l2_roundtrip" and var != "none" and floor:
            out.append(f"l2_roundtrip {phase} {mem} ({var}): {v / floor:.3f}x the no-page"
                       f" floor, {v - floor:.0f} ticks above it")
    for phase, s in stats:
        if "memremap" in s and int(s.get("nested_run", 0)) > 0:
            out.append(f"{phase} {s['memory']}: {s['memremap']} memremaps over "
                       f"{s['nested_run']} nested VM-entries "
                       f"({1000 * int(s['memremap']) / int(s['nested_run']):.3f} per 1000)")
    return "\n".join(out)


def panels(rows):
    """(title, unit, {x: {bar: value}}) per plot panel: the L2 round trip
    by memory, each memslot_perf_test variant by memory, and the
    per-operation benchmark by memory with one bar per operation."""
    out = {}
    for bench, var, mem, phase, value, unit in rows:
        if bench.startswith("op_"):
            key, bar = ("per-operation (ticks per pair)", unit), \
                f"{'get+put' if bench == 'op_get_put' else 'map+unmap'} {var}"
        elif bench == "l2_switch":
            key, bar = (f"{bench} {mem} (ticks per switch)", unit), phase
            mem = f"{int(var):2d} L2s"
        elif bench == "l2_roundtrip":
            only = f" ({var} only)" if var in ("msr", "apic") else ""
            key, bar = (f"{bench}{only} (ticks)", unit), phase
        else:
            key, bar = (f"{bench} {var} ({unit} per iteration)", unit), phase
        out.setdefault(key, {}).setdefault(mem, {})[bar] = value
    return out


def plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench-report: no matplotlib (python3-matplotlib); no plot", file=sys.stderr)
        return
    groups = panels(rows)
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 4), squeeze=False)
    for ax, ((title, unit), data) in zip(axes[0], groups.items()):
        mems = order(list(data), MEMORY_ORDER)
        bars = list(dict.fromkeys(b for m in mems for b in data[m]))
        bars = order(bars, PHASE_ORDER) if set(bars) <= set(PHASE_ORDER) else bars
        width = 0.8 / len(bars)
        for i, b in enumerate(bars):
            xs = [j + i * width for j in range(len(mems))]
            colour = {"stock": "tab:blue", "passthrough": "tab:orange",
                      "cache": "tab:green"}.get(b)
            ax.bar(xs, [data[m].get(b, 0) for m in mems], width, label=b, color=colour)
        ax.set_xticks([j + width * (len(bars) - 1) / 2 for j in range(len(mems))])
        ax.set_xticklabels(mems)
        if title.startswith("per-operation"):
            ax.set_yscale("log")
        ax.set_title(title, fontsize="medium")
        ax.set_ylabel(unit)
        ax.legend(fontsize="small")
    fig.suptitle("nvmx-gpc in Bochs 2.7 (emulated VMX): stock KVM vs the module; lower is better"
                 " (memslot_perf_test: the test bed's Bochs build)", fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    print(f"bench-report: wrote {path}")


SAMPLE = """\
[   0.9] TAP version 13
[   1.0] # selftests: stock: nvmx_l2_loop_thp
[   2.0] # @@BENCH test=nvmx_l2_loop mode=thp iters=100 ticks=2500000 per_rt=25000
[   2.5] # # exit=7 (the test's own output, not the diagnostic)
[   2.9] # exit=0 uptime=1.0
[   3.0] ok 1 stock/nvmx_l2_loop_thp
[   4.0] [    1.5] kvm: x# selftests: cache: nvmx_l2_loop_thp
[   5.0] # @@BENCH test=nvmx_l2_loop mode=thp iters=100 ticks=2000000 per_rt=20000
[   5.5] # ok 1 cache/nvmx_l2_loop_thp
[   6.0] # exit=0 uptime=2.0
[   6.0] ok 2 cache/nvmx_l2_loop_thp
[   6.2] # @@BENCH test=nvmx_l2_switch mode=unmanaged l2s=16 iters=400 ticks=12000000 per_rt=30000
[   7.0] # selftests: cache: l1_memslot_perf_unmanaged
[   8.0] # @@L1-STATS memory=unmanaged hits=30 memremap=3 nested_run=1000
[   8.5] # @@RESULT bench=memslot_perf variant=unmap_chunked memory=unmanaged value=0.5 unit=s
[   8.6] # @@RESULT bench=op_map_unmap variant=stock memory=thp phase=stock value=900.5 unit=ticks
[  19.0] # exit=1 uptime=3.0
[  20.0] not ok 3 cache/l1_memslot_perf_unmanaged # exit=1
[  20.1] 1..3
"""

# The same run as a saved log of the previous console format prints it.
OLD_SAMPLE = """\
[   1.0] @@TEST-START stock nvmx_l2_loop_thp
[   2.0] # @@BENCH test=nvmx_l2_loop mode=thp iters=100 ticks=2500000 per_rt=25000
[   3.0] @@TEST-END stock nvmx_l2_loop_thp rc=0 uptime=1.0
[   3.0] ok 1 stock/nvmx_l2_loop_thp
[   4.0] @@TEST-START cache nvmx_l2_loop_thp
[   5.0] # @@BENCH test=nvmx_l2_loop mode=thp iters=100 ticks=2000000 per_rt=20000
[   6.0] @@TEST-END cache nvmx_l2_loop_thp rc=0 uptime=2.0
[   6.0] ok 2 cache/nvmx_l2_loop_thp
[   6.2] # @@BENCH test=nvmx_l2_switch mode=unmanaged l2s=16 iters=400 ticks=12000000 per_rt=30000
[   7.0] @@TEST-START cache l1_memslot_perf_unmanaged
[   8.0] # @@L1-STATS memory=unmanaged hits=30 memremap=3 nested_run=1000
[   8.5] # @@RESULT bench=memslot_perf variant=unmap_chunked memory=unmanaged value=0.5 unit=s
[   8.6] # @@RESULT bench=op_map_unmap variant=stock memory=thp phase=stock value=900.5 unit=ticks
[  20.0] @@TEST-END cache l1_memslot_perf_unmanaged rc=1 uptime=3.0
[  20.0] not ok 3 cache/l1_memslot_perf_unmanaged # rc=1
"""


def selftest():
    for sample in (SAMPLE, OLD_SAMPLE):
        selftest_one(sample)
    print("bench-report: selftest passed")


def selftest_one(sample):
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        log = Path(d) / "serial.log"
        log.write_text(sample)
        rows, stats, tests = parse(log)
    want = [("l2_roundtrip", "pages", "thp", "stock", 25000.0, "ticks"),
            ("l2_roundtrip", "pages", "thp", "cache", 20000.0, "ticks"),
            ("l2_switch", "16", "unmanaged", "cache", 30000.0, "ticks"),
            ("memslot_perf", "unmap_chunked", "unmanaged", "cache", 0.5, "s"),
            ("op_map_unmap", "stock", "thp", "stock", 900.5, "ticks")]
    assert rows == want, rows
    assert stats == [("cache", {"memory": "unmanaged", "hits": "30", "memremap": "3",
                                "nested_run": "1000"})], stats
    assert [(t[1], t[2], t[3]) for t in tests] == [
        ("nvmx_l2_loop_thp", "0", 2.0), ("nvmx_l2_loop_thp", "0", 2.0),
        ("l1_memslot_perf_unmanaged", "1", 13.0)], tests
    table = tables(rows)
    assert "1.250x" in table, table
    assert "op_map_unmap (ticks per pair" in table, table
    assert len(panels(rows)) == 4, panels(rows)
    assert "3.000 per 1000" in checks(rows, stats)


def main():
    if sys.argv[1:] == ["--selftest"]:
        selftest()
        return
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    outdir = Path(sys.argv[1])
    outdir.mkdir(parents=True, exist_ok=True)
    rows, stats, tests = [], [], []
    bad = []
    for d in sys.argv[2:]:
        log = Path(d) / "serial.log"
        if not log.exists():
            bad.append(f"{log}: missing")
            continue
        r, s, t = parse(log)
        rows += r
        stats += s
        tests += t
    print("Wall time per benchmark test:")
    for phase, test, rc, wall in tests:
        if test.startswith(("nvmx_l2_loop", "l1_")):
            print(f"  {phase + '/' + test:40} rc={rc:3} {wall:7.1f} s")
            if rc != "0":
                bad.append(f"{phase}/{test}: rc={rc}")
    print()
    print(tables(rows))
    c = checks(rows, stats)
    if c:
        print(c)
        print()
    with open(outdir / "bench.tsv", "w") as f:
        f.write("bench\tvariant\tmemory\tphase\tvalue\tunit\n")
        for r in rows:
            f.write("\t".join([r[0], r[1], r[2], r[3], fmt(r[4], r[5]), r[5]]) + "\n")
    keys = list(dict.fromkeys(k for _, s in stats for k in s if k != "memory"))
    with open(outdir / "l1-stats.tsv", "w") as f:
        f.write("\t".join(["phase", "memory"] + keys) + "\n")
        for phase, s in stats:
            f.write("\t".join([phase, s.get("memory", "?")] + [s.get(k, "") for k in keys]) + "\n")
    print(f"bench-report: wrote {outdir / 'bench.tsv'} ({len(rows)} rows), {outdir / 'l1-stats.tsv'}")
    if rows:
        plot(rows, outdir / "bench.png")
    if not rows:
        bad.append("no benchmark rows")
    for b in bad:
        print(f"bench-report: FAILED: {b}", file=sys.stderr)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
