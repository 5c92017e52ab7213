/* SPDX-License-Identifier: GPL-2.0 */
/*
 * nvmx-gpc shim ABI: the only interface between the Rust module and KVM.
 *
 * The C half of the module (rust/shim.c) is compiled against the patched
 * kernel and is the only code that includes KVM headers.  It registers the
 * provider table of <asm/kvm_nvmx_pages.h> with KVM; each entry of that
 * table forwards to one of the nvmx_rs_*() functions below, which the Rust
 * half implements.  In the other direction the Rust half reaches KVM only
 * through the nvmx_shim_*() functions.  KVM objects cross this boundary as
 * opaque pointers.
 *
 * Rust bindings are generated from this file by bindgen in rust/Kbuild with
 * NVMX_BINDGEN defined and no kernel include path, so nothing else leaks in.
 */
#ifndef NVMX_GPC_SHIM_H
#define NVMX_GPC_SHIM_H

#ifdef NVMX_BINDGEN
typedef unsigned int u32;
typedef unsigned long long u64;
typedef _Bool bool;
#else
#include <linux/types.h>
#endif

/* Bumped on every incompatible change of this header. */
#define NVMX_SHIM_ABI_VERSION 7

struct kvm;
struct kvm_vcpu;
struct kvm_memory_slot;
/* Per-VM object of the C shim: the VM's mmu_notifier and statistics file. */
struct nvmx_vm;
/* A kmalloc'ed rwlock_t, one lockdep class per page kind. */
struct nvmx_rwlock;

/* Which provider the module was loaded with (module parameter). */
enum nvmx_provider {
	NVMX_PROVIDER_CACHE,
	NVMX_PROVIDER_PASSTHROUGH,
};

/* A page resolved and mapped into the kernel for a cache. */
struct nvmx_pfn {
	u64 pfn;
	/* Kernel address of the page: the direct map, or a memremap(). */
	u64 kaddr;
	/* No struct page: kaddr came from memremap(). */
	bool unmanaged;
};

/*
 * Caches per vCPU and page kind ("ways"), one per L2 page the vCPU switches
 * between; a round robin over more pages than this misses on every map().
 */
#define NVMX_WAYS 8

/* enum nvmx_stat and enum nvmx_vcpu_stat: the debugfs statistics. */
#include "nvmx_gpc_stats.h"

/*
 * The five L1 pages, numbered as enum kvm_nvmx_page (shim.c checks that the
 * numbers agree at build time).
 */
enum nvmx_page {
	NVMX_PAGE_MSR_BITMAP,
	NVMX_PAGE_EVMCS,
	NVMX_PAGE_APIC_ACCESS,
	NVMX_PAGE_VIRTUAL_APIC,
	NVMX_PAGE_PI_DESC,
	NVMX_NR_PAGES,
};

/* --- Implemented by the C shim, called from Rust. --- */

/* Version of the ABI the C shim was compiled with. */
u32 nvmx_shim_abi_version(void);

/* Register / unregister the provider table with KVM (may sleep). */
int nvmx_shim_register(void);
void nvmx_shim_unregister(void);

/* Module parameters. */
u32 nvmx_shim_provider(void);
/*
 * Test only, to prove that the tests can fail; always false unless the
 * module is built with NVMX_TEST_KNOBS=1 (then module parameters
 * break_<name>=1, see shim.c): ignore mmu_notifier and memslot
 * invalidations (serve stale pages), drop every cached mapping at unmap()
 * (map and memremap on every nested VM-entry, as stock does), look caches
 * up by page kind alone (ignore a changed GPA or memslot generation), or
 * keep kicking a vCPU whose page left vmcs02.  The shim itself implements
 * the others: kick_target, nonblock, folio_ref, dirty_log.
 */
bool nvmx_shim_break_invalidation(void);
bool nvmx_shim_break_persistence(void);
bool nvmx_shim_break_lookup(void);
bool nvmx_shim_break_sticky_hw(void);
bool nvmx_shim_break_kick_target(void);
bool nvmx_shim_break_nonblock(void);
bool nvmx_shim_break_folio_ref(void);
bool nvmx_shim_break_dirty_log(void);

/*
 * The memslot of @gfn in the VM's (non-SMM) memslots and the userspace
 * address it maps @gfn to, for writing; NULL if there is none (no slot,
 * read-only).  kvm->srcu must be held; the memslot lives until it is
 * dropped.
 */
