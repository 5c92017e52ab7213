// SPDX-License-Identifier: GPL-2.0-only
/*
 * nvmx_vcpus_test: the invalidation tests of nvmx_inval_race_test with
 * several vCPUs, each running its own L1 and L2 with its own MSR bitmap,
 * APIC-access page and virtual-APIC page (selftests/nvmx_nested.h), so that
 * an invalidation must reach the vCPU whose pages it hit, whatever its
 * index (review finding F1).
 *
 * -v N (2 or 4) vCPUs.  With -l only the last vCPU runs L1/L2; the others
 * are never run (their pages are never mapped and never touched).
 * Modes (-m):
 *   dontneed  each active vCPU in turn parks its L2 in userspace with its
 *             pages mapped (nvmx_l2_parked_sequence()).  The host then
 *             MADV_DONTNEEDs every active vCPU's block of pages, fills 1 MiB
 *             of fresh memory with 0x70 junk (so that a freed page is likely
 *             reused with junk), writes a new MSR bitmap and a new VTPR of
 *             its own to each vCPU (0x90 + 0x10 * i, at most 0xe0) and
 *             resumes each vCPU: its L2 must read its own new CR8 and its
 *             APIC-access read must exit to L1, both before any exit to L1;
 *             at the next nested VM-Enter the new bitmap must be in use.
 *   migrate   the same, but every page of each active block is soft-offlined
 *             (MADV_SOFT_OFFLINE migrates it to a new physical page) and must
 *             land on a new PFN.
 *   race      one host thread per active vCPU runs its L2 loop (L2 reads CR8
 *             and exits to userspace, and to L1 every 8th time), and one more
 *             thread replaces the virtual-APIC pages of all active vCPUs again
 *             and again with mremap(), each with a VTPR of its own; every CR8
 *             value an L2 reports must be one published for that vCPU during
 *             that KVM_RUN.
 * With the nvmx_gpc statistics present (the cache is loaded), for every vCPU
 * i: vcpu<i>_kicks must have grown if vCPU i's pages were invalidated while
 * it was parked (or running), and must not have grown otherwise (with -l,
 * the idle vCPUs).  A statistics file without the vcpu<i>_* lines fails
 * these checks.
 *
 * Expected on stock KVM 6.12: dontneed and race FAIL on every vCPU (stock
 * keeps the old pages in vmcs02 until the next nested VM-Exit) and migrate
 * FAILS (those pages cannot move while KVM holds a reference); the kicks
 * checks are skipped.  The nvmx_gpc module at 4e10b0e sent every kick to
 * vCPU index 0: every vCPU but the first reads junk or a stale VTPR (with
 * -l -v 2: "vcpu1 ... L2 read TPR 0x70, host wrote 0xa0"), and it has no
 * per-vCPU statistics.
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

enum mode { MODE_DONTNEED, MODE_MIGRATE, MODE_RACE, NR_MODES };

static const char *const mode_names[] = {
	[MODE_DONTNEED] = "dontneed",
	[MODE_MIGRATE] = "migrate",
	[MODE_RACE] = "race",
};

#define JUNK_SIZE	(1ul << 20)
#define JUNK_BYTE	0x70

static const char *const page_names[NVMX_SLOT_PAGES] = {
	[NVMX_PG_MSR_BITMAP] = "MSR bitmap",
	[NVMX_PG_APIC_ACCESS] = "APIC-access page",
	[NVMX_PG_VAPIC] = "virtual-APIC page",
	[NVMX_PG_VAPIC_ALT] = "second virtual-APIC page",
};

NVMX_DEFINE_L1_GUEST_CODE(nvmx_l2_park_or_race)

static int nr_vcpus = 2;
static bool last_only;

static int first_active(void)
{
	return last_only ? nr_vcpus - 1 : 0;
}

/* The new VTPR of vCPU @i: different per vCPU, never the start 0x30. */
static uint32_t new_vtpr(int i)
{
	uint32_t v = NVMX_NEW_VTPR + 0x10 * i;

	return v < 0xf0 ? v : 0xe0;
}

