// SPDX-License-Identifier: GPL-2.0-only
/*
 * nvmx_vmxoff_test: once the vCPU has left L2, invalidations of the pages
 * L2 used must not kick the vCPU any more.
 *
 * L1 enters L2 once with TPR shadow (virtual-APIC page, VTPR 0x50 written
 * by the host) and the APIC-access page; L2 reads CR8 (it must be 5: the
 * vAPIC page was really used) and does VMCALL.  L1 never resumes L2; by -m
 * it then
 *   vmxoff  executes VMXOFF (KVM frees the nested state), or
 *   l1      stays in VMX root operation with vmcs12 current;
 * and reports to the host with GUEST_SYNC in an endless loop, one sync per
 * KVM_RUN.  Between two KVM_RUNs the host does one mprotect(PROT_NONE) /
 * mprotect(PROT_READ | PROT_WRITE) cycle on the virtual-APIC page, -n
 * times (default 200).  With the nvmx_gpc statistics, neither "reloads"
 * nor "vcpu0_kicks" may grow during the cycles: no cache of this vCPU is in
 * use by the hardware any more.
 *
 * Expected on stock KVM: the CR8 check passes, the statistics checks SKIP
 * (no statistics).  The old nvmx_gpc module (4e10b0e) never clears its
 * caches' claim on the page after the vCPU left L2, so every cycle kicks the
 * vCPU: "reloads" grows by about 2 per cycle (FAIL), and it has no
 * vcpu<i>_kicks lines (SKIP).
 *
 * -m earlyfail needs kvm_intel.nested_early_check=1 (it skips otherwise):
 * L1 never enters L2.  Its VMLAUNCHes fail in KVM's early hardware check
 * (nvmx_l1_early_vmfails(): a TPR threshold above VTPR), which runs after
 * the pages were mapped for vmcs02, and L1 stays in VMX root operation.
 * The first check is that every VMLAUNCH VM-Failed; the mprotect cycles
 * and the statistics checks follow as above.  A kernel that leaves the
 * pages mapped on that VM-Fail leaves the cache in use by the hardware:
 * the cycles kick the vCPU and reload (FAIL).
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

enum mode { MODE_VMXOFF, MODE_L1, MODE_EARLYFAIL, NR_MODES };

static const char *const mode_names[] = {
	[MODE_VMXOFF] = "vmxoff",
	[MODE_L1] = "l1",
	[MODE_EARLYFAIL] = "earlyfail",
};

#define EARLY_VMFAILS	3

#define START_VTPR	0x50
#define SYNC_L1		20

/* Set by the host: L1 executes VMXOFF after L2's exit. */
static uint64_t l1_do_vmxoff;
/* CR8 as L2 read it (L1 and L2 share the page tables). */
static uint64_t l2_cr8;

static void l2_guest_code(void)
{
	l2_cr8 = nvmx_l2_read_cr8();
	/* L1 never resumes L2, so no register needs to survive this. */
	__asm__ __volatile__("vmcall" : : : "memory");
	GUEST_FAIL("L2 resumed");
}

static void l1_guest_code(struct vmx_pages *vmx, struct hyperv_test_pages *hv,
			  struct nvmx_shared *sh)
{
	unsigned long l2_stack[NVMX_L2_STACK_SIZE];
	uint32_t reason;
	uint64_t i;

	nvmx_l1_prepare(vmx, l2_guest_code, &l2_stack[NVMX_L2_STACK_SIZE]);
	if (nvmx_early_vmfails) {
		nvmx_l1_early_vmfails();
		for (i = 0;; i++)
			GUEST_SYNC_ARGS(SYNC_L1, i, nvmx_early_vmfails, 0, 0);
	}
	GUEST_ASSERT(!vmlaunch());
	reason = vmreadz(VM_EXIT_REASON);
	__GUEST_ASSERT(reason == EXIT_REASON_VMCALL,
		       "L2 exited to L1 with reason 0x%x, qualification 0x%lx, want VMCALL",
		       reason, vmreadz(EXIT_QUALIFICATION));
	if (l1_do_vmxoff)
		vmxoff();
	for (i = 0;; i++)
		GUEST_SYNC_ARGS(SYNC_L1, i, l2_cr8, 0, 0);
}

static void run_to_l1_sync(struct kvm_vcpu *vcpu, uint64_t i, struct ucall *uc)
{
	nvmx_run_to_sync(vcpu, SYNC_L1, uc);
	TEST_ASSERT(uc->args[2] == i, "L1 sync %lu, expected %lu", uc->args[2], i);
}

