// SPDX-License-Identifier: GPL-2.0-only
/*
 * nvmx_unmanaged_test: the L2 loop of nvmx_pages_test with the MSR bitmap,
 * APIC-access page and virtual-APIC page in memory without struct page:
 * /dev/mem above the host's mem= limit (-a, default 0x40000000; the test
 * skips if the range is System RAM), where every stock kvm_vcpu_map() is a
 * memremap() and every kvm_vcpu_unmap() a memunmap().
 *
 *   correctness  -n iterations of nvmx_l2_exercise(): the MSR-bitmap
 *                intercepts follow the patterns L1 writes, APIC-access
 *                reads and writes exit with the right qualification, the
 *                TPR goes both ways through CR8 and the page; L1's exit
 *                counters must match the patterns;
 *   memremap     with the nvmx_gpc statistics file of this VM present, its
 *                memremap counter may grow by at most MAX_MEMREMAPS over
 *                the whole run (the pages are mapped once, not once per
 *                round trip); needs at least 200 round trips.  Without the
 *                file (stock KVM, or a pass-through provider) this check is
 *                reported as skipped.
 *   aliases      with -d: after the run (L2 and L1 done, so every page is
 *                unmapped as far as KVM is concerned), the memslot is
 *                deleted and the /dev/mem range munmap()ed; no kernel
 *                mapping of that physical range may be left in
 *                /proc/vmallocinfo (a memremap() alias outliving its VMA
 *                and memslot is a WB alias of memory that may next be
 *                mapped UC, or a device BAR).  Stock KVM memunmap()s at
 *                every nested VM-exit and passes; a cache that keeps the
 *                alias until the vCPU is freed fails.
 *   -e N         before entering L2, L1 makes N VMLAUNCHes that only the
 *                processor refuses (nvmx_l1_early_vmfails()).  With
 *                kvm_intel.nested_early_check=1 KVM maps the pages, runs
 *                its early hardware VM-entry and reports the VM-Fail; a
 *                kernel that does not unmap there leaves one memremap()
 *                alias per failed VMLAUNCH, which -d then finds.  With
 *                -n 0, L1 stops after them and never enters L2 (under
 *                Bochs 2.7 no nested VM-entry passes the early check, see
 *                testbed/plans/earlycheck.plan), and the memremap check is
 *                skipped (no round trips).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "nvmx_nested.h"
#include "nvmx_devmem.h"
#include "nvmx_stats.h"

#include "kselftest.h"

#define MAX_MEMREMAPS		8
#define MIN_ROUND_TRIPS		200

NVMX_DEFINE_L1_GUEST_CODE(nvmx_l2_exercise_loop)

int main(int argc, char *argv[])
{
	uint64_t use = NVMX_USE_MSR_BITMAP | NVMX_USE_APIC_ACCESS | NVMX_USE_VAPIC;
	uint64_t phys = 0x40000000ul, trips;
	vm_vaddr_t vmx_gva, sh_gva;
	struct nvmx_shared *sh, want;
	struct nvmx_stats st0, st1;
	char path[PATH_MAX];
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	bool stats, del = false;
	char alias[512];
	void *hva;
	int opt, n;

	nvmx_l2_iters = 40;
	while ((opt = getopt(argc, argv, "a:e:n:dh")) != -1) {
		switch (opt) {
		case 'a':
			phys = strtoull(optarg, NULL, 0);
			break;
		case 'd':
			del = true;
			break;
		case 'e':
			nvmx_early_vmfails = strtoull(optarg, NULL, 0);
			break;
		case 'n':
			nvmx_l2_iters = strtoull(optarg, NULL, 0);
			break;
		default:
			printf("usage: %s [-a phys] [-n iterations] [-e vmfails] [-d]\n", argv[0]);
			exit(KSFT_FAIL);
		}
	}
	TEST_ASSERT(nvmx_l2_iters > 0 || nvmx_early_vmfails,
		    "need at least one iteration, or -e");
	nvmx_early_vmfails_only = !nvmx_l2_iters;

	ksft_print_header();
	TEST_REQUIRE(kvm_cpu_has(X86_FEATURE_VMX));

	vm = vm_create_with_one_vcpu(&vcpu, l1_guest_code);
	vcpu_alloc_vmx(vm, &vmx_gva);
	hva = nvmx_add_devmem_slot(vm, NVMX_PAGES_SLOT, NVMX_PAGES_GPA, NVMX_SLOT_PAGES, phys);
	ksft_set_plan(del ? 3 : 2);
	sh_gva = vm_vaddr_alloc_page(vm);
	sh = addr_gva2hva(vm, sh_gva);
	nvmx_fill_shared(sh, use, NVMX_PAGES_GPA);
	sync_global_to_guest(vm, nvmx_l2_iters);
	sync_global_to_guest(vm, nvmx_early_vmfails);
	sync_global_to_guest(vm, nvmx_early_vmfails_only);
	if (nvmx_early_vmfails)
		printf("# %lu VMLAUNCHes fail first; nested_early_check %s\n",
		       nvmx_early_vmfails, nvmx_early_check_on() ? "on" : "off");
	vcpu_args_set(vcpu, 3, vmx_gva, 0, sh_gva);

	stats = nvmx_stats_find(path, sizeof(path));
	if (stats)
		nvmx_stats_read(path, &st0);

	nvmx_run_to_done(vcpu);

	if (nvmx_early_vmfails_only) {
		/* L1 asserted every VM-Fail and its error before GUEST_DONE. */
		ksft_test_result_pass("early: %lu VMLAUNCHes VM-Failed, L2 never entered\n",
				      nvmx_early_vmfails);
		trips = 0;
		goto aliases;
	}
	nvmx_expected_exits(use, nvmx_l2_iters, &want);
	TEST_ASSERT(sh->nr_vmcall == want.nr_vmcall + 1 &&
		    sh->nr_msr_read == want.nr_msr_read &&
		    sh->nr_msr_write == want.nr_msr_write &&
		    sh->nr_apic_access == want.nr_apic_access,
		    "L1 exit counts VMCALL %lu MSR_READ %lu MSR_WRITE %lu APIC_ACCESS %lu, patterns imply %lu %lu %lu %lu",
		    sh->nr_vmcall, sh->nr_msr_read, sh->nr_msr_write, sh->nr_apic_access,
		    want.nr_vmcall + 1, want.nr_msr_read, want.nr_msr_write,
		    want.nr_apic_access);
	trips = sh->nr_vmcall + sh->nr_msr_read + sh->nr_msr_write + sh->nr_apic_access;
	ksft_test_result_pass("unmanaged: %lu iterations, %lu L2 round trips with the pages at 0x%lx\n",
			      nvmx_l2_iters, trips, phys);