/* Soft-offline the three used pages of vCPU @i; returns how many did not move. */
static int migrate_block(struct kvm_vm *vm, int i, char *why, size_t len)
{
	char name[64], one[128];
	int pg, ret, stuck = 0;

	why[0] = 0;
	for (pg = 0; pg <= NVMX_PG_VAPIC; pg++) {
		snprintf(name, sizeof(name), "vcpu%d %s", i, page_names[pg]);
		ret = nvmx_soft_offline(nvmx_vcpu_page_hva(vm, i, pg), name, one, sizeof(one));
		if (ret == EINVAL)
			ksft_exit_skip("MADV_SOFT_OFFLINE not supported (CONFIG_MEMORY_FAILURE)\n");
		if (!ret)
			continue;
		stuck++;
		snprintf(why + strlen(why), len - strlen(why), "%s%s", why[0] ? ", " : "", one);
	}
	return stuck;
}

/*
 * With statistics: one result per vCPU, vcpu<i>_kicks grown exactly for the
 * vCPUs in [first_active(), nr_vcpus).  Returns the number of failures.
 */
static int report_kicks(const char *what, bool stats, bool per_vcpu0,
			const struct nvmx_vcpu_stats *vs0, const char *path)
{
	struct nvmx_vcpu_stats vs1;
	bool per_vcpu1 = false, touched;
	int i, fails = 0;

	if (stats) {
		per_vcpu1 = nvmx_stats_read_vcpus(path, &vs1);
		nvmx_vcpu_stats_print("after", &vs1, nr_vcpus);
	}
	for (i = 0; i < nr_vcpus; i++) {
		touched = i >= first_active();
		if (!stats) {
			ksft_test_result_skip("vcpu%d %s: no nvmx_gpc statistics: stock KVM or pass-through provider\n",
					      i, what);
		} else if (!per_vcpu0 || !per_vcpu1) {
			ksft_test_result_fail("vcpu%d %s: module reports no per-vCPU statistics (no vcpus/vcpu%d_kicks lines)\n",
					      i, what, i);
			fails++;
		} else if (vs1.vcpus != (uint64_t)nr_vcpus) {
			ksft_test_result_fail("vcpu%d %s: module reports %lu vCPUs, the VM has %d\n",
					      i, what, vs1.vcpus, nr_vcpus);
			fails++;
		} else if (touched && vs1.kicks[i] > vs0->kicks[i]) {
			ksft_test_result_pass("vcpu%d %s: kicked (vcpu%d_kicks %lu -> %lu)\n",
					      i, what, i, vs0->kicks[i], vs1.kicks[i]);
		} else if (touched) {
			ksft_test_result_fail("vcpu%d %s: its pages were invalidated but it got no reload request (vcpu%d_kicks %lu -> %lu)\n",
					      i, what, i, vs0->kicks[i], vs1.kicks[i]);
			fails++;
		} else if (vs1.kicks[i] == vs0->kicks[i]) {
			ksft_test_result_pass("vcpu%d %s: idle, not kicked (vcpu%d_kicks %lu)\n",
					      i, what, i, vs1.kicks[i]);
		} else {
			ksft_test_result_fail("vcpu%d %s: idle vCPU got reload requests for other vCPUs' pages (vcpu%d_kicks %lu -> %lu)\n",
					      i, what, i, vs0->kicks[i], vs1.kicks[i]);
			fails++;
		}
	}
	return fails;
}

