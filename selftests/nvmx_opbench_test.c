// SPDX-License-Identifier: GPL-2.0-only
/*
 * nvmx_opbench_test: the cost of one page operation, stock KVM against the
 * nvmx_gpc cache, in one run, through the module's
 * /sys/kernel/debug/nvmx_gpc/bench (rust/shim.c, "The per-operation
 * benchmark").  For each kind of memory it creates a VM with one vCPU
 * and two virtual-APIC candidate pages A and B, and has the module time,
 * n times each:
 *
 *   stock    kvm_vcpu_map() + kvm_vcpu_unmap() of A
 *   hit      the cache's map() + unmap() of A
 *   hit_msr  the same with A as the MSR bitmap (a hit that holds the
 *            cache's lock shared from map() to unmap())
 *   hit_dirty the hit with unmap(dirty), as KVM unmaps the virtual-APIC
 *            page: nothing to mark while the memslot logs no dirty pages
 *   miss     map() + unmap() of A and the 8 pages from B in turn, one page
 *            more than the cache's ways (every map() refreshes)
 *   get_put  get() + put() while A is mapped
 *
 * Memory (arguments, default all three in turn): managed (4 KiB anonymous
 * pages, MADV_NOHUGEPAGE), thp (tail pages of a transparent huge page),
 * unmanaged (/dev/mem above the host's mem=, -a: where; no struct page).
 *
 * The module's statistics must show that the loops took the paths they
 * are named after: at least 2n more hits (hit, hit_msr), at least n more
 * refreshes, and on unmanaged memory at least n more memremap() calls.
 * Then the memslot logs dirty pages and the loops run again: A, which only
 * hit_dirty's unmap() writes, must be in the dirty log, and no other page
 * may be (the cache skips the mark only while the memslot does not log).
 * Without the module, or with provider=passthrough, the test skips.
 *
 * The host prints one line per measurement for make bench:
 *   @@RESULT bench=op_map_unmap variant=hit memory=thp phase=cache value=<ticks per pair> unit=ticks
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/bitmap.h>

#include "kvm_util.h"
#include "processor.h"

#include "nvmx_devmem.h"
#include "nvmx_nested.h"
#include "nvmx_stats.h"

#include "kselftest.h"

#define BENCH_FILE	NVMX_STATS_DIR "/bench"
#define SLOT		10
#define SLOT_GPA	0xc0000000ul
/* Two huge pages, so that one is whole whatever the host alignment. */
#define SLOT_SIZE	(4ul << 20)
/* A and B: tail pages of the first huge page (thp), or just two pages. */
#define PAGE_A_OFFSET	0x5000ul
#define PAGE_B_OFFSET	0x6000ul
/* rust/cache.rs WAYS: B is that many pages, for a miss on every map(). */
#define NR_B		8

enum memory { MEM_MANAGED, MEM_THP, MEM_UNMANAGED, NR_MEM };

static const char *const mem_names[NR_MEM] = {
	[MEM_MANAGED] = "managed",
	[MEM_THP] = "thp",
	[MEM_UNMANAGED] = "unmanaged",
};

/* The loops of the module's bench file (include/nvmx_gpc_stats.h). */
#define BENCH_OP_NAME(NAME, name)	#name,
static const char *const op_names[NVMX_NR_BENCH] = {
	NVMX_BENCH_OPS(BENCH_OP_NAME)
};
#undef BENCH_OP_NAME

/* The /dev/mem mapping behind an unmanaged slot (not a kvm_util region). */
static void *devmem_hva;
#define DEVMEM_PAGES	(PAGE_B_OFFSET / PAGE_SIZE + NR_B)

/* The memslot holding A and B, backed as @mem says. */
static void add_slot(struct kvm_vm *vm, enum memory mem, uint64_t phys)
{
	uint64_t npages = SLOT_SIZE / getpagesize();
	uint8_t *hva;
	long kb;

	switch (mem) {
	case MEM_UNMANAGED:
		/* Only A and B: RAM above mem= may be small. */
		devmem_hva = nvmx_add_devmem_slot(vm, SLOT, SLOT_GPA, DEVMEM_PAGES, phys);
		return;
	case MEM_THP:
		__TEST_REQUIRE(thp_configured(), "no transparent hugepages");
		vm_userspace_mem_region_add(vm, VM_MEM_SRC_ANONYMOUS_THP, SLOT_GPA, SLOT,
					    npages, 0);
		break;
	case MEM_MANAGED:
		vm_userspace_mem_region_add(vm, VM_MEM_SRC_ANONYMOUS, SLOT_GPA, SLOT,
					    npages, 0);
		hva = addr_gpa2hva(vm, SLOT_GPA);
		TEST_ASSERT(!madvise(hva, SLOT_SIZE, MADV_NOHUGEPAGE),
			    "MADV_NOHUGEPAGE: %s", strerror(errno));
		break;
	default:
		TEST_FAIL("memory %d", mem);
	}
	hva = addr_gpa2hva(vm, SLOT_GPA);
	memset(hva, 0, SLOT_SIZE);
	kb = nvmx_smaps_kb(hva, "AnonHugePages:");
	if (mem == MEM_THP)
		__TEST_REQUIRE(kb >= 2048, "no huge page backs the slot (AnonHugePages %ld kB)",
			       kb);
	else
		TEST_ASSERT(kb == 0, "managed slot has %ld kB of huge pages", kb);
}