aliases:
	if (del) {
		vm_set_user_memory_region(vm, NVMX_PAGES_SLOT, 0, NVMX_PAGES_GPA, 0, NULL);
		TEST_ASSERT(!munmap(hva, NVMX_SLOT_PAGES * getpagesize()), "munmap: %s",
			    strerror(errno));
		/* A deferred teardown may run from a work item: let it. */
		usleep(100000);
		n = nvmx_kernel_aliases(phys, NVMX_SLOT_PAGES * getpagesize(), alias,
					sizeof(alias));
		if (!n)
			ksft_test_result_pass("aliases: no kernel mapping of 0x%lx left after the memslot and the mapping are gone\n",
					      phys);
		else
			ksft_test_result_fail("aliases: %d kernel mapping(s) of 0x%lx outlive the memslot and the VMA, e.g. %s",
					      n, phys, alias);
	}

	if (!stats) {
		ksft_test_result_skip("memremap: no nvmx_gpc statistics: stock KVM or pass-through provider\n");
	} else if (!trips) {
		ksft_test_result_skip("memremap: no L2 round trips\n");
	} else {
		nvmx_stats_read(path, &st1);
		nvmx_stats_print("after", &st1);
		TEST_ASSERT(trips >= MIN_ROUND_TRIPS,
			    "only %lu round trips: run at least %u for the memremap check",
			    trips, MIN_ROUND_TRIPS);
		if (st1.memremap - st0.memremap <= MAX_MEMREMAPS)
			ksft_test_result_pass("memremap: %lu over %lu round trips\n",
					      st1.memremap - st0.memremap, trips);
		else
			ksft_test_result_fail("memremap: %lu memremap() calls over %lu round trips (at most %u allowed): the cache remaps per round trip\n",
					      st1.memremap - st0.memremap, trips, MAX_MEMREMAPS);
	}
	kvm_vm_free(vm);
	ksft_finished();
}
