// SPDX-License-Identifier: GPL-2.0-only
/*
 * nvmx_inval_race_test: the host replaces the memory behind the L1 pages
 * that vmcs02 points at while the vCPU is in L2, and L2 must see the new
 * memory without going through L1 first.
 *
 * The MSR bitmap, APIC-access page and virtual-APIC page live in a memslot
 * of their own (selftests/nvmx_nested.h).  L2 checks the start state (VTPR
 * 0x30, RDMSR of FS_BASE intercepted, GS_BASE not) and exits straight to
 * userspace with GUEST_SYNC, so the vCPU stays in L2 with the pages mapped.
 * The host then changes the pages according to -m:
 *   dontneed  madvise(MADV_DONTNEED) on all three pages, then writes new
 *             content through the HVA, which faults in new pages: a bitmap
 *             intercepting GS_BASE instead of FS_BASE, and VTPR 0x90;
 *   mprotect  mprotect(PROT_NONE) and back on all three pages (same pages,
 *             content unchanged, but every mapping is invalidated), then the
 *             same new content written in place;
 *   migrate   MADV_SOFT_OFFLINE on each page, which migrates it to a new
 *             physical page (this is what moves a page on a one-node
 *             machine; move_pages() to the node it is on does nothing); the
 *             PFNs from /proc/self/pagemap must change, then the new content
 *             is written.
 * L2 resumes and, still without an exit to L1:
 *   - reads CR8: it must be the new VTPR (9);
 *   - reads the APIC-access page: it must exit to L1 with APIC_ACCESS.
 * Then L2 exits to L1 once, and at that next nested VM-Enter RDMSR of
 * GS_BASE must exit to L1 and FS_BASE must not (the new bitmap).
 * With the nvmx_gpc statistics present, inval_notifier must have grown.
 *
 *   race      a host thread replaces the virtual-APIC page again and again
 *             (a new page with the next VTPR value mremap()ed over it; at
 *             most -n times, and at most once per KVM_RUN so that the
 *             replacements spread over the loop) while L2 loops -i times
 *             reading CR8 and exiting to userspace, and to L1 every 8th
 *             time; each CR8 value L2 reports
 *             must be one the thread had published between the start and
 *             the end of that KVM_RUN.  With each new virtual-APIC page
 *             the thread also puts a copy of the MSR bitmap in place of
 *             the old one, so that on two CPUs its invalidations meet
 *             the merge of the bitmap at L2's nested VM-Enters (with the
 *             cache, the invalidation waits for the merge to drop the
 *             cache's lock).
 *
 * Expected on stock KVM 6.12: it maps the virtual-APIC and APIC-access pages
 * with a page reference for the whole time L2 runs, and vmcs02 keeps their
 * old host addresses until the next nested VM-Exit.  So dontneed and race
 * FAIL ("stale virtual-APIC page: L2 read TPR 0x30, host wrote 0x90", and
 * the APIC-access read does not exit), and in migrate those two pages cannot
 * be migrated at all (MADV_SOFT_OFFLINE: EBUSY, KVM's reference).  The MSR
 * bitmap is mapped only during the merge at each nested VM-Enter, so its
 * check passes on stock; mprotect passes on stock (same pages).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "nvmx_nested.h"
#include "nvmx_stats.h"

#include "kselftest.h"

enum mode { MODE_DONTNEED, MODE_MPROTECT, MODE_MIGRATE, MODE_RACE };

static const char *const mode_names[] = {
	[MODE_DONTNEED] = "dontneed",
	[MODE_MPROTECT] = "mprotect",
	[MODE_MIGRATE] = "migrate",
	[MODE_RACE] = "race",
};

NVMX_DEFINE_L1_GUEST_CODE(nvmx_l2_park_or_race)

static const char *const page_names[NVMX_SLOT_PAGES] = {
	[NVMX_PG_MSR_BITMAP] = "MSR bitmap",
	[NVMX_PG_APIC_ACCESS] = "APIC-access page",
	[NVMX_PG_VAPIC] = "virtual-APIC page",
};

/* Soft-offline (migrate) each page; returns the number not moved. */
static int migrate_pages_of_slot(struct kvm_vm *vm, char *why, size_t len)
{
	char one[128];
	int pg, ret, stuck = 0;

	why[0] = 0;
	for (pg = 0; pg < NVMX_SLOT_PAGES; pg++) {
		ret = nvmx_soft_offline(nvmx_page_hva(vm, pg), page_names[pg], one, sizeof(one));
		if (ret == EINVAL)
			ksft_exit_skip("MADV_SOFT_OFFLINE not supported (CONFIG_MEMORY_FAILURE)\n");
		if (!ret)
			continue;
		stuck++;
		snprintf(why + strlen(why), len - strlen(why), "%s%s", why[0] ? ", " : "", one);
	}
	return stuck;
}

