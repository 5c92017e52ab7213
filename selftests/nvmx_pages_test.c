// SPDX-License-Identifier: GPL-2.0-only
/*
 * nvmx_pages_test: an L2 loop with every L1 page that nested VMX maps for
 * vmcs02 and that this emulator can exercise, checking that KVM uses each
 * page's current content (selftests/nvmx_nested.h has the L1 and L2 code).
 *
 * The MSR bitmap, APIC-access page and virtual-APIC page live in a memslot
 * of their own.  For -n iterations, L2 (nvmx_l2_exercise()):
 *   msr_bitmap    asks L1 to rewrite the MSR bitmap with a new intercept
 *                 pattern, then RDMSR and WRMSR each of FS_BASE, GS_BASE,
 *                 KERNEL_GS_BASE (passed through by L0 when L1 passes them:
 *                 the merged vmcs02 bitmap decides) and SYSENTER_CS (always
 *                 intercepted by L0, which consults L1's bitmap): L1 must see
 *                 EXIT_REASON_MSR_READ/MSR_WRITE exactly for the intercepted
 *                 ones, and nothing for the others;
 *   apic_access   reads and writes the APIC-access page at a varying offset:
 *                 each must exit to L1 with EXIT_REASON_APIC_ACCESS and the
 *                 offset and access type in the exit qualification; a read
 *                 of the TPR offset must not exit and must return VTPR;
 *   virtual_apic  L1 first points VIRTUAL_APIC_PAGE_ADDR at the other of two
 *                 pages, then stores VTPR there: L2 must read it through
 *                 CR8, and the CR8 value L2 writes must reach that page
 *                 (TPR shadow, no exit).  A cache that does not follow a
 *                 changed vmcs12 address serves the previous page and fails
 *                 here.
 * The host then checks L1's exit counters against the totals the patterns
 * imply.
 *
 * -e runs L1 with the enlightened VMCS (Hyper-V eVMCS v1) and the
 * enlightened MSR bitmap: L1 marks the bitmap clean in the eVMCS except
 * after it rewrote it, so KVM may skip the merge only when nothing changed.
 * eVMCS v1 has no APIC-access page (KVM does not offer "virtualize APIC
 * accesses" with it), so that mode uses the MSR bitmap and the virtual-APIC
 * page (and the eVMCS page itself), with one virtual-APIC page.
 *
 * Not covered: the posted-interrupt descriptor.  Bochs 2.7 has no posted
 * interrupts, so KVM runs with enable_apicv=N and never offers them to L1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "nvmx_nested.h"

#include "kselftest.h"

NVMX_DEFINE_L1_GUEST_CODE(nvmx_l2_exercise_loop)

static void check_count(const char *what, uint64_t got, uint64_t want)
{
	TEST_ASSERT(got == want, "L1 counted %lu %s exits, the patterns imply %lu",
		    got, what, want);
}

int main(int argc, char *argv[])
{
	uint64_t use = NVMX_USE_MSR_BITMAP | NVMX_USE_APIC_ACCESS | NVMX_USE_VAPIC |
		       NVMX_USE_VAPIC_SWITCH;
	vm_vaddr_t vmx_gva, hv_gva = 0, sh_gva;
	struct nvmx_shared *sh, want;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	bool evmcs = false;
	int opt;

	nvmx_l2_iters = 32;
	while ((opt = getopt(argc, argv, "en:h")) != -1) {
		switch (opt) {
		case 'e':
			evmcs = true;
			break;
		case 'n':
			nvmx_l2_iters = strtoull(optarg, NULL, 0);
			break;
		default:
			printf("usage: %s [-e] [-n iterations]\n", argv[0]);
			exit(KSFT_FAIL);
		}
	}
	TEST_ASSERT(nvmx_l2_iters > 0, "need at least one iteration");

	ksft_print_header();
	TEST_REQUIRE(kvm_cpu_has(X86_FEATURE_VMX));
	if (evmcs) {
		TEST_REQUIRE(kvm_has_cap(KVM_CAP_NESTED_STATE));
		TEST_REQUIRE(kvm_has_cap(KVM_CAP_HYPERV_ENLIGHTENED_VMCS));
		use = NVMX_USE_MSR_BITMAP | NVMX_USE_VAPIC | NVMX_USE_EVMCS;
	}
	ksft_set_plan(evmcs ? 2 : 3);

	vm = vm_create_with_one_vcpu(&vcpu, l1_guest_code);
	if (evmcs)
		hv_gva = nvmx_vcpu_enable_evmcs(vm, vcpu);
	vcpu_alloc_vmx(vm, &vmx_gva);
	nvmx_add_page_slot(vm);
	sh_gva = vm_vaddr_alloc_page(vm);
	sh = addr_gva2hva(vm, sh_gva);
	nvmx_fill_shared(sh, use, NVMX_PAGES_GPA);
	sync_global_to_guest(vm, nvmx_l2_iters);
	vcpu_args_set(vcpu, 3, vmx_gva, hv_gva, sh_gva);

	nvmx_run_to_done(vcpu);

	nvmx_expected_exits(use, nvmx_l2_iters, &want);
	check_count("VMCALL", sh->nr_vmcall, want.nr_vmcall + 1);
	check_count("MSR_READ", sh->nr_msr_read, want.nr_msr_read);
	check_count("MSR_WRITE", sh->nr_msr_write, want.nr_msr_write);
	check_count("APIC_ACCESS", sh->nr_apic_access, want.nr_apic_access);
	ksft_test_result_pass("%smsr_bitmap: %lu patterns, %lu RDMSR and %lu WRMSR exits as intercepted\n",
			      evmcs ? "evmcs " : "", nvmx_l2_iters, sh->nr_msr_read,
			      sh->nr_msr_write);
	if (!evmcs)
		ksft_test_result_pass("apic_access: %lu APIC_ACCESS exits with the right offset and type\n",
				      sh->nr_apic_access);
	ksft_test_result_pass("%svirtual_apic: %lu TPR round trips through CR8\n",
			      evmcs ? "evmcs " : "", nvmx_l2_iters);
	kvm_vm_free(vm);
	ksft_finished();
}
