// SPDX-License-Identifier: GPL-2.0-only
/*
 * nvmx_l2_switch_test: L1 runs -l N L2s round-robin on one vCPU, each with
 * its own vmcs12, MSR bitmap, APIC-access page and virtual-APIC page, as an
 * L1 hypervisor does that runs several L2 vCPUs on one of its vCPUs.
 *
 * Modes (-m):
 *   managed    the 3 * N pages in ordinary guest memory;
 *   unmanaged  the 3 * N pages in a memslot backed by /dev/mem above the
 *              host's mem= limit (-a, default 0x40000000), memory without
 *              struct page.
 *
 * Every nested VM-entry checks L2's virtual-APIC page in both directions
 * (L1 stores a TPR in the page, L2 must read it through CR8, and the CR8
 * value L2 writes back must be in the page after the exit), so a wrong or
 * stale page for any L2 fails the test.
 *
 *   timed     -r rounds of N switches after a warm-up round; L1 times them
 *             with RDTSC ("@@BENCH test=nvmx_l2_switch").
 *   counters  with the nvmx_gpc statistics file of this VM: over the timed
 *             rounds, N <= CACHE_WAYS (the module's ways per page kind)
 *             must hit on every page of every entry and refresh nothing;
 *             N > CACHE_WAYS must refresh on every switch (the eviction is
 *             least-recently-used, and a round robin over more L2s than
 *             ways always evicts the next L2's pages).  Skipped without
 *             the file (stock KVM, pass-through provider).
 *   inval     managed only: N more rounds; before round j the host zaps
 *             (MADV_DONTNEED) the virtual-APIC page of L2 j, which is not
 *             running, and writes a new TPR into the new page.  L2 j must
 *             read that TPR when it runs next: zero stale reads.
 */
#include <errno.h>
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

#define MAX_L2S			16
/* rust/cache.rs WAYS: caches per vCPU and page kind. */
#define CACHE_WAYS		8
#define PAGES_PER_L2		3
#define APIC_TPR_OFFSET		0x80
#define EXTRA_GPA		0xc0000000ul
#define EXTRA_SLOT		10
#define L2_STACK_WORDS		64
/* The TPR the host writes after a zap; L1's own values stay below it. */
#define HOST_TPR		0xf

enum mode { MODE_MANAGED, MODE_UNMANAGED };

static const char *const mode_names[] = {
	[MODE_MANAGED] = "managed",
	[MODE_UNMANAGED] = "unmanaged",
};

/* GUEST_SYNC2(stage, value). */
enum { STAGE_WARM = 1, STAGE_TIMED, STAGE_INVAL };

/* Shared between the host and L1. */
struct switch_args {
	uint64_t nr_l2s;
	uint64_t rounds;
	uint64_t inval;
	uint64_t vmx[MAX_L2S];		/* GVAs of the struct vmx_pages */
	uint64_t msr_bitmap_gpa[MAX_L2S];
	uint64_t apic_access_gpa[MAX_L2S];
	uint64_t vapic_gpa[MAX_L2S];
	uint64_t vapic[MAX_L2S];		/* L1 virtual addresses */
	/* The host zapped L2 j's page and wrote HOST_TPR into the new one. */
	uint64_t host_wrote[MAX_L2S];
	uint64_t stale;
	uint64_t checks;
};

static unsigned long l2_stacks[MAX_L2S][L2_STACK_WORDS];
static void l1_setup_l2(struct switch_args *args, int i)
{
	struct vmx_pages *vmx = (struct vmx_pages *)args->vmx[i];

	GUEST_ASSERT(load_vmcs(vmx));
	prepare_vmcs(vmx, nvmx_l2_cr8_loop, &l2_stacks[i][L2_STACK_WORDS]);
	nvmx_l1_set_pages(args->msr_bitmap_gpa[i], args->apic_access_gpa[i], args->vapic_gpa[i]);
}

/*
 * One entry of L2 @i (VMLAUNCH the first time) and its checks.  @want is
 * L2 i's next TPR (0..HOST_TPR-1).  Returns false if L2 read a TPR other
 * than the page's (counted when @count).
 */