/* Run the module's loops; false (with errno) if the module refused. */
static bool run_bench(uint64_t a, uint64_t b, unsigned int n, uint64_t ticks[NVMX_NR_BENCH])
{
	char cmd[80], name[32];
	unsigned long long t;
	unsigned int got = 0, nn;
	FILE *f;
	int fd, len, i;

	fd = open(BENCH_FILE, O_WRONLY);
	if (fd < 0)
		return false;
	len = snprintf(cmd, sizeof(cmd), "%lx %lx %u\n", a, b, n);
	if (write(fd, cmd, len) != len) {
		i = errno;
		close(fd);
		errno = i;
		return false;
	}
	close(fd);

	f = fopen(BENCH_FILE, "r");
	TEST_ASSERT(f, "%s: %s", BENCH_FILE, strerror(errno));
	while (fscanf(f, "%31s %llu %u", name, &t, &nn) == 3) {
		TEST_ASSERT(nn == n, "%s: %s ran %u times, not %u", BENCH_FILE, name, nn, n);
		i = nvmx_name_index(op_names, NVMX_NR_BENCH, name);
		if (i >= 0) {
			ticks[i] = t;
			got |= 1u << i;
		}
	}
	fclose(f);
	TEST_ASSERT(got == (1u << NVMX_NR_BENCH) - 1, "%s lacks results (mask 0x%x)", BENCH_FILE, got);
	return true;
}

static void set_slot_flags(struct kvm_vm *vm, enum memory mem, uint32_t flags)
{
	if (mem == MEM_UNMANAGED)
		vm_set_user_memory_region(vm, SLOT, flags, SLOT_GPA, DEVMEM_PAGES * PAGE_SIZE,
					  devmem_hva);
	else
		vm_mem_region_set_flags(vm, SLOT, flags);
}

/*
 * With the memslot logging dirty pages, the loops again (few pairs): the
 * dirty log must hold A, which only hit_dirty's unmap() marks, and nothing
 * else.  Returns the number of failed checks.
 */
static int check_dirty_log(struct kvm_vm *vm, enum memory mem, uint64_t a, uint64_t b)
{
	uint64_t ticks[NVMX_NR_BENCH], i, nbits = SLOT_SIZE / PAGE_SIZE, set = 0;
	uint64_t bit_a = (a - SLOT_GPA) / PAGE_SIZE;
	unsigned long *bmap = bitmap_zalloc(nbits);
	bool dirty_a;

	set_slot_flags(vm, mem, KVM_MEM_LOG_DIRTY_PAGES);
	/* Clears the log: nothing was marked before logging began. */
	kvm_vm_get_dirty_log(vm, SLOT, bmap);
	TEST_ASSERT(run_bench(a, b, 4, ticks), "%s with dirty logging: %s", BENCH_FILE,
		    strerror(errno));
	memset(bmap, 0, nbits / 8);
	kvm_vm_get_dirty_log(vm, SLOT, bmap);
	set_slot_flags(vm, mem, 0);

	dirty_a = test_bit(bit_a, bmap);
	for (i = 0; i < nbits; i++)
		set += test_bit(i, bmap) && i != bit_a;
	free(bmap);
	if (!dirty_a || set) {
		ksft_print_msg("%s: dirty log after unmap(dirty) of A: A %s, %lu other pages\n",
			       mem_names[mem], dirty_a ? "dirty" : "NOT dirty", set);
		return 1;
	}
	printf("# %s: dirty log: A dirty after unmap(dirty), no other page\n", mem_names[mem]);
	return 0;
}

