#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# make bench: the benchmarks, stock KVM and the module side by side, in
# Bochs (emulated ticks, deterministic; compare ticks, never wall time).
#   1. the L2 round trip (testbed/plans/demo.plan): no pages, and the three
#      pages in ordinary, THP and unmanaged memory; stock, passthrough, cache
#   2. memslot_perf_test in L2 under the real L1 (testbed/plans/bench-l1.plan):
#      map, unmap, unmap chunked; managed, THP and unmanaged L1 memory;
#      stock and cache
# Then scripts/bench-report.py prints the tables and writes
# results/bench/{bench.tsv,l1-stats.tsv,bench.png}.
. "$(dirname "$0")/lib.sh"

rc=0
step "L2 round trip (demo plan)" "$NVMX_ROOT/scripts/run-emulator.sh" bochs --plan demo \
	--phases stock,passthrough,cache --name bench-l2 || rc=1
# One L1 boot plus three sub-tests per test; run-l1 -t 30 (L0 seconds)
# gives up first.
step "memslot_perf_test under the real L1" "$NVMX_ROOT/scripts/run-emulator.sh" bochs \
	--plan bench-l1 --phases stock,cache --image initrd-l1 --name bench-l1 \
	--test 1800 --total 3600 || rc=1
step "report" /usr/bin/python3 "$NVMX_ROOT/scripts/bench-report.py" "$NVMX_ROOT/results/bench" \
	"$NVMX_ROOT/results/bench-l2" "$NVMX_ROOT/results/bench-l1" || rc=1
exit $rc
