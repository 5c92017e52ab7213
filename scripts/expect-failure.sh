#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Prove that the test bed cannot report success falsely: a plan with a test
# that exits 1, and one with a test that never ends, must both make the run
# fail, the hang through the host-side timeout. Uses QEMU (seconds per boot).
. "$(dirname "$0")/lib.sh"

# expect_red WHAT STATUS ARGS...: the run must fail, and fail because the
# canary got STATUS, not for some unrelated reason.
expect_red() {
	local what=$1 status=$2 res
	shift 2
	if "$NVMX_ROOT/scripts/run-emulator.sh" qemu "$@" >"$NVMX_CACHE/expect-$what.log" 2>&1; then
		cat "$NVMX_CACHE/expect-$what.log" >&2
		die "run with an injected $what reported success"
	fi
	res=$NVMX_ROOT/results/inject-$what
	results_json "$res" tests "$status" stock | grep -qx "stock/canary-$what" ||
		die "run failed, but not with $status for canary-$what: $(results_json "$res" show "stock/canary-$what") ($(results_json "$res" tally))"
	# Only the canary's line: the red run's own tally would read like a
	# failure of this (green) check to anything that parses test output.
	results_json "$res" show "stock/canary-$what" >&2
	log "injected $what made the run fail, as it must"
}

step "injected failing test" expect_red fail FAIL --plan smoke --phases stock --inject fail --name inject-fail
step "injected hanging test" expect_red hang TIMEOUT --plan smoke --phases stock --inject hang --name inject-hang --test 15
