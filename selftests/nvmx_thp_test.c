// SPDX-License-Identifier: GPL-2.0-only
/*
 * nvmx_thp_test: the L1 pages nested VMX maps for vmcs02 on huge pages.
 *
 * The MSR bitmap, APIC-access page and virtual-APIC page live in a memslot
 * backed by THP (-s thp) or hugetlb (-s hugetlb) memory, at GPAs that are
 * not 2 MiB aligned (NVMX_HUGE_OFFSET into the slot), i.e. on tail pages of
 * a huge page.  The test first proves that: /proc/kpageflags must show
 * each page as a tail page of a THP or hugetlb folio (or, without
 * kpageflags, /proc/self/smaps must count huge pages in the VMA).  For
 * hugetlb it reserves the huge pages itself (/proc/sys/vm/nr_hugepages) and
 * SKIPs if it cannot get them; for THP it SKIPs if no huge page forms.
 * Modes (-m):
 *   roundtrip  L1 runs -n L2 round trips (L2 VMCALL, L1 VMRESUME) with all
 *              three pages in use; every 16th round trip L2 checks that the
 *              MSR bitmap intercepts RDMSR of FS_BASE and not GS_BASE, and
 *              that CR8 is the VTPR L1 stored.  With the nvmx_gpc statistics
 *              present, over the loop refreshes may grow by at most 8 and
 *              hits must grow by at least n - 8 (review finding F6: a fast
 *              path that takes its page reference with get_page_unless_zero()
 *              always fails on a tail page and refreshes on every nested
 *              VM-Enter).  Without statistics these two checks are SKIPPED.
 *   split      (THP only) with L2 parked (nvmx_l2_parked_sequence()), the
 *              host MADV_DONTNEEDs one 4 KiB page elsewhere in the huge page,
 *              which splits the huge mapping (smaps must show it), writes a
 *              new MSR bitmap and VTPR 0x90 in place and resumes L2: it must
 *              read CR8 9 and exit on an APIC-access read before any exit to
 *              L1, and use the new bitmap at the next nested VM-Enter.
 *   migrate    the same, but the virtual-APIC page is soft-offlined
 *              (MADV_SOFT_OFFLINE: a THP is split and the 4 KiB page
 *              migrated, a hugetlb page migrates as a whole) and must land on
 *              a new PFN before the new content is written.
 *   collapse   (THP only) the pages start on 4 KiB pages; with L2 parked the
 *              host MADV_COLLAPSEs the 2 MiB range, which copies them into a
 *              new huge page; then as in split.
 *   evmcs      L1 uses the enlightened VMCS (Hyper-V eVMCS v1) and runs two
 *              L2s round-robin, -n rounds, each with its own eVMCS on a tail
 *              page of the huge page and no other page: every switch unmaps
 *              one eVMCS and maps the other (KVM keeps the current eVMCS
 *              mapped across L2 runs, where it sleeps, so the cache gives
 *              KVM a page reference on each hit).  The statistics checks of
 *              roundtrip apply to the switches: a hit that takes its
 *              reference with get_page_unless_zero() fails on every switch
 *              (F6 again, on the one page kind that still takes a reference
 *              on a hit).  SKIPs without KVM_CAP_HYPERV_ENLIGHTENED_VMCS.
 * With statistics, split, migrate and collapse also require inval_notifier
 * to have grown.
 *
 * Expected on stock KVM 6.12: roundtrip and evmcs pass, their statistics
 * checks SKIP; split passes (the pages stay where they are); migrate and
 * collapse FAIL:
 * KVM holds a reference to the virtual-APIC and APIC-access pages while L2
 * runs, so they cannot be migrated or collapsed.  The nvmx_gpc module at
 * 4e10b0e fails roundtrip's refreshes check (one refresh per round trip).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "nvmx_nested.h"
#include "nvmx_stats.h"

#include "kselftest.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE		25
#endif

#define KPF_COMPOUND_TAIL	16
#define KPF_HUGE		17
#define KPF_THP			22

#define MAX_REFRESHES		8
#define SPLIT_OFFSET		0x100000ul

enum mode { MODE_ROUNDTRIP, MODE_SPLIT, MODE_MIGRATE, MODE_COLLAPSE, MODE_EVMCS, NR_MODES };

static const char *const mode_names[] = {
	[MODE_ROUNDTRIP] = "roundtrip",
	[MODE_SPLIT] = "split",
	[MODE_MIGRATE] = "migrate",
	[MODE_COLLAPSE] = "collapse",
	[MODE_EVMCS] = "evmcs",
};

/* -m evmcs: the two L2s' eVMCSs, the pages after the block. */
#define NR_EVMCS		2
#define EVMCS_PAGE(i)		(NVMX_SLOT_PAGES + (i))
#define NR_PAGE_NAMES		EVMCS_PAGE(NR_EVMCS)