const struct kvm_memory_slot *nvmx_shim_lookup(struct kvm_vcpu *vcpu, u64 gfn, u64 *uhva);
/*
 * Whether @slot (from nvmx_shim_lookup(), same SRCU section) logs dirty
 * pages, i.e. whether kvm_vcpu_mark_page_dirty() of one of its gfns does
 * anything.  The flag changes only with a new memslot, so with a new
 * memslot generation.
 */
bool nvmx_shim_slot_logs_dirty(const struct kvm_memory_slot *slot);
/*
 * Resolve @gfn through @slot (from nvmx_shim_lookup(), same SRCU section)
 * like kvm_vcpu_map() does, taking a reference on the pfn if it is
 * refcounted, and map it into the kernel.  May sleep.
 */
int nvmx_shim_resolve(const struct kvm_memory_slot *slot, u64 gfn, struct nvmx_pfn *out);
/* Drop a pfn reference (from nvmx_shim_resolve() or nvmx_shim_get_pfn()). */
void nvmx_shim_put_pfn(u64 pfn, bool dirty);
/*
 * Take another reference on a pfn the caller knows to be mapped by the VM's
 * process (a valid cache entry).  True on success, or if the pfn is not
 * refcounted; false if the page is already being freed.
 */
bool nvmx_shim_get_pfn(u64 pfn);
/* Undo the kernel mapping of nvmx_shim_resolve() (memunmap() if unmanaged). */
void nvmx_shim_unmap_kaddr(const struct nvmx_pfn *p);
/* kvm_vcpu_mark_page_dirty() (nothing with break_dirty_log). */
void nvmx_shim_mark_dirty(struct kvm_vcpu *vcpu, u64 gfn);
/*
 * vcpu->vcpu_idx.  Not valid in vcpu_init(): KVM assigns it only after
 * kvm_arch_vcpu_create() succeeded; valid once the vCPU has run.
 */
u32 nvmx_shim_vcpu_idx(struct kvm_vcpu *vcpu);
/*
 * Invalidation of hardware-visible pages, in two steps, both called with
 * the module's per-VM lock held for write (which also serialises the VM's
 * reload mask):
 *
 * nvmx_shim_reload_mark() makes KVM_REQ_NESTED_PAGES_RELOAD pending on
 * @vcpu at once (no IPI) and notes @vcpu in the VM's reload mask.  Call it
 * before the invalidated cache can be seen by get(), so that KVM finds the
 * request pending whenever get() returns NULL for a mapped page.  @vcpu
 * must be a vCPU of @vm that has mapped the page (so its vcpu_idx is
 * valid) and is not yet freed.  @page and @gfn name the cache that
 * caused the kick, for the nvmx_gpc_kick trace event.
 *
 * nvmx_shim_reload_send() kicks the vCPUs in the mask out of L2 and waits
 * until none runs L2 with the old addresses (KVM_REQUEST_WAIT), then
 * clears the mask.  Needs IRQs enabled; does not sleep.  Because it runs
 * under the per-VM lock, which vcpu_free() takes before a vCPU goes away,
 * it never reaches a freed vCPU.
 */
void nvmx_shim_reload_mark(struct nvmx_vm *vm, struct kvm_vcpu *vcpu, u32 page, u64 gfn);
void nvmx_shim_reload_send(struct nvmx_vm *vm);
/*
 * Queue the VM's work item, which calls nvmx_rs_reap() in process context
 * (memunmap() of invalidated aliases may sleep).  Any context.
 */
void nvmx_shim_schedule_reap(struct nvmx_vm *vm);
void nvmx_shim_cond_resched(void);

/*
 * Trace events (rust/nvmx_gpc_trace.h), emitted only while enabled; a
 * kernel without CONFIG_TRACEPOINTS compiles them to nothing.  Any
 * context; @vcpu must be live.
 */
enum nvmx_miss_reason {
	NVMX_MISS_INACTIVE,
	NVMX_MISS_INVALID,
	NVMX_MISS_GPA,
	NVMX_MISS_GENERATION,
};

enum nvmx_inval_cause {
	NVMX_INVAL_NOTIFIER,
	NVMX_INVAL_MEMSLOT,
	NVMX_INVAL_TEARDOWN,
};

void nvmx_shim_trace_miss(struct kvm_vcpu *vcpu, u32 page, u64 gfn, u32 reason, u32 way);
void nvmx_shim_trace_refresh(struct kvm_vcpu *vcpu, u32 page, u64 gfn, u64 pfn, bool unmanaged,
			     u32 way, u32 retries);
void nvmx_shim_trace_reload(struct kvm_vcpu *vcpu, u32 page, u64 gfn);
void nvmx_shim_trace_invalidate(u64 start, u64 end, u32 cause, u32 caches, u32 kicks);

