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
 *   delete    the slot is deleted and not re-created.  L2 must not go on
 *             using the old pages silently.  Accepted outcomes:
 *               reload    the next KVM_RUN fails with KVM_EXIT_INTERNAL_ERROR
 *                         (KVM_INTERNAL_ERROR_EMULATION) before L2 runs again:
 *                         reloading the pages of an unbacked GPA fails, as a
 *                         nested VM-Enter with an unbacked APIC-access page
 *                         does (vmx_apic_access_test);
 *               deferred  L2 runs on (it only reads CR8; it must read the old
 *                         0x30, the content the deleted slot had) and the
 *                         next nested VM-Enter, when L1 resumes L2, fails with
 *                         that same internal error.  This is stock KVM: the
 *                         pages stay mapped until the next nested VM-Exit.
 *             Anything else (L1 entering L2 successfully, another exit, an
 *             unexpected TPR) fails.
 *
 * Expected on stock KVM 6.12: recreate FAILS (stale virtual-APIC and
 * APIC-access pages: vmcs02 keeps the old host addresses, and KVM's page
 * references keep the old pages alive, until the next nested VM-Exit);
 * move passes; delete ends "deferred".
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

enum mode { MODE_RECREATE, MODE_MOVE, MODE_DELETE };

static const char *const mode_names[] = {
	[MODE_RECREATE] = "recreate",
	[MODE_MOVE] = "move",
	[MODE_DELETE] = "delete",
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

static void run_delete(struct kvm_vm *vm, struct kvm_vcpu *vcpu,
		       struct nvmx_shared *sh)
{
	struct ucall uc;

	sh->l2_flags |= NVMX_L2_NO_APIC_READ;
	vm_mem_region_delete(vm, NVMX_PAGES_SLOT);

	vcpu_run(vcpu);
	if (internal_error(vcpu)) {
		ksft_test_result_pass("delete: reload: KVM_EXIT_INTERNAL_ERROR before L2 ran again\n");
		return;
	}
	TEST_ASSERT_KVM_EXIT_REASON(vcpu, KVM_EXIT_IO);
	switch (get_ucall(vcpu, &uc)) {
	case UCALL_ABORT:
		REPORT_GUEST_ASSERT(uc);
		/* NOT REACHED */
	case UCALL_SYNC:
		break;
	default:
		TEST_FAIL("unexpected ucall %lu after the delete", uc.cmd);
	}
	TEST_ASSERT(uc.args[1] == NVMX_SYNC_RESUMED, "got SYNC %lu after the delete",
		    uc.args[1]);
	TEST_ASSERT(uc.args[2] == NVMX_START_VTPR >> 4,
		    "after the delete L2 read TPR 0x%lx, neither the deleted slot's 0x%x nor an exit",
		    uc.args[2] << 4, NVMX_START_VTPR);

	/* L2 exits to L1, and L1's VMRESUME must fail in KVM. */
	vcpu_run(vcpu);
	TEST_ASSERT(internal_error(vcpu),
		    "the nested VM-Enter after the delete did not fail: exit reason %u (%s)",
		    vcpu->run->exit_reason, exit_reason_str(vcpu->run->exit_reason));
	ksft_test_result_pass("delete: deferred: L2 ran on with the deleted slot's page (TPR 0x%x), the next nested VM-Enter ended in KVM_EXIT_INTERNAL_ERROR\n",
			      NVMX_START_VTPR);
}

static void run_mode(enum mode mode)
{
	struct nvmx_stats st0, st1;
	struct ucall uc, res, next;
	struct nvmx_shared *sh;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	char path[PATH_MAX];
	bool stats;

	sh = nvmx_create_parked_vm(&vm, &vcpu, l1_guest_code, &uc, path, sizeof(path),
				   &stats, &st0);

	switch (mode) {
	case MODE_RECREATE:
		vm_mem_region_delete(vm, NVMX_PAGES_SLOT);
		vm_userspace_mem_region_add(vm, VM_MEM_SRC_ANONYMOUS, NVMX_PAGES_GPA,
					    NVMX_PAGES_SLOT, NVMX_NR_PAGES, 0);
		madvise(nvmx_page_hva(vm, 0), NVMX_NR_PAGES * getpagesize(),
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
	}

	nvmx_run_to_sync(vcpu, NVMX_SYNC_RESUMED, &res);
	nvmx_run_to_sync(vcpu, NVMX_SYNC_NEXT_ENTRY, &next);
	nvmx_run_to_done(vcpu);

	if (!stats) {
		ksft_test_result_skip("%s: no nvmx_gpc statistics: stock KVM or pass-through provider\n",
				      mode_names[mode]);
	} else {
		nvmx_stats_read(path, &st1);
		nvmx_stats_print("after", &st1);
		if (st1.inval_memslot > st0.inval_memslot)
			ksft_test_result_pass("%s: inval_memslot %lu -> %lu\n", mode_names[mode],
					      st0.inval_memslot, st1.inval_memslot);
		else
			ksft_test_result_fail("%s: the cache saw no memslot invalidation (inval_memslot %lu -> %lu)\n",
					      mode_names[mode], st0.inval_memslot,
					      st1.inval_memslot);
	}
	nvmx_report_resumed(mode_names[mode], &res, &next, NVMX_NEW_VTPR);
out:
	kvm_vm_free(vm);
}

int main(int argc, char *argv[])
{
	int opt, m, first = 0, last = MODE_DELETE, plan = 0;

	while ((opt = getopt(argc, argv, "m:h")) != -1) {
		if (opt != 'm')
			goto usage;
		if (!strcmp(optarg, "all"))
			continue;
		for (m = 0; m <= MODE_DELETE; m++)
			if (!strcmp(optarg, mode_names[m]))
				break;
		if (m > MODE_DELETE)
			goto usage;
		first = last = m;
	}

	ksft_print_header();
	TEST_REQUIRE(kvm_cpu_has(X86_FEATURE_VMX));
	for (m = first; m <= last; m++)
		plan += m == MODE_DELETE ? 1 : 4;
	ksft_set_plan(plan);
	for (m = first; m <= last; m++)
		run_mode(m);
	ksft_finished();

usage:
	printf("usage: %s [-m recreate|move|delete|all]\n", argv[0]);
	return KSFT_FAIL;
}
