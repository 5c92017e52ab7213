/* SPDX-License-Identifier: GPL-2.0 */
/*
 * nvmx-gpc statistics: the one list of what the module counts and
 * measures in debugfs.
 *
 * With the page cache loaded, every VM bound to it has a debugfs file
 * /sys/kernel/debug/nvmx_gpc/<pid>-<n> (<pid>: the VM's creator, <n>: a
 * module-wide serial).  It holds one "<name> <value>" line per entry of
 * NVMX_VM_STATS, in that order, then, for each vCPU whose caches are on the
 * VM's list, one "vcpu<idx>_<name> <value>" line per entry of
 * NVMX_VCPU_STATS (<idx>: vcpu->vcpu_idx).
 *
 * Each list is an X-macro: X(NAME, name), where NVMX_STAT_<NAME> or
 * NVMX_VCPU_STAT_<NAME> is the index in the arrays the Rust half fills
 * (nvmx_rs_vm_stats(), nvmx_rs_vcpu_stats()) and "name" is the debugfs
 * key.  The shim prints the keys from these lists, the selftests parse the
 * file with them (selftests/nvmx_stats.h), and the Rust half checks at
 * compile time that it fills every index (rust/ffi.rs).
 *
 * This header includes nothing, so that the selftests can use it as it is.
 */
#ifndef NVMX_GPC_STATS_H
#define NVMX_GPC_STATS_H

/*
 * Per VM, summed over its vCPUs:
 * hits            map() served by a cache without a refresh
 * misses          lookups that found no valid cache
 * refreshes       refreshes that installed a page
 * retries         refreshes that had to start again (raced an invalidation)
 * inval_notifier  valid caches invalidated by the mmu_notifier
 * inval_memslot   valid caches invalidated by a memslot update
 * inval_teardown  valid caches invalidated by VM or address-space teardown
 * memremap        pages without struct page installed with memremap()
 * memunmap        memunmap() of such pages
 * reloads         invalidations that required a vCPU kick and a reload
 * vcpus           vCPUs whose caches are on the VM's list (not a counter)
 */
#define NVMX_VM_STATS(X)		\
	X(HITS, hits)			\
	X(MISSES, misses)		\
	X(REFRESHES, refreshes)		\
	X(RETRIES, retries)		\
	X(INVAL_NOTIFIER, inval_notifier) \
	X(INVAL_MEMSLOT, inval_memslot)	\
	X(INVAL_TEARDOWN, inval_teardown) \
	X(MEMREMAP, memremap)		\
	X(MEMUNMAP, memunmap)		\
	X(RELOADS, reloads)		\
	X(VCPUS, vcpus)

/*
 * Per vCPU:
 * kicks           reload requests made to this vCPU
 * refreshes       refreshes of this vCPU's caches
 * hits            hits of this vCPU's caches
 */
#define NVMX_VCPU_STATS(X)		\
	X(KICKS, kicks)			\
	X(REFRESHES, refreshes)		\
	X(HITS, hits)

#define NVMX_STAT_ENUM(NAME, name)	NVMX_STAT_##NAME,
enum nvmx_stat {
	NVMX_VM_STATS(NVMX_STAT_ENUM)
	NVMX_NR_STATS,
};
#undef NVMX_STAT_ENUM

/* Index 0 of a vCPU's array is its vcpu->vcpu_idx, which names its lines. */
#define NVMX_VCPU_STAT_ENUM(NAME, name)	NVMX_VCPU_STAT_##NAME,
enum nvmx_vcpu_stat {
	NVMX_VCPU_STAT_IDX,
	NVMX_VCPU_STATS(NVMX_VCPU_STAT_ENUM)
	NVMX_NR_VCPU_STATS,
};
#undef NVMX_VCPU_STAT_ENUM

/*
 * The per-operation benchmark, /sys/kernel/debug/nvmx_gpc/bench (see
 * rust/shim.c): one "<name> <ticks> <n>" line per loop, in this order.
 * stock           kvm_vcpu_map() + kvm_vcpu_unmap()
 * hit             the cache's map() + unmap() on a hit
 * hit_msr         the same for the MSR bitmap kind, whose map() leaves the
 *                 cache's lock held shared until unmap()
 * hit_dirty       the hit with unmap(dirty), as KVM unmaps the virtual-APIC
 *                 page: the dirty mark (skipped if the memslot does not log
 *                 dirty pages)
 * miss            the cache's map() + unmap(), each map() a refresh
 * get_put         the cache's get() + put()
 */
#define NVMX_BENCH_OPS(X)		\
	X(STOCK, stock)			\
	X(HIT, hit)			\
	X(HIT_MSR, hit_msr)		\
	X(HIT_DIRTY, hit_dirty)		\
	X(MISS, miss)			\
	X(GET_PUT, get_put)

#define NVMX_BENCH_ENUM(NAME, name)	NVMX_BENCH_##NAME,
enum nvmx_bench_op {
	NVMX_BENCH_OPS(NVMX_BENCH_ENUM)
	NVMX_NR_BENCH,
};
#undef NVMX_BENCH_ENUM

#endif /* NVMX_GPC_STATS_H */