/* One memory kind: returns the number of failed checks. */
static int bench_memory(enum memory mem, unsigned int n, uint64_t phys)
{
	uint64_t ticks[NVMX_NR_BENCH] = {}, a = SLOT_GPA + PAGE_A_OFFSET, b = SLOT_GPA + PAGE_B_OFFSET;
	struct nvmx_stats st0, st1;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	char path[PATH_MAX];
	int fails = 0, i;

	vm = vm_create_with_one_vcpu(&vcpu, NULL);
	add_slot(vm, mem, phys);
	__TEST_REQUIRE(nvmx_stats_find(path, sizeof(path)),
		       "no nvmx_gpc statistics: stock KVM or pass-through provider");
	nvmx_stats_read(path, &st0);
	if (!run_bench(a, b, n, ticks)) {
		__TEST_REQUIRE(errno != ENOENT && errno != ENODEV,
			       "%s: %s (module not loaded, or not provider=cache)", BENCH_FILE,
			       strerror(errno));
		TEST_FAIL("%s: %s", BENCH_FILE, strerror(errno));
	}
	nvmx_stats_read(path, &st1);
	fails += check_dirty_log(vm, mem, a, b);
	kvm_vm_free(vm);

	for (i = 0; i < NVMX_NR_BENCH; i++) {
		printf("@@RESULT bench=%s variant=%s memory=%s phase=%s value=%.1f unit=ticks\n",
		       i == NVMX_BENCH_GET_PUT ? "op_get_put" : "op_map_unmap",
		       i == NVMX_BENCH_GET_PUT ? "hit" : op_names[i], mem_names[mem],
		       i == NVMX_BENCH_STOCK ? "stock" : "cache", (double)ticks[i] / n);
	}
	printf("# %s: per pair: stock %.1f, hit %.1f, hit_msr %.1f, hit_dirty %.1f, miss %.1f, get+put %.1f ticks; stock/hit %.1fx\n",
	       mem_names[mem], (double)ticks[NVMX_BENCH_STOCK] / n, (double)ticks[NVMX_BENCH_HIT] / n,
	       (double)ticks[NVMX_BENCH_HIT_MSR] / n, (double)ticks[NVMX_BENCH_HIT_DIRTY] / n,
	       (double)ticks[NVMX_BENCH_MISS] / n, (double)ticks[NVMX_BENCH_GET_PUT] / n,
	       (double)ticks[NVMX_BENCH_STOCK] / (ticks[NVMX_BENCH_HIT] ? ticks[NVMX_BENCH_HIT] : 1));
	nvmx_stats_print("before", &st0);
	nvmx_stats_print("after", &st1);

	for (i = 0; i < NVMX_NR_BENCH; i++) {
		if (!ticks[i]) {
			ksft_print_msg("%s: %s took no time\n", mem_names[mem], op_names[i]);
			fails++;
		}
	}
	if (st1.hits - st0.hits < 3 * n || st1.refreshes - st0.refreshes < n) {
		ksft_print_msg("%s: hits +%lu, refreshes +%lu: want at least %u (the three hit loops) and %u\n",
			       mem_names[mem], st1.hits - st0.hits,
			       st1.refreshes - st0.refreshes, 3 * n, n);
		fails++;
	}
	if (mem == MEM_UNMANAGED && st1.memremap - st0.memremap < n) {
		ksft_print_msg("unmanaged: memremap +%lu over %u misses\n",
			       st1.memremap - st0.memremap, n);
		fails++;
	}
	if (mem != MEM_UNMANAGED && st1.memremap != st0.memremap) {
		ksft_print_msg("%s: memremap +%lu on memory with struct page\n",
			       mem_names[mem], st1.memremap - st0.memremap);
		fails++;
	}
	ksft_test_result(!fails, "%s: %u pairs each; the statistics match the paths; the dirty log has A\n",
			 mem_names[mem], n);
	return fails;
}

static void usage(const char *name)
{
	printf("usage: %s [-n pairs] [-a phys] [managed|thp|unmanaged]...\n", name);
	exit(KSFT_FAIL);
}

int main(int argc, char *argv[])
{
	uint64_t phys = 0x40000000ul;
	unsigned int n = 1000, nr = 0;
	int opt, i, mems[NR_MEM];

	while ((opt = getopt(argc, argv, "n:a:h")) != -1) {
		if (opt == 'n')
			n = strtoul(optarg, NULL, 0);
		else if (opt == 'a')
			phys = strtoull(optarg, NULL, 0);
		else
			usage(argv[0]);
	}
	/* The memory kinds to measure, in order; all three by default. */
	for (i = optind; i < argc && nr < NR_MEM; i++) {
		mems[nr] = nvmx_name_index(mem_names, NR_MEM, argv[i]);
		if (mems[nr++] < 0)
			usage(argv[0]);
	}
	if (i < argc || !n)
		usage(argv[0]);
	for (i = 0; !nr && i < NR_MEM; i++)
		mems[i] = i;
	nr = nr ? nr : NR_MEM;

	ksft_print_header();
	TEST_REQUIRE(kvm_cpu_has(X86_FEATURE_VMX));
	ksft_set_plan(nr);
	for (i = 0; i < (int)nr; i++)
		bench_memory(mems[i], n, phys);
	ksft_finished();
}
