// SPDX-License-Identifier: GPL-2.0-only
/*
 * nvmx_memslot_test: memslot changes of the slot that holds the L1 pages
 * vmcs02 points at, made while the vCPU is in L2.
 *
 * The MSR bitmap, APIC-access page and virtual-APIC page live in a memslot
 * of their own (selftests/nvmx_nested.h).  L2 checks the start state (VTPR
 * 0x30, RDMSR of FS_BASE intercepted, GS_BASE not) and exits straight to
 * userspace with GUEST_SYNC, so the vCPU stays in L2 with the pages mapped.
 * Then, by -m:
 *   recreate  the slot is deleted and created again at the same GPA with new
 *             anonymous memory holding new content (a bitmap intercepting
 *             GS_BASE instead of FS_BASE, VTPR 0x90).  L2 resumes and,
 *             without an exit to L1, must read CR8 9 and exit to L1 on a
 *             read of the APIC-access page; at the next nested VM-Enter
 *             GS_BASE must be intercepted and FS_BASE not.  With nvmx_gpc
 *             statistics present, inval_memslot must have grown.
 *   move      the slot is moved to another GPA and back (KVM_MR_MOVE twice,
 *             same memory), then the host writes the new content in place;
 *             L2 must see it exactly as in recreate.
 *   delete    the slot is deleted and not re-created.  L2 must run on as
 *             it does on stock KVM, which keeps the old pages mapped until
 *             the next nested VM-Exit: it reads CR8 (the deleted slot's 0x30,
 *             or 0 from a page that stands in for the gone one) and exits
 *             to L1, and the next nested VM-Enter, when L1 resumes L2, fails
 *             with KVM_EXIT_INTERNAL_ERROR (KVM_INTERNAL_ERROR_EMULATION), as
 *             a nested VM-Enter with an unbacked APIC-access page does
 *             (vmx_apic_access_test).  An internal error before L2 ran again
 *             (the old reload, F8 in the 2026-12 review) fails: a VMM that
 *             deletes and re-creates a slot in two ioctls while vCPUs run
 *             would see its VM die.
 *   delete_vapic
 *             the same with only the MSR bitmap and the virtual-APIC page in
 *             use (no APIC-access page).  L2 must run on and report its next
 *             SYNC.  The old reload wrote an illegal virtual-APIC address
 *             into vmcs02, so the next VM-Enter failed and L1 saw its
 *             VMRESUME of long ago fail (VM-Fail), with L2's registers rolled
 *             back to that VMRESUME: that fails.
 *
 * Expected on stock KVM 6.12: recreate FAILS (stale virtual-APIC and
 * APIC-access pages: vmcs02 keeps the old host addresses, and KVM's page
 * references keep the old pages alive, until the next nested VM-Exit);
 * move, delete and delete_vapic pass.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "nvmx_nested.h"
#include "nvmx_stats.h"

#include "kselftest.h"

enum mode { MODE_RECREATE, MODE_MOVE, MODE_DELETE, MODE_DELETE_VAPIC };

static const char *const mode_names[] = {
	[MODE_RECREATE] = "recreate",
	[MODE_MOVE] = "move",
	[MODE_DELETE] = "delete",
	[MODE_DELETE_VAPIC] = "delete_vapic",
};

#define MOVED_GPA	0xd0000000ul

static void l2_guest_code(void)
{
	nvmx_l2_parked_sequence();
	nvmx_l2_done();
}

NVMX_DEFINE_L1_GUEST_CODE(l2_guest_code)

static void new_pages(struct kvm_vm *vm)
{
	nvmx_write_new_pages(nvmx_page_hva(vm, NVMX_PG_MSR_BITMAP),
			     nvmx_page_hva(vm, NVMX_PG_VAPIC));
}

/* The first KVM_RUN after the delete; true if it was the internal error. */
static bool internal_error(struct kvm_vcpu *vcpu)
{
	if (vcpu->run->exit_reason != KVM_EXIT_INTERNAL_ERROR)
		return false;
	TEST_ASSERT(vcpu->run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION,
		    "internal error with suberror %u, expected KVM_INTERNAL_ERROR_EMULATION",
		    vcpu->run->internal.suberror);
	return true;
}

/*
 * After the delete: L2 must run on to SYNC_RESUMED, reading the deleted
 * slot's TPR or 0.  Returns false (after reporting a failure) if it did not.
 */
static bool l2_ran_on(struct kvm_vcpu *vcpu, const char *what)
{
	struct ucall uc;

	vcpu_run(vcpu);
	if (internal_error(vcpu)) {
		ksft_test_result_fail("%s: KVM_EXIT_INTERNAL_ERROR before L2 ran again (stock KVM runs L2 on until the next nested VM-Exit)\n",
				      what);
		return false;
	}
	TEST_ASSERT_KVM_EXIT_REASON(vcpu, KVM_EXIT_IO);
	switch (get_ucall(vcpu, &uc)) {
	case UCALL_ABORT:
		ksft_test_result_fail("%s: L1 failed after L2 had run on (late VM-Fail of a VMRESUME that completed?): %s\n",
				      what, (const char *)uc.buffer);
		return false;
	case UCALL_SYNC:
		break;
	default:
		TEST_FAIL("unexpected ucall %lu after the delete", uc.cmd);
	}
	TEST_ASSERT(uc.args[1] == NVMX_SYNC_RESUMED, "got SYNC %lu after the delete",
		    uc.args[1]);
	TEST_ASSERT(uc.args[2] == NVMX_START_VTPR >> 4 || uc.args[2] == 0,
		    "after the delete L2 read TPR 0x%lx, neither the deleted slot's 0x%x nor 0",
		    uc.args[2] << 4, NVMX_START_VTPR);
	return true;
}