static bool l1_run_l2(struct switch_args *args, int i, uint64_t *want, bool launch, bool count)
{
	struct vmx_pages *vmx = (struct vmx_pages *)args->vmx[i];
	volatile uint32_t *vtpr = (volatile uint32_t *)(args->vapic[i] + APIC_TPR_OFFSET);
	uint64_t expect = *want, next = (*want + 1) % HOST_TPR;
	bool ok;

	GUEST_ASSERT(!vmptrld(vmx->vmcs_gpa));
	if (args->host_wrote[i]) {
		args->host_wrote[i] = 0;
		expect = HOST_TPR;
	} else {
		*vtpr = expect << 4;
	}
	nvmx_l2_next_cr8 = next;
	GUEST_ASSERT(!(launch ? vmlaunch() : vmresume()));
	GUEST_ASSERT_EQ(vmreadz(VM_EXIT_REASON), EXIT_REASON_VMCALL);
	GUEST_ASSERT(!vmwrite(GUEST_RIP, vmreadz(GUEST_RIP) + vmreadz(VM_EXIT_INSTRUCTION_LEN)));
	ok = nvmx_l2_seen_cr8 == expect && (*vtpr >> 4) == next;
	if (count) {
		args->checks++;
		args->stale += !ok;
	} else {
		GUEST_ASSERT_EQ(nvmx_l2_seen_cr8, expect);
		GUEST_ASSERT_EQ(*vtpr >> 4, next);
	}
	*want = next;
	return ok;
}

static void l1_guest_code(struct switch_args *args)
{
	uint64_t want[MAX_L2S], r, t0, t1;
	int i, n = args->nr_l2s;

	GUEST_ASSERT(prepare_for_vmx_operation((struct vmx_pages *)args->vmx[0]));
	for (i = 0; i < n; i++) {
		l1_setup_l2(args, i);
		want[i] = i % HOST_TPR;
	}
	/* Warm-up: launch every L2, then one round of resumes. */
	for (i = 0; i < n; i++)
		l1_run_l2(args, i, &want[i], true, false);
	for (i = 0; i < n; i++)
		l1_run_l2(args, i, &want[i], false, false);
	GUEST_SYNC2(STAGE_WARM, 0);

	t0 = rdtsc();
	for (r = 0; r < args->rounds; r++)
		for (i = 0; i < n; i++)
			l1_run_l2(args, i, &want[i], false, false);
	t1 = rdtsc();
	GUEST_SYNC2(STAGE_TIMED, t1 - t0);

	for (r = 0; args->inval && r < (uint64_t)n; r++) {
		/* The host zaps L2 r's page here. */
		GUEST_SYNC2(STAGE_INVAL, r);
		for (i = 0; i < n; i++)
			l1_run_l2(args, i, &want[i], false, true);
	}
	GUEST_DONE();
}

static void setup_pages(struct kvm_vm *vm, struct switch_args *args, enum mode mode,
			uint64_t phys)
{
	int n = args->nr_l2s, i, p;
	uint64_t gva[MAX_L2S * PAGES_PER_L2];

	if (mode == MODE_UNMANAGED) {
		/* Zeroed by the helper. */
		nvmx_add_devmem_slot(vm, EXTRA_SLOT, EXTRA_GPA, n * PAGES_PER_L2, phys);
		for (p = 0; p < n * PAGES_PER_L2; p++)
			gva[p] = EXTRA_GPA + p * getpagesize();
	} else {
		for (p = 0; p < n * PAGES_PER_L2; p++) {
			gva[p] = vm_vaddr_alloc_page(vm);
			memset(addr_gva2hva(vm, gva[p]), 0, getpagesize());
		}
	}
	/* All-zero MSR bitmaps: no L2 intercepts an MSR. */
	for (i = 0; i < n; i++) {
		args->msr_bitmap_gpa[i] = addr_gva2gpa(vm, gva[i * PAGES_PER_L2]);
		args->apic_access_gpa[i] = addr_gva2gpa(vm, gva[i * PAGES_PER_L2 + 1]);
		args->vapic_gpa[i] = addr_gva2gpa(vm, gva[i * PAGES_PER_L2 + 2]);
		args->vapic[i] = gva[i * PAGES_PER_L2 + 2];
	}
}

/* Zap L2 @j's virtual-APIC page and write HOST_TPR into the new page. */
static void host_zap(struct kvm_vm *vm, struct switch_args *args, int j)
{
	uint64_t old;

	nvmx_zap_page(addr_gpa2hva(vm, args->vapic_gpa[j]), APIC_TPR_OFFSET, HOST_TPR << 4, &old);
	args->host_wrote[j] = 1;
}

static void usage(const char *name)
{
	printf("usage: %s [-l nr_l2s] [-m managed|unmanaged] [-r rounds] [-a phys]\n", name);
	exit(KSFT_FAIL);
}

