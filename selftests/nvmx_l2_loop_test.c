// SPDX-License-Identifier: GPL-2.0-only
/*
 * nvmx_l2_loop_test: cost of an L2 round trip (L2 VMCALL -> L0 -> L1 ->
 * VMRESUME -> L2) with the L1 pages that nested VMX maps on every entry.
 *
 * Modes (-m):
 *   none       No MSR bitmap and no APIC pages: the floor.
 *   managed    MSR bitmap, APIC-access page and virtual-APIC page in
 *              ordinary guest memory (host pages with struct page).
 *   thp        The same three pages on tail pages of a transparent huge
 *              page (a THP-backed memslot, GPA 2 MiB-aligned + 0x5000, as
 *              QEMU backs guest RAM by default); skips if no huge page
 *              backs them.
 *   unmanaged  The same three pages in a memslot backed by /dev/mem above
 *              the host's mem= limit, i.e. memory without struct page.
 *              -a selects the host physical address (default 0x40000000);
 *              the test skips unless the range is outside System RAM.
 *
 * -p msr|apic|all (default all) enables only the MSR bitmap, only the two
 * APIC pages, or all three, to split the cost between them.
 *
 * L1 runs -n round trips and measures them with RDTSC.  Every exit must be
 * the VMCALL.  In the page modes each round trip also checks the virtual
 * APIC page in both directions: L1 stores a TPR value in the page, L2 must
 * read it through CR8 (TPR shadow, no exit) and then writes back a second
 * value through CR8, which L1 must find in the page after the exit.  A
 * stale or wrong virtual-APIC mapping therefore fails the test.
 *
 * The host prints one "@@BENCH" line per run for the test-bed harness.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kvm_util.h"
#include "processor.h"
#include "vmx.h"

#include "nvmx_devmem.h"
#include "nvmx_nested.h"
#include "nvmx_stats.h"

#include "kselftest.h"

#define APIC_TPR_OFFSET		0x80
#define NR_L1_PAGES		3
/* The extra memslot of the thp and unmanaged modes (one or the other). */
#define EXTRA_GPA		0xc0000000ul
#define EXTRA_SLOT		10
/* thp: two huge pages, so that one is whole whatever the host alignment. */
#define THP_SLOT_SIZE		(4ul << 20)
#define THP_PAGES_OFFSET	0x5000ul

enum mode { MODE_NONE, MODE_MANAGED, MODE_THP, MODE_UNMANAGED };

/* Which of the pages L1 enables (-p). */
#define PAGES_MSR	0x1ul
#define PAGES_APIC	0x2ul

static const char *const pages_names[] = {
	[PAGES_MSR] = "msr",
	[PAGES_APIC] = "apic",
	[PAGES_MSR | PAGES_APIC] = "all",
};

static const char *const mode_names[] = {
	[MODE_NONE] = "none",
	[MODE_MANAGED] = "managed",
	[MODE_THP] = "thp",
	[MODE_UNMANAGED] = "unmanaged",
};

/* Shared between the host, L1 and L2 (L2 runs on L1's page tables). */
struct loop_args {
	uint64_t iters;
	/* PAGES_* bits; 0 for mode none. */
	uint64_t use_pages;
	uint64_t msr_bitmap_gpa;
	uint64_t apic_access_gpa;
	uint64_t vapic_gpa;
	uint8_t *vapic;		/* L1 virtual address of the vAPIC page. */
};

/* Check the exit, advance L2 past VMCALL, and check the vAPIC round trip. */
static void l1_check_exit(struct loop_args *args, uint64_t i)
{
	volatile uint32_t *vtpr = (volatile uint32_t *)(args->vapic + APIC_TPR_OFFSET);

	GUEST_ASSERT_EQ(vmreadz(VM_EXIT_REASON), EXIT_REASON_VMCALL);
	GUEST_ASSERT(!vmwrite(GUEST_RIP, vmreadz(GUEST_RIP) +
			      vmreadz(VM_EXIT_INSTRUCTION_LEN)));
	if (!(args->use_pages & PAGES_APIC))
		return;

	/* CR8 is VTPR[7:4]. */
	GUEST_ASSERT_EQ(nvmx_l2_seen_cr8, (i % 16));
	GUEST_ASSERT_EQ(*vtpr >> 4, (i + 7) % 16);
	*vtpr = ((i + 1) % 16) << 4;
	nvmx_l2_next_cr8 = (i + 8) % 16;
}