static const char *const page_names[NR_PAGE_NAMES] = {
	[NVMX_PG_MSR_BITMAP] = "MSR bitmap",
	[NVMX_PG_APIC_ACCESS] = "APIC-access page",
	[NVMX_PG_VAPIC] = "virtual-APIC page",
	[NVMX_PG_VAPIC_ALT] = "second virtual-APIC page",
	[EVMCS_PAGE(0)] = "eVMCS of L2 0",
	[EVMCS_PAGE(1)] = "eVMCS of L2 1",
};

enum { SYNC_LOOP_START = 20, SYNC_LOOP_END };

/* Zero: the parked sequence; else the number of round trips. */
static uint64_t l2_trips;

static void l2_guest_code(void)
{
	uint64_t i, cr8;

	if (!l2_trips) {
		nvmx_l2_parked_sequence();
		nvmx_l2_done();
	}

	nvmx_l2_call(NVMX_CMD_MSR_BITMAP, NVMX_START_PATTERN);
	nvmx_l2_call(NVMX_CMD_SET_VTPR, NVMX_START_VTPR);
	GUEST_SYNC(SYNC_LOOP_START);
	for (i = 0; i < l2_trips; i++) {
		nvmx_l2_call(NVMX_CMD_NOP, 0);
		if (i % 16)
			continue;
		__GUEST_ASSERT(nvmx_l2_rdmsr_exits(nvmx_msrs[0]),
			       "round trip %lu: RDMSR 0x%x did not exit, the bitmap intercepts it",
			       i, nvmx_msrs[0]);
		__GUEST_ASSERT(!nvmx_l2_rdmsr_exits(nvmx_msrs[1]),
			       "round trip %lu: RDMSR 0x%x exited, the bitmap passes it through",
			       i, nvmx_msrs[1]);
		cr8 = nvmx_l2_read_cr8();
		__GUEST_ASSERT(cr8 == NVMX_START_VTPR >> 4,
			       "round trip %lu: L2 read CR8 %lu, L1 stored VTPR 0x%x",
			       i, cr8, NVMX_START_VTPR);
	}
	GUEST_SYNC(SYNC_LOOP_END);
	nvmx_l2_done();
}

NVMX_DEFINE_L1_GUEST_CODE(l2_guest_code)

/* -m evmcs: GPAs (mapped 1:1 for L1) of the eVMCSs; L2s' stacks. */
static uint64_t evmcs_gpa[NR_EVMCS];
static unsigned long evmcs_l2_stacks[NR_EVMCS][NVMX_L2_STACK_SIZE];

static void evmcs_l2_code(void)
{
	for (;;)
		vmcall();
}

