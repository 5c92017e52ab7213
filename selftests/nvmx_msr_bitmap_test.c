// SPDX-License-Identifier: GPL-2.0-only
/*
 * nvmx_msr_bitmap_test: a change that the host, not L1, makes to L1's MSR
 * bitmap between two nested VM-Enters must be in use from the second one.
 *
 * Patch 10 of the series lets KVM skip the merge of L1's MSR bitmap into
 * vmcs02's when the words the previous merge read are unchanged.  A change
 * L1 makes itself is covered by nvmx_pages_test (L1 rewrites the bitmap
 * every round).  This test writes the bitmap through the VMM's mapping of
 * guest memory, as a device model or a migration stream would: nothing in
 * KVM sees that write (no exit, no write fault, no mmu_notifier event), so
 * only a comparison with the page's content can catch it.  A skip that
 * relied on write-tracking or on force_msr_bitmap_recalc alone fails here.
 *
 * -v N (1 to 4) vCPUs, each with its own L1, L2 and MSR bitmap; -s names
 * the page slot's backing as the selftest library does (anonymous,
 * anonymous_thp, anonymous_hugetlb, ...; THP and hugetlb put the bitmap on
 * a tail page).  Each vCPU's L2 parks in userspace (nvmx_l2_parked_sequence())
 * after a RDMSR exit to L1 and a nested VM-Enter with its bitmap unchanged,
 * which is where the merge is skipped.  The host then rewrites every
 * vCPU's bitmap from intercepting RDMSR of nvmx_msrs[0] to intercepting
 * RDMSR of nvmx_msrs[1], touching nothing else, and resumes the vCPUs.  At
 * the next nested VM-Enter, L2's RDMSR of nvmx_msrs[1] must exit to L1 and
 * that of nvmx_msrs[0] must not.
 *
 * Stock KVM merges on every nested VM-Enter and passes; the test runs in
 * every phase, since the code under test is KVM's, with or without the
 * module.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nvmx_nested.h"

#include "kselftest.h"

NVMX_DEFINE_L1_GUEST_CODE(nvmx_l2_park_or_race)

int main(int argc, char *argv[])
{
	struct kvm_vcpu *vcpus[NVMX_MAX_VCPUS];
	struct nvmx_shared *sh[NVMX_MAX_VCPUS];
	struct ucall uc, next;
	enum vm_mem_backing_src_type src = VM_MEM_SRC_ANONYMOUS;
	int nr_vcpus = 2, opt, i;
	struct kvm_vm *vm;

	while ((opt = getopt(argc, argv, "v:s:h")) != -1) {
		if (!nvmx_vcpus_opt(opt, optarg, &nr_vcpus, &src))
			goto usage;
	}

	ksft_print_header();
	TEST_REQUIRE(kvm_cpu_has(X86_FEATURE_VMX));
	ksft_set_plan(nr_vcpus);
	printf("# %d vCPUs, page slot on %s memory\n", nr_vcpus,
	       vm_mem_backing_src_alias(src)->name);

	nvmx_create_vm_vcpus(&vm, vcpus, nr_vcpus, l1_guest_code,
			     NVMX_USE_MSR_BITMAP | NVMX_USE_APIC_ACCESS | NVMX_USE_VAPIC,
			     src, sh);
	for (i = 0; i < nr_vcpus; i++) {
		nvmx_write_start_pages(nvmx_vcpu_page_hva(vm, i, NVMX_PG_MSR_BITMAP),
				       nvmx_vcpu_page_hva(vm, i, NVMX_PG_VAPIC));
		nvmx_run_to_sync(vcpus[i], NVMX_SYNC_PARKED, &uc);
		nvmx_check_parked(&uc);
	}

	/* Only the bitmap changes: the VTPR, and so nothing else, stays. */
	for (i = 0; i < nr_vcpus; i++)
		nvmx_write_msr_bitmap(nvmx_vcpu_page_hva(vm, i, NVMX_PG_MSR_BITMAP),
				      NVMX_NEW_PATTERN);

	for (i = 0; i < nr_vcpus; i++) {
		nvmx_run_to_sync(vcpus[i], NVMX_SYNC_RESUMED, &uc);
		nvmx_run_to_sync(vcpus[i], NVMX_SYNC_NEXT_ENTRY, &next);
		nvmx_run_to_done(vcpus[i]);
		if (next.args[3] == 0 && next.args[4] == 1)
			ksft_test_result_pass("vcpu%d: the host's change to L1's MSR bitmap is in use at the next nested VM-Enter\n",
					      i);
		else
			ksft_test_result_fail("vcpu%d: stale merged MSR bitmap at the next nested VM-Enter: RDMSR 0x%x exit %lu (want 0), RDMSR 0x%x exit %lu (want 1)\n",
					      i, nvmx_msrs[0], next.args[3], nvmx_msrs[1],
					      next.args[4]);
	}
	kvm_vm_free(vm);
	ksft_finished();

usage:
	printf("usage: %s [-v 1-4] [-s backing source]\n", argv[0]);
	backing_src_help("-s");
	return KSFT_FAIL;
}
