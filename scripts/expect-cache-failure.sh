#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Prove that the page-cache tests can fail: run them (testbed/plans/dev.plan)
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
#   break_kick_target   every reload request goes to vCPU 0 (F1: vcpu_idx
#                       read before KVM assigned it)
#   break_folio_ref     page references are taken with
#                       get_page_unless_zero(), which fails on THP and
#                       hugetlb tail pages (F6; since the MSR bitmap is held
#                       by the cache's lock, only an eVMCS hit takes one)
#   break_sticky_hw     a vCPU stays "in use" for a page after it left L2,
#                       so it is kicked for ever (F7)
#   break_nonblock      non-blockable invalidations fail with -EAGAIN (F2)
#   break_dirty_log     the cache never marks a page dirty, so the dirty
#                       log (live migration) misses what KVM wrote
#
# The knobs exist only in the test-knob build of the module
# ($OUT/module-knobs), which the image loads for runs with module
# arguments. Each run is limited to the tests it names (--only).
. "$(dirname "$0")/lib.sh"

# expect_caught PARAM TEST...: with PARAM=1 the run must fail, and each
# TEST must be among the failures.
expect_caught() {
	local param=$1 res t failed missing=()
	shift
	if "$NVMX_ROOT/scripts/run-emulator.sh" bochs --plan dev --phases cache \
		--modargs "$param=1" --only "$(IFS=,; echo "$*")" --name "broken-$param" \
		>"$NVMX_CACHE/broken-$param.log" 2>&1; then
		cat "$NVMX_CACHE/broken-$param.log" >&2
		die "the tests passed against a cache with $param=1"
	fi
	res=$NVMX_ROOT/results/broken-$param
	failed=$(results_json "$res" tests FAIL cache)
	for t in "$@"; do
		grep -qx "cache/$t" <<<"$failed" || missing+=("$t")
	done
	[ ${#missing[@]} -eq 0 ] ||
		die "$param=1 was not caught by: ${missing[*]} ($(results_json "$res" tally))"
	log "$param=1 caught by: $(results_json "$res" tests FAIL cache | sed 's|.*/||' | tr '\n' ' ')"
}

step "cache that ignores invalidations" expect_caught break_invalidation \
	nvmx_inval_dontneed nvmx_inval_migrate nvmx_inval_race nvmx_memslot_recreate nvmx_l2_switch_4 \
	nvmx_trace
step "cache that does not persist" expect_caught break_persistence nvmx_unmanaged nvmx_opbench \
	nvmx_l2_switch_4
step "cache that ignores the GPA" expect_caught break_lookup nvmx_pages nvmx_opbench \
	nvmx_l2_switch_4
step "kicks that all go to vCPU 0" expect_caught break_kick_target \
	nvmx_vcpus_dontneed_last nvmx_vcpus4_dontneed_last nvmx_vcpus_race_last
step "page references on the page, not the folio" expect_caught break_folio_ref \
	nvmx_thp_evmcs nvmx_thp_evmcs_hugetlb
step "vCPUs kicked after they left L2" expect_caught break_sticky_hw \
	nvmx_vmxoff_vmxoff nvmx_vmxoff_l1
step "non-blockable invalidations refused" expect_caught break_nonblock nvmx_oom_mrelease
step "pages never marked dirty" expect_caught break_dirty_log nvmx_opbench