/* L1, -m evmcs: enter L2 @i (its eVMCS made current) and take its VMCALL. */
static void evmcs_l1_run(struct nvmx_shared *sh, int i, bool launch)
{
	GUEST_ASSERT(!evmcs_vmptrld(evmcs_gpa[i], (void *)evmcs_gpa[i]));
	GUEST_ASSERT(!(launch ? vmlaunch() : vmresume()));
	__GUEST_ASSERT(vmreadz(VM_EXIT_REASON) == EXIT_REASON_VMCALL,
		       "L2 %d: exit reason 0x%lx, qualification 0x%lx", i,
		       vmreadz(VM_EXIT_REASON), vmreadz(EXIT_QUALIFICATION));
	nvmx_l1_skip(3);
	sh->nr_vmcall++;
}

static void evmcs_l1_code(struct vmx_pages *vmx, struct hyperv_test_pages *hv,
			  struct nvmx_shared *sh)
{
	uint64_t r;
	int i;

	nvmx_l1_enable_evmcs(hv);
	GUEST_ASSERT(prepare_for_vmx_operation(vmx));
	for (i = 0; i < NR_EVMCS; i++) {
		GUEST_ASSERT(!evmcs_vmptrld(evmcs_gpa[i], (void *)evmcs_gpa[i]));
		current_evmcs->revision_id = EVMCS_VERSION;
		prepare_vmcs(vmx, evmcs_l2_code, &evmcs_l2_stacks[i][NVMX_L2_STACK_SIZE]);
		/* No MSR bitmap: the eVMCS is the only page KVM maps. */
		GUEST_ASSERT(!vmwrite(CPU_BASED_VM_EXEC_CONTROL,
				      vmreadz(CPU_BASED_VM_EXEC_CONTROL) &
				      ~CPU_BASED_USE_MSR_BITMAPS));
		evmcs_l1_run(sh, i, true);
	}
	GUEST_SYNC(SYNC_LOOP_START);
	for (r = 0; r < l2_trips; r++)
		for (i = 0; i < NR_EVMCS; i++)
			evmcs_l1_run(sh, i, false);
	GUEST_SYNC(SYNC_LOOP_END);
	GUEST_DONE();
}

static enum vm_mem_backing_src_type src = VM_MEM_SRC_ANONYMOUS_THP;
static long orig_nr_hugepages = -1;

/* /proc/kpageflags of @pfn; false if it cannot be read. */
static bool pfn_flags(uint64_t pfn, uint64_t *flags)
{
	int fd = open("/proc/kpageflags", O_RDONLY);
	bool ok;

	if (fd < 0)
		return false;
	ok = pread(fd, flags, sizeof(*flags), pfn * sizeof(*flags)) == sizeof(*flags);
	close(fd);
	return ok;
}

/* The smaps field that counts this backing's huge pages. */
static const char *huge_field(void)
{
	return src == VM_MEM_SRC_ANONYMOUS_THP ? "AnonHugePages:" : "Private_Hugetlb:";
}

/*
 * Whether each of the pages the test uses (the first three of the block, or
 * the eVMCSs) is a tail page of a huge folio (kpageflags), or, without
 * kpageflags, whether the VMA has huge pages at all.  @why says what was
 * found.
 */
static bool pages_on_huge_tails(struct kvm_vm *vm, enum mode mode, char *why, size_t len)
{
	int first = mode == MODE_EVMCS ? EVMCS_PAGE(0) : 0;
	int last = mode == MODE_EVMCS ? EVMCS_PAGE(NR_EVMCS - 1) : NVMX_PG_VAPIC;
	uint64_t want = src == VM_MEM_SRC_ANONYMOUS_THP ? 1ull << KPF_THP : 1ull << KPF_HUGE;
	uint64_t pfn, flags;
	bool ok = true;
	long kb;
	int pg;

	why[0] = 0;
	for (pg = first; pg <= last; pg++) {
		pfn = nvmx_hva_to_pfn(nvmx_page_hva(vm, pg));
		if (!pfn_flags(pfn, &flags)) {
			kb = nvmx_smaps_kb(nvmx_page_hva(vm, 0), huge_field());
			snprintf(why, len, "no /proc/kpageflags; %s %ld kB in the VMA",
				 huge_field(), kb);
			return kb > 0;
		}
		snprintf(why + strlen(why), len - strlen(why), "%s%s pfn 0x%lx flags 0x%lx",
			 pg > first ? ", " : "", page_names[pg], pfn, flags);
		ok &= (flags & want) && (flags & (1ull << KPF_COMPOUND_TAIL));
	}
	return ok;
}

