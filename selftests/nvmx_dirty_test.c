// SPDX-License-Identifier: GPL-2.0-only
/*
 * nvmx_dirty_test: the virtual-APIC page, which the CPU writes while L2
 * runs, is in the dirty log once userspace logs its memslot, with no exit
 * to L1 in between.
 *
 * The CPU writes VTPR through the HPA in vmcs02 when L2 writes CR8 (TPR
 * shadow), which no dirty tracking sees, so KVM marks the page dirty on
 * every exit from L2 (nested_mark_vmcs12_pages_dirty()).  Patch 11 of the
 * series has that mark remember the page's memslot for the vCPU's memslot
 * generation.  Here L2 writes CR8 and exits straight to userspace with
 * GUEST_SYNC (L1 does not intercept port I/O): the vCPU stays in L2, no
 * nested VM-exit unmaps the page, and in the stock phase nothing but that
 * mark can put the page in the log.  Each round, for every vCPU:
 *
 *   1. the page slot does not log dirty pages; L2 writes CR8 and syncs,
 *      so the mark looks the memslot up and finds nothing to do;
 *   2. the host turns dirty logging on for the page slot, which replaces
 *      the memslot, and clears the log;
 *   3. L2 writes another CR8 value and syncs: the vCPU's virtual-APIC page
 *      must be in the log, holding that value, and no other page of the
 *      slot may be;
 *   4. the host turns dirty logging off again.
 *
 * A mark that trusted the memslot of step 1 in step 3 would leave the page
 * out of the log.  With the module the memslot update of step 2 also makes
 * the cache reload the page (unmap(dirty) and map() before L2 resumes),
 * which marks it too; the test checks the result in every phase.
 *
 * -v N vCPUs (1 to 4), each with its own L1, L2 and virtual-APIC page; -s
 * the page slot's backing, as the selftest library names it (anonymous,
 * anonymous_thp, anonymous_hugetlb, ...); -n rounds.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <linux/bitmap.h>

#include "nvmx_nested.h"

#include "kselftest.h"

/* L2's two syncs of a round; args[2] is the round. */
#define SYNC_UNLOGGED	1
#define SYNC_LOGGED	2

/* Set by the host. */
static uint64_t nr_rounds = 4;

/* The CR8 value L2 writes at step 3 of round @r. */
static inline uint64_t logged_cr8(uint64_t r)
{
	return (2 * r + 1) & 0xf;
}

static void l2_dirty_rounds(void)
{
	uint64_t r;

	for (r = 0; r < nr_rounds; r++) {
		nvmx_l2_write_cr8((2 * r) & 0xf);
		GUEST_SYNC_ARGS(SYNC_UNLOGGED, r, 0, 0, 0);
		nvmx_l2_write_cr8(logged_cr8(r));
		GUEST_SYNC_ARGS(SYNC_LOGGED, r, 0, 0, 0);
	}
	nvmx_l2_done();
}

NVMX_DEFINE_L1_GUEST_CODE(l2_dirty_rounds)

static void run_to(struct kvm_vcpu *vcpu, uint64_t stage, uint64_t round)
{
	struct ucall uc;

	nvmx_run_to_sync(vcpu, stage, &uc);
	TEST_ASSERT(uc.args[2] == round, "SYNC %lu of round %lu, expected round %lu", stage,
		    uc.args[2], round);
}

int main(int argc, char *argv[])
{
	enum vm_mem_backing_src_type src = VM_MEM_SRC_ANONYMOUS;
	struct nvmx_shared *sh[NVMX_MAX_VCPUS];
	struct kvm_vcpu *vcpus[NVMX_MAX_VCPUS];
	uint64_t missed[NVMX_MAX_VCPUS] = {}, stray = 0, nbits, bit, r;
	uint64_t vapic_bit[NVMX_MAX_VCPUS];
	int nr_vcpus = 2, opt, i;
	unsigned long *bmap;
	struct kvm_vm *vm;
	uint32_t vtpr;

	while ((opt = getopt(argc, argv, "v:s:n:h")) != -1) {
		if (opt == 'n') {
			nr_rounds = strtoull(optarg, NULL, 0);
			if (!nr_rounds)
				goto usage;
		} else if (!nvmx_vcpus_opt(opt, optarg, &nr_vcpus, &src)) {
			goto usage;
		}
	}

	ksft_print_header();
	TEST_REQUIRE(kvm_cpu_has(X86_FEATURE_VMX));
	ksft_set_plan(nr_vcpus);
	printf("# %d vCPUs, page slot on %s memory, %lu rounds\n", nr_vcpus,
	       vm_mem_backing_src_alias(src)->name, nr_rounds);

	nvmx_create_vm_vcpus(&vm, vcpus, nr_vcpus, l1_guest_code, NVMX_USE_VAPIC, src, sh);
	sync_global_to_guest(vm, nr_rounds);
	nbits = nvmx_host_slot_size / getpagesize();
	bmap = bitmap_zalloc(nbits);
	for (i = 0; i < nr_vcpus; i++)
		vapic_bit[i] = (nvmx_vcpu_pages_gpa(i) - NVMX_PAGES_GPA) / getpagesize() +
			       NVMX_PG_VAPIC;

	for (r = 0; r < nr_rounds; r++) {
		for (i = 0; i < nr_vcpus; i++)
			run_to(vcpus[i], SYNC_UNLOGGED, r);

		vm_mem_region_set_flags(vm, NVMX_PAGES_SLOT, KVM_MEM_LOG_DIRTY_PAGES);
		/* Nothing was marked while the slot was not logged. */
		kvm_vm_get_dirty_log(vm, NVMX_PAGES_SLOT, bmap);
		for (i = 0; i < nr_vcpus; i++)
			run_to(vcpus[i], SYNC_LOGGED, r);
		bitmap_zero(bmap, nbits);
		kvm_vm_get_dirty_log(vm, NVMX_PAGES_SLOT, bmap);
		vm_mem_region_set_flags(vm, NVMX_PAGES_SLOT, 0);

		for (i = 0; i < nr_vcpus; i++) {
			vtpr = *nvmx_vcpu_vtpr_hva(vm, i);
			TEST_ASSERT(vtpr >> 4 == logged_cr8(r),
				    "vcpu%d round %lu: VTPR 0x%x, L2 wrote CR8 %lu", i, r, vtpr,
				    logged_cr8(r));
			if (!test_bit(vapic_bit[i], bmap))
				missed[i]++;
			__clear_bit(vapic_bit[i], bmap);
		}
		for (bit = 0; bit < nbits; bit++)
			stray += test_bit(bit, bmap);
	}
	for (i = 0; i < nr_vcpus; i++)
		nvmx_run_to_done(vcpus[i]);
	free(bmap);
	kvm_vm_free(vm);

	TEST_ASSERT(!stray, "%lu pages of the slot other than the virtual-APIC pages were dirty",
		    stray);
	for (i = 0; i < nr_vcpus; i++) {
		if (!missed[i])
			ksft_test_result_pass("vcpu%d: the virtual-APIC page L2 wrote is in the dirty log in every round (%lu)\n",
					      i, nr_rounds);
		else
			ksft_test_result_fail("vcpu%d: the virtual-APIC page L2 wrote is missing from the dirty log in %lu of %lu rounds\n",
					      i, missed[i], nr_rounds);
	}
	ksft_finished();

usage:
	printf("usage: %s [-v 1-4] [-s backing source] [-n rounds]\n", argv[0]);
	backing_src_help("-s");
	return KSFT_FAIL;
}