static int run_deterministic(enum mode mode)
{
	struct nvmx_stats st0;
	struct ucall uc, res, next;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	char path[PATH_MAX], why[256];
	size_t size = NVMX_SLOT_PAGES * getpagesize();
	void *slot;
	bool stats;
	int fails = 0, stuck = 0;

	nvmx_create_parked_vm(&vm, &vcpu, l1_guest_code, &uc, path, sizeof(path),
			      &stats, &st0);
	slot = nvmx_page_hva(vm, 0);

	switch (mode) {
	case MODE_DONTNEED:
		TEST_ASSERT(!madvise(slot, size, MADV_DONTNEED),
			    "MADV_DONTNEED: %s", strerror(errno));
		break;
	case MODE_MPROTECT:
		TEST_ASSERT(!mprotect(slot, size, PROT_NONE), "mprotect: %s",
			    strerror(errno));
		TEST_ASSERT(!mprotect(slot, size, PROT_READ | PROT_WRITE),
			    "mprotect: %s", strerror(errno));
		break;
	case MODE_MIGRATE:
		stuck = migrate_pages_of_slot(vm, why, sizeof(why));
		break;
	default:
		TEST_FAIL("bad mode");
	}
	nvmx_write_new_pages(nvmx_page_hva(vm, NVMX_PG_MSR_BITMAP),
			     nvmx_page_hva(vm, NVMX_PG_VAPIC));

	nvmx_run_to_sync(vcpu, NVMX_SYNC_RESUMED, &res);
	nvmx_run_to_sync(vcpu, NVMX_SYNC_NEXT_ENTRY, &next);
	nvmx_run_to_done(vcpu);

	if (mode == MODE_MIGRATE) {
		if (stuck) {
			ksft_test_result_fail("migrate: %s: KVM holds a reference to the page while L2 runs\n",
					      why);
			fails++;
		} else {
			ksft_test_result_pass("migrate: all three pages moved to new PFNs\n");
		}
	}
	fails += nvmx_report_inval(mode_names[mode], stats, path, &st0, false);
	fails += nvmx_report_resumed(mode_names[mode], &res, &next, NVMX_NEW_VTPR);
	kvm_vm_free(vm);
	return fails;
}

/*
 * The race: a thread replacing the virtual-APIC page (and the MSR bitmap,
 * by a copy), generation by generation.
 */
struct race {
	void *vapic;		/* HVA of the virtual-APIC page */
	void *msr_bitmap;	/* HVA of the MSR bitmap */
	uint64_t max_gens;
	uint64_t gen;		/* last generation fully in place */
	uint64_t runs;		/* KVM_RUNs the vCPU thread has completed */
	bool stop;
};

/* CR8 value of generation @g: 1..15, never the 0 of a fresh page. */
static uint64_t gen_cr8(uint64_t g)
{
	return 1 + g % 15;
}

/* Put a new page with the content of the page at @hva in its place. */
static void replace_page(void *hva, const void *content)
{
	void *p;

	p = mmap(NULL, getpagesize(), PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	TEST_ASSERT(p != MAP_FAILED, "mmap: %s", strerror(errno));
	memcpy(p, content ? content : hva, getpagesize());
	/* Atomically put the new page where the old one was. */
	TEST_ASSERT(mremap(p, getpagesize(), getpagesize(),
			   MREMAP_MAYMOVE | MREMAP_FIXED, hva) == hva,
		    "mremap: %s", strerror(errno));
}

static void *race_thread(void *arg)
{
	struct race *r = arg;
	uint64_t g, seen = 0;
	uint8_t vapic[PAGE_SIZE];

	for (g = 1; g <= r->max_gens; g++) {
		/*
		 * At most one replacement per KVM_RUN of the vCPU, so that they
		 * spread over the whole loop instead of all landing before it.
		 */
		while (__atomic_load_n(&r->runs, __ATOMIC_ACQUIRE) == seen) {
			if (__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE))
				return NULL;
			sched_yield();
		}
		seen = __atomic_load_n(&r->runs, __ATOMIC_ACQUIRE);
		memset(vapic, 0, sizeof(vapic));
		*(uint32_t *)(vapic + NVMX_APIC_TPR) = gen_cr8(g) << 4;
		replace_page(r->vapic, vapic);
		__atomic_store_n(&r->gen, g, __ATOMIC_RELEASE);
		replace_page(r->msr_bitmap, NULL);
	}
	return NULL;
}