static void run(enum mode mode, uint64_t cycles)
{
	uint64_t k0 = 0, k1 = 0, i;
	struct nvmx_stats st0, st1;
	struct kvm_vcpu *vcpu;
	char path[PATH_MAX];
	struct kvm_vm *vm;
	bool stats, kicks;
	struct ucall uc;
	void *vapic;

	nvmx_create_vm(&vm, &vcpu, l1_guest_code, NVMX_USE_APIC_ACCESS | NVMX_USE_VAPIC);
	l1_do_vmxoff = mode == MODE_VMXOFF;
	sync_global_to_guest(vm, l1_do_vmxoff);
	nvmx_early_vmfails = mode == MODE_EARLYFAIL ? EARLY_VMFAILS : 0;
	sync_global_to_guest(vm, nvmx_early_vmfails);
	*nvmx_vtpr_hva(vm) = START_VTPR;
	vapic = nvmx_page_hva(vm, NVMX_PG_VAPIC);
	stats = nvmx_stats_find(path, sizeof(path));

	run_to_l1_sync(vcpu, 0, &uc);
	if (mode == MODE_EARLYFAIL)
		/* L1 asserted each VM-Fail and its error; it got here. */
		ksft_test_result(uc.args[3] == EARLY_VMFAILS,
				 "%s: %lu VMLAUNCHes VM-Failed in the early hardware check\n",
				 mode_names[mode], uc.args[3]);
	else if (uc.args[3] == START_VTPR >> 4)
		ksft_test_result_pass("%s: L2 ran with the virtual-APIC page (CR8 %lu)\n",
				      mode_names[mode], uc.args[3]);
	else
		ksft_test_result_fail("%s: L2 read CR8 %lu, the host wrote VTPR 0x%x: the virtual-APIC page was not in use\n",
				      mode_names[mode], uc.args[3], START_VTPR);

	kicks = false;
	if (stats) {
		nvmx_stats_read(path, &st0);
		nvmx_stats_print("after L2", &st0);
		kicks = nvmx_stats_get_key(path, "vcpu0_kicks", &k0);
	}
	for (i = 1; i <= cycles; i++) {
		TEST_ASSERT(!mprotect(vapic, getpagesize(), PROT_NONE), "mprotect: %s",
			    strerror(errno));
		TEST_ASSERT(!mprotect(vapic, getpagesize(), PROT_READ | PROT_WRITE),
			    "mprotect: %s", strerror(errno));
		run_to_l1_sync(vcpu, i, &uc);
	}

	if (!stats) {
		ksft_test_result_skip("%s: reloads: no nvmx_gpc statistics: stock KVM or pass-through provider\n",
				      mode_names[mode]);
		ksft_test_result_skip("%s: vcpu0_kicks: no nvmx_gpc statistics\n",
				      mode_names[mode]);
		goto out;
	}
	nvmx_stats_read(path, &st1);
	nvmx_stats_print("after the cycles", &st1);
	printf("# %lu mprotect cycles: inval_notifier %lu -> %lu, reloads %lu -> %lu\n",
	       cycles, st0.inval_notifier, st1.inval_notifier, st0.reloads, st1.reloads);
	if (st1.reloads == st0.reloads)
		ksft_test_result_pass("%s: reloads stayed at %lu over %lu mprotect cycles\n",
				      mode_names[mode], st0.reloads, cycles);
	else
		ksft_test_result_fail("%s: reloads grew by %lu over %lu mprotect cycles after the vCPU left L2 (claim left set)\n",
				      mode_names[mode], st1.reloads - st0.reloads, cycles);

	if (!kicks) {
		ksft_test_result_skip("%s: no vcpu0_kicks statistics line (module without per-vCPU counters)\n",
				      mode_names[mode]);
	} else {
		TEST_ASSERT(nvmx_stats_get_key(path, "vcpu0_kicks", &k1), "vcpu0_kicks vanished");
		if (k1 == k0)
			ksft_test_result_pass("%s: vcpu0_kicks stayed at %lu\n", mode_names[mode],
					      k0);
		else
			ksft_test_result_fail("%s: vcpu0_kicks grew by %lu over %lu mprotect cycles after the vCPU left L2\n",
					      mode_names[mode], k1 - k0, cycles);
	}
out:
	kvm_vm_free(vm);
}

int main(int argc, char *argv[])
{
	int opt, m, first = 0, last = MODE_L1;
	uint64_t cycles = 200;

	while ((opt = getopt(argc, argv, "m:n:h")) != -1) {
		switch (opt) {
		case 'm':
			if (!strcmp(optarg, "all"))
				break;
			for (m = 0; m < NR_MODES; m++)
				if (!strcmp(optarg, mode_names[m]))
					break;
			if (m == NR_MODES)
				goto usage;
			first = last = m;
			break;
		case 'n':
			cycles = strtoull(optarg, NULL, 0);
			break;
		default:
			goto usage;
		}
	}

	ksft_print_header();
	TEST_REQUIRE(kvm_cpu_has(X86_FEATURE_VMX));
	if (last == MODE_EARLYFAIL)
		TEST_REQUIRE(nvmx_early_check_on());
	else if (last == MODE_L1 && first == 0 && nvmx_early_check_on())
		last = MODE_EARLYFAIL;	/* "all" */
	ksft_set_plan(3 * (last - first + 1));
	for (m = first; m <= last; m++)
		run(m, cycles);
	ksft_finished();

usage:
	printf("usage: %s [-m vmxoff|l1|earlyfail|all] [-n mprotect cycles]\n", argv[0]);
	return KSFT_FAIL;
}