static int run_deterministic(enum mode mode)
{
	struct nvmx_shared *sh[NVMX_MAX_VCPUS];
	struct kvm_vcpu *vcpus[NVMX_MAX_VCPUS];
	struct ucall uc, res[NVMX_MAX_VCPUS], next[NVMX_MAX_VCPUS];
	struct nvmx_vcpu_stats vs0 = {};
	struct nvmx_stats st0, st1;
	size_t block = NVMX_SLOT_PAGES * getpagesize();
	char path[PATH_MAX], why[NVMX_MAX_VCPUS][256], what[64];
	int i, fails = 0, stuck[NVMX_MAX_VCPUS] = {};
	bool stats, per_vcpu0 = false;
	struct kvm_vm *vm;
	uint8_t *junk;

	nvmx_create_vm_vcpus(&vm, vcpus, nr_vcpus, l1_guest_code,
			     NVMX_USE_MSR_BITMAP | NVMX_USE_APIC_ACCESS | NVMX_USE_VAPIC,
			     VM_MEM_SRC_ANONYMOUS, sh);
	for (i = 0; i < nr_vcpus; i++)
		nvmx_write_start_pages(nvmx_vcpu_page_hva(vm, i, NVMX_PG_MSR_BITMAP),
				       nvmx_vcpu_page_hva(vm, i, NVMX_PG_VAPIC));
	stats = nvmx_stats_find(path, sizeof(path));

	/* Park each active vCPU's L2, one after the other. */
	for (i = first_active(); i < nr_vcpus; i++) {
		nvmx_run_to_sync(vcpus[i], NVMX_SYNC_PARKED, &uc);
		nvmx_check_parked(&uc);
	}
	if (stats) {
		nvmx_stats_read(path, &st0);
		per_vcpu0 = nvmx_stats_read_vcpus(path, &vs0);
		nvmx_vcpu_stats_print("parked", &vs0, nr_vcpus);
	}

	for (i = first_active(); i < nr_vcpus; i++) {
		void *slot = nvmx_vcpu_page_hva(vm, i, 0);

		if (mode == MODE_DONTNEED)
			TEST_ASSERT(!madvise(slot, block, MADV_DONTNEED),
				    "MADV_DONTNEED: %s", strerror(errno));
		else
			stuck[i] = migrate_block(vm, i, why[i], sizeof(why[i]));
	}
	/* Fresh memory full of junk: freed pages are likely to end up here. */
	junk = mmap(NULL, JUNK_SIZE, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	TEST_ASSERT(junk != MAP_FAILED, "mmap: %s", strerror(errno));
	madvise(junk, JUNK_SIZE, MADV_NOHUGEPAGE);
	memset(junk, JUNK_BYTE, JUNK_SIZE);

	for (i = first_active(); i < nr_vcpus; i++) {
		nvmx_write_msr_bitmap(nvmx_vcpu_page_hva(vm, i, NVMX_PG_MSR_BITMAP),
				      NVMX_NEW_PATTERN);
		WRITE_ONCE(*nvmx_vcpu_vtpr_hva(vm, i), new_vtpr(i));
	}
	for (i = first_active(); i < nr_vcpus; i++)
		nvmx_run_to_sync(vcpus[i], NVMX_SYNC_RESUMED, &res[i]);
	for (i = first_active(); i < nr_vcpus; i++) {
		nvmx_run_to_sync(vcpus[i], NVMX_SYNC_NEXT_ENTRY, &next[i]);
		nvmx_run_to_done(vcpus[i]);
	}

	if (stats) {
		nvmx_stats_read(path, &st1);
		nvmx_stats_print("after", &st1);
	}
	fails += report_kicks(mode_names[mode], stats, per_vcpu0, &vs0, path);
	for (i = first_active(); i < nr_vcpus; i++) {
		snprintf(what, sizeof(what), "vcpu%d %s", i, mode_names[mode]);
		if (mode == MODE_MIGRATE) {
			if (stuck[i]) {
				ksft_test_result_fail("%s: %s: KVM holds a reference to the page while L2 runs\n",
						      what, why[i]);
				fails++;
			} else {
				ksft_test_result_pass("%s: all three pages moved to new PFNs\n",
						      what);
			}
		}
		fails += nvmx_report_resumed(what, &res[i], &next[i], new_vtpr(i));
	}
	munmap(junk, JUNK_SIZE);
	kvm_vm_free(vm);
	return fails;
}

/* The race: per-vCPU state shared by its thread and the replacer. */
struct vcpu_race {
	struct kvm_vcpu *vcpu;
	int idx;
	void *vapic;		/* HVA of this vCPU's virtual-APIC page */
	uint64_t gen;		/* last generation fully in place */
	uint64_t runs;		/* KVM_RUNs the vCPU thread has completed */
	bool done;
	uint64_t checked, undecided, stale, after;
	uint64_t first_stale_cr8, first_stale_gen;
};

static struct vcpu_race races[NVMX_MAX_VCPUS];
static uint64_t race_iters, race_max_gens, race_total_gens;

/* CR8 value of generation @g on vCPU @i: 1..15, never the 0 of a fresh page. */
static uint64_t gen_cr8(uint64_t g, int i)
{
	return 1 + (g + 4 * i) % 15;
}

static void *replacer_thread(void *arg)
{
	uint64_t g, seen[NVMX_MAX_VCPUS] = {};
	bool waiting, all_done;
	int i;
	void *p;

	for (g = 1; g <= race_max_gens; g++) {
		/* At most one round per KVM_RUN of every vCPU still running. */
		do {
			waiting = false;
			all_done = true;
			for (i = first_active(); i < nr_vcpus; i++) {
				if (__atomic_load_n(&races[i].done, __ATOMIC_ACQUIRE))
					continue;
				all_done = false;
				if (__atomic_load_n(&races[i].runs, __ATOMIC_ACQUIRE) == seen[i])
					waiting = true;
			}
			if (all_done)
				return NULL;
			if (waiting)
				sched_yield();
		} while (waiting);
		for (i = first_active(); i < nr_vcpus; i++) {
			seen[i] = __atomic_load_n(&races[i].runs, __ATOMIC_ACQUIRE);
			p = mmap(NULL, getpagesize(), PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			TEST_ASSERT(p != MAP_FAILED, "mmap: %s", strerror(errno));
			WRITE_ONCE(*(uint32_t *)((uint8_t *)p + NVMX_APIC_TPR),
				   gen_cr8(g, i) << 4);
			/* Atomically put the new page where the old one was. */
			TEST_ASSERT(mremap(p, getpagesize(), getpagesize(),
					   MREMAP_MAYMOVE | MREMAP_FIXED, races[i].vapic) ==
				    races[i].vapic, "mremap: %s", strerror(errno));
			__atomic_store_n(&races[i].gen, g, __ATOMIC_RELEASE);
		}
		__atomic_store_n(&race_total_gens, g, __ATOMIC_RELEASE);
	}
	return NULL;
}

static void *vcpu_thread(void *arg)
{
	struct vcpu_race *r = arg;
	uint64_t i, g0, g1, g, cr8;
	struct ucall uc;
	bool ok;

	for (i = 0; i < race_iters; i++) {
		/*
		 * Halfway, wait for the replacer's first round.  On two CPUs this
		 * thread could otherwise run every check before the replacer gets
		 * to its page, and see no invalidation at all (bochs-smp did: 100
		 * checks, 0 after a replacement, 0 kicks).  The first round needs
		 * only one KVM_RUN of every vCPU, so this cannot deadlock.
		 */
		if (i == race_iters / 2 && race_max_gens)
			while (!__atomic_load_n(&r->gen, __ATOMIC_ACQUIRE))
				sched_yield();
		/* One emulated CPU: let the other threads in between guest exits. */
		sched_yield();
		g0 = __atomic_load_n(&r->gen, __ATOMIC_ACQUIRE);
		nvmx_run_to_sync(r->vcpu, NVMX_SYNC_RACE, &uc);
		g1 = __atomic_load_n(&r->gen, __ATOMIC_ACQUIRE);
		__atomic_store_n(&r->runs, i + 1, __ATOMIC_RELEASE);
		TEST_ASSERT(uc.args[2] == i, "vcpu%d: L2 iteration %lu, expected %lu", r->idx,
			    uc.args[2], i);
		cr8 = uc.args[3];
		/* Some page in place during this KVM_RUN: g0..g1, or g1 + 1 going in. */
		if (g1 + 1 - g0 >= 15) {
			r->undecided++;
			continue;
		}
		r->checked++;
		r->after += g0 > 0;
		ok = false;
		for (g = g0; g <= g1 + 1; g++)
			ok |= cr8 == gen_cr8(g, r->idx);
		if (!ok && !r->stale++) {
			r->first_stale_cr8 = cr8;
			r->first_stale_gen = g0;
		}
	}
	nvmx_run_to_done(r->vcpu);
	__atomic_store_n(&r->done, true, __ATOMIC_RELEASE);
	return NULL;
}

static int run_race(void)
{
	struct nvmx_shared *sh[NVMX_MAX_VCPUS];
	struct kvm_vcpu *vcpus[NVMX_MAX_VCPUS];
	pthread_t thr[NVMX_MAX_VCPUS], repl;
	struct nvmx_vcpu_stats vs0 = {};
	struct nvmx_stats st0, st1;
	bool stats, per_vcpu0 = false;
	char path[PATH_MAX];
	struct vcpu_race *r;
	struct kvm_vm *vm;
	int i, fails = 0;

	nvmx_create_vm_vcpus(&vm, vcpus, nr_vcpus, l1_guest_code,
			     NVMX_USE_MSR_BITMAP | NVMX_USE_APIC_ACCESS | NVMX_USE_VAPIC,
			     VM_MEM_SRC_ANONYMOUS, sh);
	nvmx_l2_race_iters = race_iters;
	sync_global_to_guest(vm, nvmx_l2_race_iters);
	for (i = 0; i < nr_vcpus; i++) {
		races[i].vcpu = vcpus[i];
		races[i].idx = i;
		races[i].vapic = nvmx_vcpu_page_hva(vm, i, NVMX_PG_VAPIC);
		WRITE_ONCE(*nvmx_vcpu_vtpr_hva(vm, i), gen_cr8(0, i) << 4);
	}
	stats = nvmx_stats_find(path, sizeof(path));
	if (stats) {
		nvmx_stats_read(path, &st0);
		per_vcpu0 = nvmx_stats_read_vcpus(path, &vs0);
	}

	for (i = first_active(); i < nr_vcpus; i++)
		TEST_ASSERT(!pthread_create(&thr[i], NULL, vcpu_thread, &races[i]),
			    "pthread_create");
	TEST_ASSERT(!pthread_create(&repl, NULL, replacer_thread, NULL), "pthread_create");
	for (i = first_active(); i < nr_vcpus; i++)
		pthread_join(thr[i], NULL);
	pthread_join(repl, NULL);

	if (stats) {
		nvmx_stats_read(path, &st1);
		nvmx_stats_print("after", &st1);
	}
	fails += report_kicks("race", stats, per_vcpu0, &vs0, path);
	for (i = first_active(); i < nr_vcpus; i++) {
		r = &races[i];
		printf("# vcpu%d race: %lu checks (%lu after a replacement), %lu undecided, %lu stale\n",
		       i, r->checked, r->after, r->undecided, r->stale);
		if (r->stale) {
			ksft_test_result_fail("vcpu%d race: stale virtual-APIC page: L2 read TPR 0x%lx, host wrote 0x%lx (%lu of %lu checks stale)\n",
					      i, r->first_stale_cr8 << 4,
					      gen_cr8(r->first_stale_gen, i) << 4, r->stale,
					      r->checked);
			fails++;
		} else if (!r->after) {
			ksft_test_result_skip("vcpu%d race: the thread never replaced the page during a check\n",
					      i);
		} else {
			ksft_test_result_pass("vcpu%d race: %lu checks (%lu after a replacement), %lu rounds of replacements, L2 always saw a current page\n",
					      i, r->checked, r->after, race_total_gens);
		}
	}
	kvm_vm_free(vm);
	return fails;
}

int main(int argc, char *argv[])
{
	enum mode mode = MODE_DONTNEED;
	int opt, m, active;

	race_iters = 100;
	race_max_gens = 100;
	while ((opt = getopt(argc, argv, "v:m:li:n:h")) != -1) {
		switch (opt) {
		case 'v':
			nr_vcpus = atoi(optarg);
			if (nr_vcpus != 2 && nr_vcpus != 4)
				goto usage;
			break;
		case 'm':
			m = nvmx_name_index(mode_names, NR_MODES, optarg);
			if (m < 0)
				goto usage;
			mode = m;
			break;
		case 'l':
			last_only = true;
			break;
		case 'i':
			race_iters = strtoull(optarg, NULL, 0);
			break;
		case 'n':
			race_max_gens = strtoull(optarg, NULL, 0);
			break;
		default:
			goto usage;
		}
	}

	ksft_print_header();
	TEST_REQUIRE(kvm_cpu_has(X86_FEATURE_VMX));
	active = nr_vcpus - first_active();
	/* Per vCPU: the kicks check; per active vCPU: the page checks. */
	ksft_set_plan(nr_vcpus +
		      active * (mode == MODE_RACE ? 1 : mode == MODE_MIGRATE ? 4 : 3));
	printf("# %d vCPUs, %s, L1/L2 on %s\n", nr_vcpus, mode_names[mode],
	       last_only ? "the last vCPU only" : "every vCPU");
	if (mode == MODE_RACE)
		run_race();
	else
		run_deterministic(mode);
	ksft_finished();

usage:
	printf("usage: %s [-v 2|4] [-m dontneed|migrate|race] [-l] [-i race iterations] [-n race rounds]\n",
	       argv[0]);
	return KSFT_FAIL;
}