static long read_long(const char *path)
{
	long v = -1;
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	if (fscanf(f, "%ld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

static bool write_long(const char *path, long v)
{
	FILE *f = fopen(path, "w");
	bool ok;

	if (!f)
		return false;
	ok = fprintf(f, "%ld\n", v) > 0;
	return !fclose(f) && ok;
}

static long meminfo_value(const char *field)
{
	char line[128];
	long v = -1;
	FILE *f;

	f = fopen("/proc/meminfo", "r");
	TEST_ASSERT(f, "/proc/meminfo: %s", strerror(errno));
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, field, strlen(field)))
			v = strtol(line + strlen(field), NULL, 10);
	fclose(f);
	return v;
}

#define NR_HUGEPAGES	"/proc/sys/vm/nr_hugepages"

/* Make @need default-size huge pages free, or SKIP. */
static void reserve_hugepages(long need)
{
	long total = meminfo_value("HugePages_Total:"), free = meminfo_value("HugePages_Free:");

	__TEST_REQUIRE(total >= 0 && free >= 0, "no hugetlb support (CONFIG_HUGETLBFS)");
	if (free < need) {
		orig_nr_hugepages = read_long(NR_HUGEPAGES);
		__TEST_REQUIRE(write_long(NR_HUGEPAGES, total + need - free),
			       "cannot write %s: %s", NR_HUGEPAGES, strerror(errno));
		free = meminfo_value("HugePages_Free:");
	}
	__TEST_REQUIRE(free >= need, "only %ld of %ld huge pages to be had", free, need);
}

static void restore_hugepages(void)
{
	if (orig_nr_hugepages >= 0)
		write_long(NR_HUGEPAGES, orig_nr_hugepages);
}

/* Host: the VM with its pages on huge tail pages (or 4 KiB pages: collapse). */
static struct nvmx_shared *create_vm(struct kvm_vm **vmp, struct kvm_vcpu **vcpup,
				     enum mode mode)
{
	struct nvmx_shared *sh[1];
	char why[512];
	void *slot;
	int i;

	if (mode == MODE_EVMCS) {
		nvmx_create_vm_vcpus(vmp, vcpup, 1, evmcs_l1_code, NVMX_USE_EVMCS, src, sh);
		for (i = 0; i < NR_EVMCS; i++)
			evmcs_gpa[i] = nvmx_host_pages_gpa + EVMCS_PAGE(i) * getpagesize();
		sync_global_to_guest(*vmp, evmcs_gpa);
	} else {
		nvmx_create_vm_vcpus(vmp, vcpup, 1, l1_guest_code,
				     NVMX_USE_MSR_BITMAP | NVMX_USE_APIC_ACCESS | NVMX_USE_VAPIC,
				     src, sh);
	}
	slot = addr_gpa2hva(*vmp, NVMX_PAGES_GPA);
	if (mode == MODE_COLLAPSE) {
		/* Start on 4 KiB pages; MADV_COLLAPSE ignores the sysfs knobs. */
		TEST_ASSERT(!madvise(slot, nvmx_host_slot_size, MADV_DONTNEED) &&
			    !madvise(slot, nvmx_host_slot_size, MADV_NOHUGEPAGE),
			    "madvise: %s", strerror(errno));
		memset(nvmx_page_hva(*vmp, 0), 0, NVMX_SLOT_PAGES * getpagesize());
		TEST_ASSERT(!madvise(slot, nvmx_host_slot_size, MADV_HUGEPAGE),
			    "MADV_HUGEPAGE: %s", strerror(errno));
		printf("# collapse: before: %s %ld kB\n", huge_field(),
		       nvmx_smaps_kb(slot, huge_field()));
		return sh[0];
	}
	if (!pages_on_huge_tails(*vmp, mode, why, sizeof(why)) &&
	    src == VM_MEM_SRC_ANONYMOUS_THP) {
		/* No THP at fault time (fragmentation, defrag policy): ask for one. */
		printf("# no huge page at fault time (%s), trying MADV_COLLAPSE\n", why);
		madvise(slot, nvmx_host_slot_size, MADV_COLLAPSE);
	}
	if (!pages_on_huge_tails(*vmp, mode, why, sizeof(why))) {
		kvm_vm_free(*vmp);
		restore_hugepages();
		ksft_exit_skip("the pages are not on huge tail pages: %s\n", why);
	}
	printf("# pages at GPA 0x%lx on %s tail pages: %s\n", nvmx_host_pages_gpa,
	       src == VM_MEM_SRC_ANONYMOUS_THP ? "THP" : "hugetlb", why);
	return sh[0];
}

static uint64_t trips_of(struct nvmx_shared *sh)
{
	return sh->nr_vmcall + sh->nr_msr_read + sh->nr_msr_write + sh->nr_apic_access;
}

/* roundtrip and evmcs: -n round trips (or rounds of switches). */
static int run_roundtrip(enum mode mode, uint64_t n)
{
	const char *huge = src == VM_MEM_SRC_ANONYMOUS_THP ? "THP" : "hugetlb";
	struct nvmx_stats st0, st1;
	struct nvmx_shared *sh;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	char path[PATH_MAX];
	uint64_t t0, trips, refreshes, hits;
	struct ucall uc;
	bool stats;
	int fails = 0;

	sh = create_vm(&vm, &vcpu, mode);
	if (mode == MODE_EVMCS)
		ksft_test_result_pass("backing: the %d L2s' eVMCSs on %s tail pages\n", NR_EVMCS,
				      huge);
	else
		ksft_test_result_pass("backing: MSR bitmap, APIC-access and virtual-APIC pages on %s tail pages\n",
				      huge);
	l2_trips = n;
	sync_global_to_guest(vm, l2_trips);
	stats = nvmx_stats_find(path, sizeof(path));

	nvmx_run_to_sync(vcpu, SYNC_LOOP_START, &uc);
	t0 = trips_of(sh);
	if (stats)
		nvmx_stats_read(path, &st0);
	nvmx_run_to_sync(vcpu, SYNC_LOOP_END, &uc);
	trips = trips_of(sh) - t0;
	if (stats)
		nvmx_stats_read(path, &st1);
	nvmx_run_to_done(vcpu);

	if (mode == MODE_EVMCS) {
		TEST_ASSERT(trips == n * NR_EVMCS, "%lu round trips for %lu rounds of %d L2s",
			    trips, n, NR_EVMCS);
		ksft_test_result_pass("evmcs: %lu round trips, each to the other L2 and its eVMCS\n",
				      trips);
	} else {
		TEST_ASSERT(trips >= n, "only %lu round trips for %lu L2 iterations", trips, n);
		ksft_test_result_pass("roundtrip: %lu round trips, MSR bitmap and VTPR checked every 16th\n",
				      trips);
	}
	if (!stats) {
		ksft_test_result_skip("refreshes: no nvmx_gpc statistics: stock KVM or pass-through provider\n");
		ksft_test_result_skip("hits: no nvmx_gpc statistics: stock KVM or pass-through provider\n");
		goto out;
	}
	nvmx_stats_print("loop start", &st0);
	nvmx_stats_print("loop end", &st1);
	refreshes = st1.refreshes - st0.refreshes;
	hits = st1.hits - st0.hits;
	if (refreshes <= MAX_REFRESHES) {
		ksft_test_result_pass("refreshes: %lu over %lu round trips\n", refreshes, trips);
	} else {
		ksft_test_result_fail("refreshes: %lu over %lu round trips (at most %u allowed): the fast path misses on huge-page tail pages\n",
				      refreshes, trips, MAX_REFRESHES);
		fails++;
	}
	if (hits + MAX_REFRESHES >= trips) {
		ksft_test_result_pass("hits: %lu fast-path hits over %lu round trips\n", hits, trips);
	} else {
		ksft_test_result_fail("hits: %lu fast-path hits over %lu round trips (at least %lu needed)\n",
				      hits, trips, trips - MAX_REFRESHES);
		fails++;
	}
out:
	kvm_vm_free(vm);
	return fails;
}

static int run_parked(enum mode mode)
{
	struct nvmx_stats st0;
	struct ucall uc, res, next;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	char path[PATH_MAX], why[512];
	uint64_t before, after;
	void *slot, *vapic;
	long kb0, kb1;
	bool stats;
	int ret, fails = 0;

	create_vm(&vm, &vcpu, mode);
	slot = addr_gpa2hva(vm, NVMX_PAGES_GPA);
	vapic = nvmx_page_hva(vm, NVMX_PG_VAPIC);
	nvmx_write_start_pages(nvmx_page_hva(vm, NVMX_PG_MSR_BITMAP), vapic);
	stats = nvmx_stats_find(path, sizeof(path));
	nvmx_run_to_sync(vcpu, NVMX_SYNC_PARKED, &uc);
	nvmx_check_parked(&uc);
	if (stats)
		nvmx_stats_read(path, &st0);

	kb0 = nvmx_smaps_kb(slot, huge_field());
	before = nvmx_hva_to_pfn(vapic);
	switch (mode) {
	case MODE_SPLIT:
		TEST_ASSERT(!madvise((uint8_t *)slot + SPLIT_OFFSET, getpagesize(), MADV_DONTNEED),
			    "MADV_DONTNEED: %s", strerror(errno));
		kb1 = nvmx_smaps_kb(slot, huge_field());
		after = nvmx_hva_to_pfn(vapic);
		printf("# split: %s %ld -> %ld kB, vAPIC pfn 0x%lx -> 0x%lx\n", huge_field(),
		       kb0, kb1, before, after);
		if (kb1 < kb0)
			ksft_test_result_pass("split: the huge mapping was split (%s %ld -> %ld kB)\n",
					      huge_field(), kb0, kb1);
		else
			ksft_test_result_skip("split: the huge mapping was not split (%s %ld -> %ld kB)\n",
					      huge_field(), kb0, kb1);
		break;
	case MODE_MIGRATE:
		ret = nvmx_soft_offline(vapic, "virtual-APIC page", why, sizeof(why));
		if (ret == EINVAL) {
			kvm_vm_free(vm);
			restore_hugepages();
			ksft_exit_skip("MADV_SOFT_OFFLINE not supported (CONFIG_MEMORY_FAILURE)\n");
		}
		after = nvmx_hva_to_pfn(vapic);
		if (!ret) {
			ksft_test_result_pass("migrate: the virtual-APIC page moved (pfn 0x%lx -> 0x%lx)\n",
					      before, after);
		} else {
			ksft_test_result_fail("migrate: %s: KVM holds a reference to the page while L2 runs\n",
					      why);
			fails++;
		}
		break;
	case MODE_COLLAPSE:
		ret = madvise(slot, nvmx_host_slot_size, MADV_COLLAPSE);
		if (ret && errno == EINVAL) {
			kvm_vm_free(vm);
			ksft_exit_skip("MADV_COLLAPSE not supported\n");
		}
		snprintf(why, sizeof(why), "%s", ret ? strerror(errno) : "ok");
		kb1 = nvmx_smaps_kb(slot, huge_field());
		after = nvmx_hva_to_pfn(vapic);
		printf("# collapse: %s (%s %ld -> %ld kB, vAPIC pfn 0x%lx -> 0x%lx)\n", why,
		       huge_field(), kb0, kb1, before, after);
		if (!ret && kb1 > 0 && after && after != before) {
			ksft_test_result_pass("collapse: the pages went into a new huge page (%s %ld kB, vAPIC pfn 0x%lx -> 0x%lx)\n",
					      huge_field(), kb1, before, after);
		} else {
			ksft_test_result_fail("collapse: MADV_COLLAPSE %s, %s %ld kB, vAPIC pfn 0x%lx -> 0x%lx: KVM holds a reference to the pages while L2 runs\n",
					      why, huge_field(), kb1, before, after);
			fails++;
		}
		break;
	default:
		TEST_FAIL("bad mode");
	}
	nvmx_write_new_pages(nvmx_page_hva(vm, NVMX_PG_MSR_BITMAP), vapic);

	nvmx_run_to_sync(vcpu, NVMX_SYNC_RESUMED, &res);
	nvmx_run_to_sync(vcpu, NVMX_SYNC_NEXT_ENTRY, &next);
	nvmx_run_to_done(vcpu);

	fails += nvmx_report_inval(mode_names[mode], stats, path, &st0, false);
	fails += nvmx_report_resumed(mode_names[mode], &res, &next, NVMX_NEW_VTPR);
	kvm_vm_free(vm);
	return fails;
}

int main(int argc, char *argv[])
{
	enum mode mode = MODE_ROUNDTRIP;
	uint64_t n = 200;
	int opt, m;

	while ((opt = getopt(argc, argv, "s:n:m:h")) != -1) {
		switch (opt) {
		case 's':
			if (!strcmp(optarg, "thp"))
				src = VM_MEM_SRC_ANONYMOUS_THP;
			else if (!strcmp(optarg, "hugetlb"))
				src = VM_MEM_SRC_ANONYMOUS_HUGETLB;
			else
				goto usage;
			break;
		case 'n':
			n = strtoull(optarg, NULL, 0);
			break;
		case 'm':
			m = nvmx_name_index(mode_names, NR_MODES, optarg);
			if (m < 0)
				goto usage;
			mode = m;
			break;
		default:
			goto usage;
		}
	}
	TEST_ASSERT(n > MAX_REFRESHES, "need more than %u round trips", MAX_REFRESHES);

	ksft_print_header();
	TEST_REQUIRE(kvm_cpu_has(X86_FEATURE_VMX));
	if (src == VM_MEM_SRC_ANONYMOUS_THP) {
		__TEST_REQUIRE(thp_configured(), "no transparent hugepages (CONFIG_TRANSPARENT_HUGEPAGE)");
	} else {
		__TEST_REQUIRE(mode != MODE_SPLIT && mode != MODE_COLLAPSE,
			       "%s needs THP: hugetlb pages are not split or collapsed",
			       mode_names[mode]);
		/* One for the slot, and one to migrate into. */
		reserve_hugepages(mode == MODE_MIGRATE ? 2 : 1);
	}
	if (mode == MODE_EVMCS) {
		TEST_REQUIRE(kvm_has_cap(KVM_CAP_NESTED_STATE));
		TEST_REQUIRE(kvm_has_cap(KVM_CAP_HYPERV_ENLIGHTENED_VMCS));
	}
	ksft_set_plan(mode == MODE_ROUNDTRIP || mode == MODE_EVMCS ? 4 : 5);
	if (mode == MODE_ROUNDTRIP || mode == MODE_EVMCS)
		run_roundtrip(mode, n);
	else
		run_parked(mode);
	restore_hugepages();
	ksft_finished();

usage:
	printf("usage: %s [-s thp|hugetlb] [-m roundtrip|split|migrate|collapse|evmcs] [-n round trips]\n",
	       argv[0]);
	return KSFT_FAIL;
}