static void l1_guest_code(struct vmx_pages *vmx_pages, struct loop_args *args)
{
#define L2_GUEST_STACK_SIZE 64
	unsigned long l2_guest_stack[L2_GUEST_STACK_SIZE];
	uint64_t i, t0, t1;

	GUEST_ASSERT(prepare_for_vmx_operation(vmx_pages));
	GUEST_ASSERT(load_vmcs(vmx_pages));
	prepare_vmcs(vmx_pages, nvmx_l2_cr8_loop,
		     &l2_guest_stack[L2_GUEST_STACK_SIZE]);

	nvmx_l2_no_cr8 = !(args->use_pages & PAGES_APIC);
	if (args->use_pages & PAGES_MSR)
		nvmx_l1_set_pages(args->msr_bitmap_gpa, 0, 0);
	if (args->use_pages & PAGES_APIC) {
		nvmx_l1_set_pages(0, args->apic_access_gpa, args->vapic_gpa);
		*(volatile uint32_t *)(args->vapic + APIC_TPR_OFFSET) = 0;
		nvmx_l2_next_cr8 = 7;
	}

	/* Warm up: the first entry pays for vmcs02 setup. */
	GUEST_ASSERT(!vmlaunch());
	l1_check_exit(args, 0);

	t0 = rdtsc();
	for (i = 1; i <= args->iters; i++) {
		GUEST_ASSERT(!vmresume());
		l1_check_exit(args, i);
	}
	t1 = rdtsc();
	GUEST_SYNC(t1 - t0);
	GUEST_DONE();
}

static void setup_pages(struct kvm_vm *vm, struct loop_args *args,
			enum mode mode, uint64_t pages, uint64_t phys)
{
	uint64_t gva[NR_L1_PAGES];
	int i;

	if (mode == MODE_NONE)
		return;

	if (mode == MODE_UNMANAGED) {
		nvmx_add_devmem_slot(vm, EXTRA_SLOT, EXTRA_GPA, NR_L1_PAGES, phys);
		for (i = 0; i < NR_L1_PAGES; i++)
			gva[i] = EXTRA_GPA + i * getpagesize();
	} else if (mode == MODE_THP) {
		uint64_t npages = THP_SLOT_SIZE / getpagesize();
		uint8_t *hva;
		long kb;

		__TEST_REQUIRE(thp_configured(), "no transparent hugepages");
		vm_userspace_mem_region_add(vm, VM_MEM_SRC_ANONYMOUS_THP, EXTRA_GPA,
					    EXTRA_SLOT, npages, 0);
		virt_map(vm, EXTRA_GPA, EXTRA_GPA, npages);
		hva = addr_gpa2hva(vm, EXTRA_GPA);
		memset(hva, 0, THP_SLOT_SIZE);
		for (i = 0; i < NR_L1_PAGES; i++)
			gva[i] = EXTRA_GPA + THP_PAGES_OFFSET + i * getpagesize();
		kb = nvmx_smaps_kb(hva, "AnonHugePages:");
		__TEST_REQUIRE(kb >= 2048, "no huge page backs the pages (AnonHugePages %ld kB)",
			       kb);
		printf("# thp: pages at GPA 0x%lx, AnonHugePages %ld kB in the slot\n",
		       gva[0], kb);
	} else {
		for (i = 0; i < NR_L1_PAGES; i++) {
			gva[i] = vm_vaddr_alloc_page(vm);
			memset(addr_gva2hva(vm, gva[i]), 0, getpagesize());
		}
	}

