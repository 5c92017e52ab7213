#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Prove that the page-cache tests can fail: run them (guest/plans/dev.plan)
# in Bochs against deliberately broken caches, selected by the module's
# test-only parameters, and require each breakage to be caught by the tests
# that are meant to catch it.
#
#   break_invalidation  the cache ignores mmu_notifier and memslot
#                       invalidations, so it serves stale pages
#   break_persistence   the cache forgets every mapping at unmap(), so it
#                       maps (and memremaps) on every nested VM-entry
#   break_lookup        the cache is looked up by page kind alone, so it
#                       ignores a changed vmcs12 address
. "$(dirname "$0")/lib.sh"

# expect_caught PARAM TEST...: with PARAM=1 the run must fail, and each
# TEST must be among the failures.
expect_caught() {
	local param=$1 summary t missing=()
	shift
	if "$NVMX_ROOT/scripts/run-emulator.sh" bochs --plan dev --phases cache \
		--modargs "$param=1" --name "broken-$param" >"$NVMX_CACHE/broken-$param.log" 2>&1; then
		cat "$NVMX_CACHE/broken-$param.log" >&2
		die "the tests passed against a cache with $param=1"
	fi
	summary=$NVMX_ROOT/results/broken-$param/summary.txt
	for t in "$@"; do
		grep -q "^  FAIL cache/$t:" "$summary" || missing+=("$t")
	done
	[ ${#missing[@]} -eq 0 ] ||
		die "$param=1 was not caught by: ${missing[*]} ($(grep -E 'passed,' "$summary"))"
	log "$param=1 caught by: $(grep -o '^  FAIL cache/[a-z_0-9]*' "$summary" | sed 's|.*/||' | tr '\n' ' ')"
}

step "cache that ignores invalidations" expect_caught break_invalidation \
	nvmx_inval_dontneed nvmx_inval_migrate nvmx_inval_race nvmx_memslot_recreate
step "cache that does not persist" expect_caught break_persistence nvmx_unmanaged
step "cache that ignores the GPA" expect_caught break_lookup nvmx_pages