static int run_race(uint64_t iters, uint64_t max_gens)
{
	uint64_t i, g0, g1, g, cr8, checked = 0, undecided = 0, stale = 0, after = 0;
	uint64_t first_stale_cr8 = 0, first_stale_gen = 0;
	struct nvmx_stats st0, st1;
	char path[PATH_MAX];
	struct kvm_vcpu *vcpu;
	struct race race = {};
	struct kvm_vm *vm;
	struct ucall uc;
	pthread_t thr;
	bool stats, ok;
	int fails = 0;

	nvmx_create_vm(&vm, &vcpu, l1_guest_code,
		       NVMX_USE_MSR_BITMAP | NVMX_USE_APIC_ACCESS | NVMX_USE_VAPIC);
	nvmx_l2_race_iters = iters;
	sync_global_to_guest(vm, nvmx_l2_race_iters);
	race.vapic = nvmx_page_hva(vm, NVMX_PG_VAPIC);
	race.msr_bitmap = nvmx_page_hva(vm, NVMX_PG_MSR_BITMAP);
	race.max_gens = max_gens;
	*(volatile uint32_t *)((uint8_t *)race.vapic + NVMX_APIC_TPR) = gen_cr8(0) << 4;
	stats = nvmx_stats_find(path, sizeof(path));
	if (stats)
		nvmx_stats_read(path, &st0);

	TEST_ASSERT(!pthread_create(&thr, NULL, race_thread, &race), "pthread_create");
	for (i = 0; i < iters; i++) {
		/* One emulated CPU: let the thread in between guest exits. */
		sched_yield();
		g0 = __atomic_load_n(&race.gen, __ATOMIC_ACQUIRE);
		nvmx_run_to_sync(vcpu, NVMX_SYNC_RACE, &uc);
		g1 = __atomic_load_n(&race.gen, __ATOMIC_ACQUIRE);
		__atomic_store_n(&race.runs, i + 1, __ATOMIC_RELEASE);
		TEST_ASSERT(uc.args[2] == i, "L2 iteration %lu, expected %lu", uc.args[2], i);
		cr8 = uc.args[3];
		/* A page in place at some time during this KVM_RUN. */
		if (g1 + 1 - g0 >= 15) {
			undecided++;
			continue;
		}
		checked++;
		after += g0 > 0;
		ok = false;
		for (g = g0; g <= g1 + 1; g++)
			ok |= cr8 == gen_cr8(g);
		if (!ok && !stale++) {
			first_stale_cr8 = cr8;
			first_stale_gen = g0;
		}
	}
	__atomic_store_n(&race.stop, true, __ATOMIC_RELEASE);
	pthread_join(thr, NULL);
	nvmx_run_to_done(vcpu);

	printf("# race: %lu checks (%lu after a replacement), %lu undecided, %lu stale, %lu page replacements\n",
	       checked, after, undecided, stale, race.gen);
	if (stats) {
		nvmx_stats_read(path, &st1);
		nvmx_stats_print("after", &st1);
		if (st1.inval_notifier > st0.inval_notifier) {
			ksft_test_result_pass("race: inval_notifier %lu -> %lu\n",
					      st0.inval_notifier, st1.inval_notifier);
		} else {
			ksft_test_result_fail("race: the cache saw no mmu_notifier invalidation\n");
			fails++;
		}
	} else {
		ksft_test_result_skip("race: no nvmx_gpc statistics: stock KVM or pass-through provider\n");
	}
	if (stale) {
		ksft_test_result_fail("race: stale virtual-APIC page: L2 read TPR 0x%lx, host wrote 0x%lx (%lu of %lu checks stale)\n",
				      first_stale_cr8 << 4, gen_cr8(first_stale_gen) << 4,
				      stale, checked);
		fails++;
	} else if (!after) {
		ksft_test_result_skip("race: the thread never replaced the page during a check\n");
	} else {
		ksft_test_result_pass("race: %lu checks (%lu after a replacement), %lu page replacements, L2 always saw a current page\n",
				      checked, after, race.gen);
	}
	kvm_vm_free(vm);
	return fails;
}

int main(int argc, char *argv[])
{
	uint64_t iters = 200, gens = 200;
	int opt, m, first = 0, last = MODE_RACE, plan = 0;

	while ((opt = getopt(argc, argv, "m:n:i:h")) != -1) {
		switch (opt) {
		case 'm':
			if (!strcmp(optarg, "all"))
				break;
			for (m = 0; m <= MODE_RACE; m++)
				if (!strcmp(optarg, mode_names[m]))
					break;
			if (m > MODE_RACE)
				goto usage;
			first = last = m;
			break;
		case 'n':
			gens = strtoull(optarg, NULL, 0);
			break;
		case 'i':
			iters = strtoull(optarg, NULL, 0);
			break;
		default:
			goto usage;
		}
	}

	ksft_print_header();
	TEST_REQUIRE(kvm_cpu_has(X86_FEATURE_VMX));
	for (m = first; m <= last; m++)
		plan += m == MODE_RACE ? 2 : m == MODE_MIGRATE ? 5 : 4;
	ksft_set_plan(plan);
	for (m = first; m <= last; m++)
		m == MODE_RACE ? run_race(iters, gens) : run_deterministic(m);
	ksft_finished();

usage:
	printf("usage: %s [-m dontneed|mprotect|migrate|race|all] [-i race iterations] [-n race replacements]\n",
	       argv[0]);
	return KSFT_FAIL;
}