	/* An all-zero MSR bitmap: L1 intercepts no MSR. */
	args->use_pages = pages;
	args->msr_bitmap_gpa = addr_gva2gpa(vm, gva[0]);
	args->apic_access_gpa = addr_gva2gpa(vm, gva[1]);
	args->vapic_gpa = addr_gva2gpa(vm, gva[2]);
	args->vapic = (uint8_t *)gva[2];
}

static void usage(const char *name)
{
	printf("usage: %s [-m none|managed|thp|unmanaged] [-p msr|apic|all] [-n iterations] [-a phys]\n",
	       name);
	exit(KSFT_FAIL);
}

int main(int argc, char *argv[])
{
	uint64_t iters = 1000, phys = 0x40000000ul, ticks = 0, pages = PAGES_MSR | PAGES_APIC;
	enum mode mode = MODE_MANAGED;
	vm_vaddr_t vmx_gva, args_gva;
	struct loop_args *args;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	struct ucall uc;
	bool done = false, stats;
	struct nvmx_stats st;
	char path[PATH_MAX];
	int opt, i;

	while ((opt = getopt(argc, argv, "m:p:n:a:h")) != -1) {
		switch (opt) {
		case 'm':
			i = nvmx_name_index(mode_names, ARRAY_SIZE(mode_names), optarg);
			if (i < 0)
				usage(argv[0]);
			mode = i;
			break;
		case 'p':
			i = nvmx_name_index(pages_names, ARRAY_SIZE(pages_names), optarg);
			if (i <= 0)
				usage(argv[0]);
			pages = i;
			break;
		case 'n':
			iters = strtoull(optarg, NULL, 0);
			break;
		case 'a':
			phys = strtoull(optarg, NULL, 0);
			break;
		default:
			usage(argv[0]);
		}
	}
	TEST_ASSERT(iters > 0, "need at least one iteration");

	ksft_print_header();
	TEST_REQUIRE(kvm_cpu_has(X86_FEATURE_VMX));
	ksft_set_plan(1);

	vm = vm_create_with_one_vcpu(&vcpu, l1_guest_code);
	vcpu_alloc_vmx(vm, &vmx_gva);
	args_gva = vm_vaddr_alloc_page(vm);
	args = addr_gva2hva(vm, args_gva);
	memset(args, 0, sizeof(*args));
	args->iters = iters;
	setup_pages(vm, args, mode, pages, phys);
	vcpu_args_set(vcpu, 2, vmx_gva, args_gva);

	stats = nvmx_stats_find(path, sizeof(path));
	while (!done) {
		vcpu_run(vcpu);
		TEST_ASSERT_KVM_EXIT_REASON(vcpu, KVM_EXIT_IO);
		switch (get_ucall(vcpu, &uc)) {
		case UCALL_ABORT:
			REPORT_GUEST_ASSERT(uc);
			/* NOT REACHED */
		case UCALL_SYNC:
			ticks = uc.args[1];
			break;
		case UCALL_DONE:
			done = true;
			break;
		default:
			TEST_FAIL("unexpected ucall %lu", uc.cmd);
		}
	}
	/* Where the module served the pages from, for the reader of the log. */
	if (stats) {
		nvmx_stats_read(path, &st);
		nvmx_stats_print("after the run", &st);
	}
	kvm_vm_free(vm);

	TEST_ASSERT(ticks > 0, "L1 reported no TSC delta");
	printf("@@BENCH test=nvmx_l2_loop mode=%s%s%s iters=%lu ticks=%lu per_rt=%lu\n",
	       mode_names[mode], pages == (PAGES_MSR | PAGES_APIC) ? "" : "_",
	       pages == (PAGES_MSR | PAGES_APIC) ? "" : pages_names[pages], iters, ticks,
	       ticks / iters);
	ksft_test_result_pass("%s (%s pages): %lu round trips, %lu ticks each\n",
			      mode_names[mode], pages_names[pages], iters, ticks / iters);
	ksft_finished();
}