/*
 * rwlock_t for Rust.  @class selects the lockdep class: a page kind for a
 * cache's lock, NVMX_LOCK_VM for the per-VM lock (taken before cache locks).
 */
#define NVMX_LOCK_VM NVMX_NR_PAGES
struct nvmx_rwlock *nvmx_shim_rwlock_new(u32 class);
void nvmx_shim_rwlock_free(struct nvmx_rwlock *lock);
void nvmx_shim_read_lock(struct nvmx_rwlock *lock);
void nvmx_shim_read_unlock(struct nvmx_rwlock *lock);
void nvmx_shim_write_lock(struct nvmx_rwlock *lock);
void nvmx_shim_write_unlock(struct nvmx_rwlock *lock);

/* --- Implemented in Rust, called by the provider table in the C shim. --- */

/* @vm is the shim's object for the VM; *@rs receives the Rust state. */
int nvmx_rs_vm_init(struct nvmx_vm *vm, void **rs);
void nvmx_rs_vm_destroy(void *rs);
int nvmx_rs_vcpu_init(struct kvm_vcpu *vcpu, void *vm_priv, void **vcpu_priv);
void nvmx_rs_vcpu_free(struct kvm_vcpu *vcpu, void *vcpu_priv);
/*
 * What nvmx_rs_map() returns, in two registers: the page's kernel address
 * and pfn, or a negative errno in @kaddr (IS_ERR_VALUE()).
 */
struct nvmx_mapped {
	u64 kaddr;
	u64 pfn;
};

/*
 * The provider's map() with kvm->srcu held: @gen is the VM's memslot
 * generation, read by the shim in that SRCU section.  The shim records the
 * page in KVM's struct kvm_host_map.  For the eVMCS, KVM owns a page
 * reference until unmap(), which passes @pfn back; for the MSR bitmap,
 * map() returns with the cache's lock held shared and unmap() drops it
 * (KVM does not sleep in between).
 */
struct nvmx_mapped nvmx_rs_map(struct kvm_vcpu *vcpu, void *vcpu_priv, u32 page, u64 gfn,
			       u64 gen);
/*
 * The provider's unmap().  @gen is the VM's memslot generation, read by the
 * shim as for map().  KVM's nested VM-exit calls unmap() with kvm->srcu
 * held; the vCPU's reset, state ioctls and destruction may call it without,
 * and @gen may then be from just before a memslot update.
 */
void nvmx_rs_unmap(struct kvm_vcpu *vcpu, void *vcpu_priv, u32 page, u64 pfn, bool dirty,
		   u64 gen);
/* get(): the kernel address with the cache held shared until put(), or NULL. */
void *nvmx_rs_get(void *vcpu_priv, u32 page);
void nvmx_rs_put(void *vcpu_priv, u32 page);
/*
 * Whether the vCPU's last map() refreshed, and forget it: tells a hit from
 * a miss for the nvmx_gpc_hit event.  Only while that event is enabled.
 */
bool nvmx_rs_take_refreshed(void *vcpu_priv);
void nvmx_rs_memslots_updated(void *rs, u64 gen);
/*
 * The VM's mmu_notifier.  start never fails: it waits for the kicked vCPUs
 * also in a non-blockable range (the OOM reaper), as KVM's own notifier
 * waits for its TLB-flush request there; a start that failed would get no
 * end call from the core, and the core WARNs when a notifier that has an
 * invalidate_range_end fails a start.
 */
void nvmx_rs_mn_start(void *rs, u64 start, u64 end);
void nvmx_rs_mn_end(void *rs, u64 start, u64 end);
/* The VM's work item (nvmx_shim_schedule_reap()). */
void nvmx_rs_reap(void *rs);
void nvmx_rs_mn_release(void *rs);
/* Fill @out[NVMX_NR_STATS] with the VM's statistics. */
void nvmx_rs_vm_stats(void *rs, u64 *out);
/*
 * Fill @out[NVMX_NR_VCPU_STATS] for the @pos-th vCPU on the VM's list;
 * false if there is none.
 */
bool nvmx_rs_vcpu_stats(void *rs, u32 pos, u64 *out);
/*
 * Module-wide counts of what is alive right now, for leak checks: kernel
 * mappings made by nvmx_shim_resolve() and not yet undone, pfn references
 * taken and not yet dropped, and VM states.
 */
void nvmx_rs_live(u64 *mappings, u64 *refs, u64 *vms);

#endif /* NVMX_GPC_SHIM_H */