int main(int argc, char *argv[])
{
	uint64_t phys = 0x40000000ul, rounds = 0, ticks = 0, switches;
	struct nvmx_stats before = {}, after = {};
	enum mode mode = MODE_MANAGED;
	bool stats = false, done = false;
	struct switch_args *args;
	vm_vaddr_t args_gva, gva;
	struct kvm_vcpu *vcpu;
	char path[PATH_MAX];
	struct kvm_vm *vm;
	struct ucall uc;
	int opt, i, n = 2;

	while ((opt = getopt(argc, argv, "l:m:r:a:h")) != -1) {
		switch (opt) {
		case 'l':
			n = atoi(optarg);
			break;
		case 'm':
			i = nvmx_name_index(mode_names, ARRAY_SIZE(mode_names), optarg);
			if (i < 0)
				usage(argv[0]);
			mode = i;
			break;
		case 'r':
			rounds = strtoull(optarg, NULL, 0);
			break;
		case 'a':
			phys = strtoull(optarg, NULL, 0);
			break;
		default:
			usage(argv[0]);
		}
	}
	TEST_ASSERT(n >= 1 && n <= MAX_L2S, "-l must be 1..%d", MAX_L2S);
	/* About 400 timed switches whatever N. */
	if (!rounds)
		rounds = (400 + n - 1) / n;
	switches = rounds * n;

	ksft_print_header();
	TEST_REQUIRE(kvm_cpu_has(X86_FEATURE_VMX));
	ksft_set_plan(3);

	vm = vm_create_with_one_vcpu(&vcpu, l1_guest_code);
	args_gva = vm_vaddr_alloc_page(vm);
	args = addr_gva2hva(vm, args_gva);
	memset(args, 0, sizeof(*args));
	args->nr_l2s = n;
	args->rounds = rounds;
	args->inval = mode == MODE_MANAGED;
	for (i = 0; i < n; i++) {
		vcpu_alloc_vmx(vm, &gva);
		args->vmx[i] = gva;
	}
	setup_pages(vm, args, mode, phys);
	vcpu_args_set(vcpu, 1, args_gva);
	stats = nvmx_stats_find(path, sizeof(path));

	while (!done) {
		vcpu_run(vcpu);
		TEST_ASSERT_KVM_EXIT_REASON(vcpu, KVM_EXIT_IO);
		switch (get_ucall(vcpu, &uc)) {
		case UCALL_ABORT:
			REPORT_GUEST_ASSERT(uc);
			/* NOT REACHED */
		case UCALL_SYNC:
			if (uc.args[0] == STAGE_WARM && stats)
				nvmx_stats_read(path, &before);
			if (uc.args[0] == STAGE_TIMED) {
				ticks = uc.args[1];
				if (stats)
					nvmx_stats_read(path, &after);
			}
			if (uc.args[0] == STAGE_INVAL)
				host_zap(vm, args, uc.args[1]);
			break;
		case UCALL_DONE:
			done = true;
			break;
		default:
			TEST_FAIL("unexpected ucall %lu", uc.cmd);
		}
	}

	TEST_ASSERT(ticks > 0, "L1 reported no TSC delta");
	printf("@@BENCH test=nvmx_l2_switch mode=%s l2s=%d iters=%lu ticks=%lu per_rt=%lu\n",
	       mode_names[mode], n, switches, ticks, ticks / switches);
	ksft_test_result_pass("%s, %d L2s: %lu switches, %lu ticks each\n", mode_names[mode],
			      n, switches, ticks / switches);

	if (!stats) {
		ksft_test_result_skip("counters: no nvmx_gpc statistics: stock KVM or pass-through provider\n");
	} else {
		uint64_t hits = after.hits - before.hits;
		uint64_t refreshes = after.refreshes - before.refreshes;

		nvmx_stats_print("timed rounds, before", &before);
		nvmx_stats_print("timed rounds, after", &after);
		if (n <= CACHE_WAYS)
			ksft_test_result(refreshes == 0 && hits >= PAGES_PER_L2 * switches,
					 "counters: %d L2s <= %d ways: %lu hits (want >= %lu), %lu refreshes (want 0) over %lu switches\n",
					 n, CACHE_WAYS, hits, PAGES_PER_L2 * switches, refreshes,
					 switches);
		else
			ksft_test_result(refreshes >= switches,
					 "counters: %d L2s > %d ways: %lu refreshes (want >= %lu, one per switch), %lu hits over %lu switches\n",
					 n, CACHE_WAYS, refreshes, switches, hits, switches);
	}

	if (!args->inval)
		ksft_test_result_skip("inval: not for memory without struct page (no MADV_DONTNEED)\n");
	else
		ksft_test_result(args->checks == (uint64_t)n * n && args->stale == 0,
				 "inval: %lu of %lu checks stale after zapping inactive L2s' virtual-APIC pages\n",
				 args->stale, args->checks);
	kvm_vm_free(vm);
	ksft_finished();
}