static void run_delete(struct kvm_vm *vm, struct kvm_vcpu *vcpu,
		       struct nvmx_shared *sh)
{
	sh->l2_flags |= NVMX_L2_NO_APIC_READ;
	vm_mem_region_delete(vm, NVMX_PAGES_SLOT);

	if (!l2_ran_on(vcpu, "delete"))
		return;

	/* L2 exits to L1, and L1's VMRESUME must fail in KVM. */
	vcpu_run(vcpu);
	TEST_ASSERT(internal_error(vcpu),
		    "the nested VM-Enter after the delete did not fail: exit reason %u (%s)",
		    vcpu->run->exit_reason, exit_reason_str(vcpu->run->exit_reason));
	ksft_test_result_pass("delete: L2 ran on, the next nested VM-Enter ended in KVM_EXIT_INTERNAL_ERROR\n");
}

/* Only the MSR bitmap and the virtual-APIC page; delete their slot mid-L2. */
static void run_delete_vapic(void)
{
	struct nvmx_shared *sh;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	struct ucall uc;

	sh = nvmx_create_vm(&vm, &vcpu, l1_guest_code, NVMX_USE_MSR_BITMAP | NVMX_USE_VAPIC);
	nvmx_write_start_pages(nvmx_page_hva(vm, NVMX_PG_MSR_BITMAP),
			       nvmx_page_hva(vm, NVMX_PG_VAPIC));
	nvmx_run_to_sync(vcpu, NVMX_SYNC_PARKED, &uc);
	nvmx_check_parked(&uc);

	sh->l2_flags |= NVMX_L2_NO_APIC_READ;
	vm_mem_region_delete(vm, NVMX_PAGES_SLOT);
	if (l2_ran_on(vcpu, "delete_vapic"))
		ksft_test_result_pass("delete_vapic: L2 ran on after its virtual-APIC page lost its memslot\n");
	kvm_vm_free(vm);
}

static void run_mode(enum mode mode)
{
	struct nvmx_stats st0;
	struct ucall uc, res, next;
	struct nvmx_shared *sh;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	char path[PATH_MAX];
	bool stats;

	if (mode == MODE_DELETE_VAPIC) {
		run_delete_vapic();
		return;
	}
	sh = nvmx_create_parked_vm(&vm, &vcpu, l1_guest_code, &uc, path, sizeof(path),
				   &stats, &st0);

	switch (mode) {
	case MODE_RECREATE:
		vm_mem_region_delete(vm, NVMX_PAGES_SLOT);
		vm_userspace_mem_region_add(vm, VM_MEM_SRC_ANONYMOUS, NVMX_PAGES_GPA,
					    NVMX_PAGES_SLOT, NVMX_SLOT_PAGES, 0);
		madvise(nvmx_page_hva(vm, 0), NVMX_SLOT_PAGES * getpagesize(),
			MADV_NOHUGEPAGE);
		new_pages(vm);
		break;
	case MODE_MOVE:
		vm_mem_region_move(vm, NVMX_PAGES_SLOT, MOVED_GPA);
		vm_mem_region_move(vm, NVMX_PAGES_SLOT, NVMX_PAGES_GPA);
		new_pages(vm);
		break;
	case MODE_DELETE:
		run_delete(vm, vcpu, sh);
		goto out;
	default:
		TEST_FAIL("bad mode");
	}

	nvmx_run_to_sync(vcpu, NVMX_SYNC_RESUMED, &res);
	nvmx_run_to_sync(vcpu, NVMX_SYNC_NEXT_ENTRY, &next);
	nvmx_run_to_done(vcpu);

	nvmx_report_inval(mode_names[mode], stats, path, &st0, true);
	nvmx_report_resumed(mode_names[mode], &res, &next, NVMX_NEW_VTPR);
out:
	kvm_vm_free(vm);
}

int main(int argc, char *argv[])
{
	int opt, m, first = 0, last = MODE_DELETE_VAPIC, plan = 0;

	while ((opt = getopt(argc, argv, "m:h")) != -1) {
		if (opt != 'm')
			goto usage;
		if (!strcmp(optarg, "all"))
			continue;
		for (m = 0; m <= MODE_DELETE_VAPIC; m++)
			if (!strcmp(optarg, mode_names[m]))
				break;
		if (m > MODE_DELETE_VAPIC)
			goto usage;
		first = last = m;
	}

	ksft_print_header();
	TEST_REQUIRE(kvm_cpu_has(X86_FEATURE_VMX));
	for (m = first; m <= last; m++)
		plan += m >= MODE_DELETE ? 1 : 4;
	ksft_set_plan(plan);
	for (m = first; m <= last; m++)
		run_mode(m);
	ksft_finished();

usage:
	printf("usage: %s [-m recreate|move|delete|delete_vapic|all]\n", argv[0]);
	return KSFT_FAIL;
}
