// SPDX-License-Identifier: GPL-2.0
/*
 * C half of the nvmx-gpc module.  Everything that needs KVM headers, C
 * inline functions or C-only macros lives here, behind
 * include/nvmx_gpc_shim.h; see that header for the division of labour.
 *
 * Per VM this file owns a struct nvmx_vm: the VM's own mmu_notifier, whose
 * callbacks forward to Rust, and the VM's statistics file in debugfs
 * (/sys/kernel/debug/nvmx_gpc/<pid>-<serial>).  The Rust state hangs off
 * nvmx_vm->rs.  /sys/kernel/debug/nvmx_gpc/live counts the kernel mappings
 * and VM states alive module-wide, for leak checks, and
 * /sys/kernel/debug/nvmx_gpc/bench times single operations (see "The
 * per-operation benchmark" below).
 */
#include <linux/atomic.h>
#include <linux/bitmap.h>
#include <linux/build_bug.h>
#include <linux/debugfs.h>
#include <linux/err.h>
#include <linux/io.h>
#include <linux/kvm_host.h>
#include <linux/mmu_notifier.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/sched.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/workqueue.h>
#include <asm/kvm_nvmx_pages.h>
#include <asm/msr.h>

#include "nvmx_gpc_shim.h"

#define CREATE_TRACE_POINTS
#include "nvmx_gpc_trace.h"

MODULE_IMPORT_NS(KVM_NVMX_PAGES);

static char *provider = "cache";
module_param(provider, charp, 0444);
MODULE_PARM_DESC(provider, "Nested page provider: cache (default) or passthrough");

#ifdef NVMX_TEST_KNOBS
/*
 * Deliberately broken caches, to prove that the tests catch each bug they
 * are written for.  Only in a build with NVMX_TEST_KNOBS=1 (the test bed's
 * second module build, scripts/build-module.sh); a default build has no
 * such parameter and every nvmx_shim_break_*() is false.
 */
#define NVMX_BREAK(name, desc)						\
	static bool break_##name;					\
	module_param(break_##name, bool, 0444);				\
	MODULE_PARM_DESC(break_##name, "TEST ONLY: " desc);		\
	bool nvmx_shim_break_##name(void)				\
	{								\
		return READ_ONCE(break_##name);				\
	}
#else
#define NVMX_BREAK(name, desc)						\
	bool nvmx_shim_break_##name(void)				\
	{								\
		return false;						\
	}
#endif

NVMX_BREAK(invalidation, "ignore mmu_notifier and memslot invalidations (serves stale pages)")
NVMX_BREAK(persistence, "drop every cached mapping at unmap (remap on each nested VM-entry)")
NVMX_BREAK(lookup, "look cached pages up by kind alone, ignoring a changed GPA")
NVMX_BREAK(kick_target, "make every reload request to vCPU 0 (vcpu_idx read too early)")
NVMX_BREAK(nonblock, "fail non-blockable invalidations with -EAGAIN (OOM reaper)")
NVMX_BREAK(folio_ref, "take page references with get_page_unless_zero() (THP tail pages)")
NVMX_BREAK(sticky_hw, "keep kicking a vCPU for a page after it left L2 (the claim sticky)")
NVMX_BREAK(dirty_log, "never mark a page dirty at unmap or put (the dirty log misses writes)")

/* nvmx_shim_resolve() relies on a direct map covering all of RAM. */
static_assert(IS_ENABLED(CONFIG_X86_64));
static_assert(NVMX_PAGE_MSR_BITMAP == (int)KVM_NVMX_PAGE_MSR_BITMAP);
static_assert(NVMX_PAGE_EVMCS == (int)KVM_NVMX_PAGE_EVMCS);
static_assert(NVMX_PAGE_APIC_ACCESS == (int)KVM_NVMX_PAGE_APIC_ACCESS);
static_assert(NVMX_PAGE_VIRTUAL_APIC == (int)KVM_NVMX_PAGE_VIRTUAL_APIC);
static_assert(NVMX_PAGE_PI_DESC == (int)KVM_NVMX_PAGE_PI_DESC);
static_assert(NVMX_NR_PAGES == (int)KVM_NVMX_NR_PAGES);

struct nvmx_vm {
	struct mmu_notifier mn;
	struct kvm *kvm;
	struct dentry *stats;
	void *rs;
	/*
	 * vCPUs to kick, by vcpu_idx: KVM_MAX_VCPUS bits, the size
	 * kvm_make_vcpus_request_mask() walks.  Protected by the Rust
	 * per-VM lock (see nvmx_shim_reload_mark()).
	 */
	unsigned long *reload_mask;
	/* Undoes memremap() aliases of invalidated caches: nvmx_rs_reap(). */
	struct work_struct reap_work;
};

struct nvmx_rwlock {
	rwlock_t lock;
};

static struct dentry *nvmx_debugfs_dir;
static atomic_long_t nvmx_vm_serial;

u32 nvmx_shim_abi_version(void)
{
	return NVMX_SHIM_ABI_VERSION;
}

u32 nvmx_shim_provider(void)
{
	return strcmp(provider, "passthrough") ? NVMX_PROVIDER_CACHE :
						 NVMX_PROVIDER_PASSTHROUGH;
}

const struct kvm_memory_slot *nvmx_shim_lookup(struct kvm_vcpu *vcpu, u64 gfn, u64 *uhva)
{
	/* The VM's memslots, not the vCPU's SMM view, as kvm_vcpu_map(). */
	struct kvm_memory_slot *slot = gfn_to_memslot(vcpu->kvm, gfn);
	/* For writing, as gfn_to_hva(): an error for no or a read-only slot. */
	unsigned long hva = gfn_to_hva_memslot(slot, gfn);

	if (kvm_is_error_hva(hva))
		return NULL;
	*uhva = hva;
	return slot;
}

bool nvmx_shim_slot_logs_dirty(const struct kvm_memory_slot *slot)
{
	/* What mark_page_dirty_in_slot() tests before it does anything. */
	return kvm_slot_dirty_track_enabled(slot);
}

/* The same lookup and the same failure codes as kvm_vcpu_map() in 6.12. */
int nvmx_shim_resolve(const struct kvm_memory_slot *slot, u64 gfn, struct nvmx_pfn *out)
{
	kvm_pfn_t pfn;
	void *kaddr;

	pfn = gfn_to_pfn_memslot(slot, gfn);
	if (is_error_noslot_pfn(pfn))
		return -EINVAL;

	if (pfn_valid(pfn)) {
		/*
		 * kvm_vcpu_map() uses kmap(); on x86_64, the only architecture
		 * this module is for, that is the direct map, which stays valid
		 * for as long as the page is not freed.
		 */
		kaddr = page_address(pfn_to_page(pfn));
		out->unmanaged = false;
	} else {
		kaddr = memremap(pfn_to_hpa(pfn), PAGE_SIZE, MEMREMAP_WB);
		out->unmanaged = true;
	}
	if (!kaddr) {
		kvm_release_pfn_clean(pfn);
		return -EFAULT;
	}
	out->pfn = pfn;
	out->kaddr = (unsigned long)kaddr;
	return 0;
}

void nvmx_shim_put_pfn(u64 pfn, bool dirty)
{
	if (dirty)
		kvm_release_pfn_dirty(pfn);
	else
		kvm_release_pfn_clean(pfn);
}

/* The rule of kvm_pfn_to_refcounted_page(), which is not exported. */
static struct page *nvmx_refcounted_page(kvm_pfn_t pfn)
{
	struct page *page;

	if (!pfn_valid(pfn))
		return NULL;
	page = pfn_to_page(pfn);
	if (!PageReserved(page) || is_zero_pfn(pfn) || is_zone_device_page(page))
		return page;
	return NULL;
}

bool nvmx_shim_get_pfn(u64 pfn)
{
	struct page *page = nvmx_refcounted_page(pfn);

	/*
	 * The reference lives on the folio: a tail page of a THP or hugetlb
	 * folio has a zero refcount of its own, so get_page_unless_zero()
	 * would always fail there.  put_page() drops it from the folio too.
	 */
	if (page && nvmx_shim_break_folio_ref())
		return get_page_unless_zero(page);
	return !page || folio_try_get(page_folio(page));
}

void nvmx_shim_unmap_kaddr(const struct nvmx_pfn *p)
{
	/* A direct-map address needs no undoing. */
	if (p->unmanaged)
		memunmap((void *)(unsigned long)p->kaddr);
}

void nvmx_shim_mark_dirty(struct kvm_vcpu *vcpu, u64 gfn)
{
	if (nvmx_shim_break_dirty_log())
		return;
	kvm_vcpu_mark_page_dirty(vcpu, gfn);
}

u32 nvmx_shim_vcpu_idx(struct kvm_vcpu *vcpu)
{
	return vcpu->vcpu_idx;
}

void nvmx_shim_reload_mark(struct nvmx_vm *vm, struct kvm_vcpu *vcpu, u32 page, u64 gfn)
{
	if (nvmx_shim_break_kick_target())
		vcpu = kvm_get_vcpu(vm->kvm, 0) ?: vcpu;
	kvm_make_request(KVM_REQ_NESTED_PAGES_RELOAD, vcpu);
	__set_bit(vcpu->vcpu_idx, vm->reload_mask);
	trace_nvmx_gpc_kick(vcpu->vcpu_idx, page, gfn);
}

void nvmx_shim_trace_miss(struct kvm_vcpu *vcpu, u32 page, u64 gfn, u32 reason, u32 way)
{
	trace_nvmx_gpc_miss(vcpu->vcpu_idx, page, gfn, reason, way);
}

void nvmx_shim_trace_refresh(struct kvm_vcpu *vcpu, u32 page, u64 gfn, u64 pfn, bool unmanaged,
			     u32 way, u32 retries)
{
	trace_nvmx_gpc_refresh(vcpu->vcpu_idx, page, gfn, pfn, unmanaged, way, retries);
}

void nvmx_shim_trace_reload(struct kvm_vcpu *vcpu, u32 page, u64 gfn)
{
	trace_nvmx_gpc_reload(vcpu->vcpu_idx, page, gfn);
}

void nvmx_shim_trace_invalidate(u64 start, u64 end, u32 cause, u32 caches, u32 kicks)
{
	trace_nvmx_gpc_invalidate(start, end, cause, caches, kicks);
}

static void nvmx_reap_work(struct work_struct *work)
{
	struct nvmx_vm *vm = container_of(work, struct nvmx_vm, reap_work);

	nvmx_rs_reap(vm->rs);
}

void nvmx_shim_schedule_reap(struct nvmx_vm *vm)
{
	schedule_work(&vm->reap_work);
}

void nvmx_shim_reload_send(struct nvmx_vm *vm)
{
	if (bitmap_empty(vm->reload_mask, KVM_MAX_VCPUS))
		return;
	kvm_nvmx_request_pages_reload(vm->kvm, vm->reload_mask);
	bitmap_zero(vm->reload_mask, KVM_MAX_VCPUS);
}

void nvmx_shim_cond_resched(void)
{
	cond_resched();
}

/*
 * One lockdep class per page kind, because a PI-descriptor read nests a
 * virtual-APIC read, plus NVMX_LOCK_VM for the per-VM lock.
 */
static struct lock_class_key nvmx_rwlock_keys[NVMX_LOCK_VM + 1];

struct nvmx_rwlock *nvmx_shim_rwlock_new(u32 class)
{
	struct nvmx_rwlock *l;

	if (class > NVMX_LOCK_VM)
		return NULL;
	l = kzalloc(sizeof(*l), GFP_KERNEL_ACCOUNT);
	if (l) {
		rwlock_init(&l->lock);
		lockdep_set_class(&l->lock, &nvmx_rwlock_keys[class]);
	}
	return l;
}

void nvmx_shim_rwlock_free(struct nvmx_rwlock *l)
{
	kfree(l);
}

void nvmx_shim_read_lock(struct nvmx_rwlock *l)
{
	read_lock(&l->lock);
}

void nvmx_shim_read_unlock(struct nvmx_rwlock *l)
{
	read_unlock(&l->lock);
}

void nvmx_shim_write_lock(struct nvmx_rwlock *l)
{
	write_lock(&l->lock);
}

void nvmx_shim_write_unlock(struct nvmx_rwlock *l)
{
	write_unlock(&l->lock);
}

/* --- The VM's own mmu_notifier. --- */

static int nvmx_mn_start(struct mmu_notifier *mn, const struct mmu_notifier_range *range)
{
	struct nvmx_vm *vm = container_of(mn, struct nvmx_vm, mn);

	if (nvmx_shim_break_nonblock() && !mmu_notifier_range_blockable(range))
		return -EAGAIN;
	/* Also for !mmu_notifier_range_blockable(range): see the header. */
	nvmx_rs_mn_start(vm->rs, range->start, range->end);
	return 0;
}

static void nvmx_mn_end(struct mmu_notifier *mn, const struct mmu_notifier_range *range)
{
	struct nvmx_vm *vm = container_of(mn, struct nvmx_vm, mn);

	nvmx_rs_mn_end(vm->rs, range->start, range->end);
}

static void nvmx_mn_release(struct mmu_notifier *mn, struct mm_struct *mm)
{
	struct nvmx_vm *vm = container_of(mn, struct nvmx_vm, mn);

	nvmx_rs_mn_release(vm->rs);
}

static const struct mmu_notifier_ops nvmx_mn_ops = {
	.invalidate_range_start = nvmx_mn_start,
	.invalidate_range_end = nvmx_mn_end,
	.release = nvmx_mn_release,
};

/* --- Statistics in debugfs. --- */

#define NVMX_STAT_NAME(NAME, name)	#name,
static const char *const nvmx_stat_names[NVMX_NR_STATS] = {
	NVMX_VM_STATS(NVMX_STAT_NAME)
};
#undef NVMX_STAT_NAME

#define NVMX_VCPU_STAT_NAME(NAME, name)	#name,
/* In the order of enum nvmx_vcpu_stat; "idx" names the lines, it has none. */
static const char *const nvmx_vcpu_stat_names[NVMX_NR_VCPU_STATS] = {
	"idx", NVMX_VCPU_STATS(NVMX_VCPU_STAT_NAME)
};
#undef NVMX_VCPU_STAT_NAME

static int nvmx_stats_show(struct seq_file *m, void *unused)
{
	struct nvmx_vm *vm = m->private;
	u64 val[NVMX_NR_STATS] = {}, v[NVMX_NR_VCPU_STATS];
	u32 pos;
	int i;

	nvmx_rs_vm_stats(vm->rs, val);
	for (i = 0; i < NVMX_NR_STATS; i++)
		seq_printf(m, "%s %llu\n", nvmx_stat_names[i], val[i]);
	for (pos = 0; nvmx_rs_vcpu_stats(vm->rs, pos, v); pos++) {
		for (i = NVMX_VCPU_STAT_IDX + 1; i < NVMX_NR_VCPU_STATS; i++)
			seq_printf(m, "vcpu%llu_%s %llu\n", v[NVMX_VCPU_STAT_IDX],
				   nvmx_vcpu_stat_names[i], v[i]);
	}
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(nvmx_stats);

static int nvmx_live_show(struct seq_file *m, void *unused)
{
	u64 mappings, refs, vms;

	nvmx_rs_live(&mappings, &refs, &vms);
	seq_printf(m, "mappings %llu\nrefs %llu\nvms %llu\n", mappings, refs, vms);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(nvmx_live);

/* --- The provider table. --- */

static void nvmx_bench_track(struct kvm_vcpu *vcpu, void *vcpu_priv);
static void nvmx_bench_forget(struct kvm_vcpu *vcpu);

static int shim_vm_init(struct kvm *kvm, void **vm_priv)
{
	struct nvmx_vm *vm;
	char name[32];
	int r;

	vm = kzalloc(sizeof(*vm), GFP_KERNEL_ACCOUNT);
	if (!vm)
		return -ENOMEM;
	vm->kvm = kvm;
	INIT_WORK(&vm->reap_work, nvmx_reap_work);
	vm->reload_mask = bitmap_zalloc(KVM_MAX_VCPUS, GFP_KERNEL_ACCOUNT);
	if (!vm->reload_mask) {
		r = -ENOMEM;
		goto free;
	}

	r = nvmx_rs_vm_init(vm, &vm->rs);
	if (r)
		goto free;

	/* VM creation runs in the VM owner's context: kvm->mm == current->mm. */
	vm->mn.ops = &nvmx_mn_ops;
	r = mmu_notifier_register(&vm->mn, kvm->mm);
	if (r)
		goto rs;

	snprintf(name, sizeof(name), "%d-%ld", task_pid_nr(current),
		 atomic_long_inc_return(&nvmx_vm_serial));
	vm->stats = debugfs_create_file(name, 0444, nvmx_debugfs_dir, vm, &nvmx_stats_fops);
	*vm_priv = vm;
	return 0;

rs:
	nvmx_rs_vm_destroy(vm->rs);
free:
	bitmap_free(vm->reload_mask);
	kfree(vm);
	return r;
}

static void shim_vm_destroy(struct kvm *kvm, void *vm_priv)
{
	struct nvmx_vm *vm = vm_priv;

	/* Waits for readers of the file and for running notifier callbacks. */
	debugfs_remove(vm->stats);
	mmu_notifier_unregister(&vm->mn, kvm->mm);
	/* Nothing queues it any more: no notifier, no memslot update. */
	cancel_work_sync(&vm->reap_work);
	nvmx_rs_vm_destroy(vm->rs);
	bitmap_free(vm->reload_mask);
	kfree(vm);
}

static int shim_vcpu_init(struct kvm_vcpu *vcpu, void *vm_priv, void **vcpu_priv)
{
	struct nvmx_vm *vm = vm_priv;
	int r;

	r = nvmx_rs_vcpu_init(vcpu, vm->rs, vcpu_priv);
	if (!r)
		nvmx_bench_track(vcpu, *vcpu_priv);
	return r;
}

static void shim_vcpu_free(struct kvm_vcpu *vcpu, void *vcpu_priv)
{
	nvmx_bench_forget(vcpu);
	nvmx_rs_vcpu_free(vcpu, vcpu_priv);
}

/*
 * KVM's record of a mapping the cache made: hva, pfn and gfn.  KVM sets
 * map->page itself, to a poison value that keeps the map away from the
 * stock kvm_vcpu_unmap() (nothing of the cache's is a page reference KVM
 * could release).
 */
static __always_inline int __shim_map(struct kvm_vcpu *vcpu, void *vcpu_priv,
				      enum kvm_nvmx_page page, gfn_t gfn,
				      struct kvm_host_map *map)
{
	struct nvmx_mapped m;

	map->gfn = gfn;
	/*
	 * KVM calls map() with kvm->srcu held, as the read requires.  The
	 * address space is the constant 0, as kvm_memslots() has it, without
	 * that helper's array_index_nospec().
	 */
	m = nvmx_rs_map(vcpu, vcpu_priv, page, gfn,
			srcu_dereference(vcpu->kvm->memslots[0], &vcpu->kvm->srcu)->generation);
	if (IS_ERR_VALUE(m.kaddr))
		return (int)m.kaddr;
	map->hva = (void *)(unsigned long)m.kaddr;
	map->pfn = m.pfn;
	return 0;
}

/* map() while the nvmx_gpc_hit event is enabled. */
static noinline int shim_map_traced(struct kvm_vcpu *vcpu, void *vcpu_priv,
				    enum kvm_nvmx_page page, gfn_t gfn,
				    struct kvm_host_map *map)
{
	int r = __shim_map(vcpu, vcpu_priv, page, gfn, map);

	if (!r && !nvmx_rs_take_refreshed(vcpu_priv))
		trace_nvmx_gpc_hit(vcpu->vcpu_idx, page, gfn);
	return r;
}

static int shim_map(struct kvm_vcpu *vcpu, void *vcpu_priv, enum kvm_nvmx_page page,
		    gfn_t gfn, struct kvm_host_map *map)
{
	/*
	 * The event's static branch, tested first so that the hit path keeps
	 * nothing across the call into Rust: one nop while the event is off.
	 */
	if (trace_nvmx_gpc_hit_enabled())
		return shim_map_traced(vcpu, vcpu_priv, page, gfn, map);
	return __shim_map(vcpu, vcpu_priv, page, gfn, map);
}

static void shim_unmap(struct kvm_vcpu *vcpu, void *vcpu_priv, enum kvm_nvmx_page page,
		       struct kvm_host_map *map, bool dirty)
{
	u64 pfn = map->pfn;

	/*
	 * The generation as map() reads it.  KVM's nested VM-exit holds
	 * kvm->srcu; the vCPU's reset, state ioctls and destruction may not,
	 * and then the read may see the memslots of just before an update.
	 * That is memory safe (struct kvm embeds both sets of memslots), and
	 * what the cache decides from it (nvmx_rs_unmap()) stays correct.
	 */
	nvmx_rs_unmap(vcpu, vcpu_priv, page, pfn, dirty,
		      rcu_dereference_raw(vcpu->kvm->memslots[0])->generation);
}

static void *shim_get(struct kvm_vcpu *vcpu, void *vcpu_priv, enum kvm_nvmx_page page,
		      struct kvm_host_map *map)
{
	return nvmx_rs_get(vcpu_priv, page);
}

static void shim_put(struct kvm_vcpu *vcpu, void *vcpu_priv, enum kvm_nvmx_page page,
		     struct kvm_host_map *map, bool dirty)
{
	/*
	 * KVM wrote the page (the PI descriptor, or the virtual-APIC page from
	 * it): mark it now, so that unmap() may skip a mark that would do
	 * nothing (Slot::unlogged in rust/cache.rs).  Marking first leaves the
	 * put the last call.
	 */
	if (dirty)
		nvmx_shim_mark_dirty(vcpu, map->gfn);
	nvmx_rs_put(vcpu_priv, page);
}

static void shim_memslots_updated(struct kvm *kvm, void *vm_priv, u64 gen)
{
	struct nvmx_vm *vm = vm_priv;

	nvmx_rs_memslots_updated(vm->rs, gen);
}

static const struct kvm_nvmx_page_ops nvmx_gpc_ops = {
	.owner = THIS_MODULE,
	.name = "nvmx_gpc",
	.vm_init = shim_vm_init,
	.vm_destroy = shim_vm_destroy,
	.vcpu_init = shim_vcpu_init,
	.vcpu_free = shim_vcpu_free,
	.map = shim_map,
	.unmap = shim_unmap,
	.get = shim_get,
	.put = shim_put,
	.memslots_updated = shim_memslots_updated,
};

/*
 * provider=passthrough: the stock calls behind the hook table, to prove the
 * hook layer alone (KVM must behave exactly as without the module).  No
 * per-VM or per-vCPU state, no notifier, no statistics file.
 */
static int pt_map(struct kvm_vcpu *vcpu, void *vcpu_priv, enum kvm_nvmx_page page,
		  gfn_t gfn, struct kvm_host_map *map)
{
	return kvm_vcpu_map(vcpu, gfn, map);
}

static void pt_unmap(struct kvm_vcpu *vcpu, void *vcpu_priv, enum kvm_nvmx_page page,
		     struct kvm_host_map *map, bool dirty)
{
	kvm_vcpu_unmap(vcpu, map, dirty);
}

static void *pt_get(struct kvm_vcpu *vcpu, void *vcpu_priv, enum kvm_nvmx_page page,
		    struct kvm_host_map *map)
{
	return map->hva;
}

static void pt_put(struct kvm_vcpu *vcpu, void *vcpu_priv, enum kvm_nvmx_page page,
		   struct kvm_host_map *map, bool dirty)
{
}

static const struct kvm_nvmx_page_ops nvmx_passthrough_ops = {
	.owner = THIS_MODULE,
	.name = "nvmx_gpc (passthrough)",
	.map = pt_map,
	.unmap = pt_unmap,
	.get = pt_get,
	.put = pt_put,
};

/* The table chosen by provider= at load time (the parameter is 0444). */
static const struct kvm_nvmx_page_ops *nvmx_ops(void)
{
	return nvmx_shim_provider() == NVMX_PROVIDER_CACHE ? &nvmx_gpc_ops :
							      &nvmx_passthrough_ops;
}

/*
 * --- The per-operation benchmark. ---
 *
 * /sys/kernel/debug/nvmx_gpc/bench (root only) times the operations a
 * nested VM-entry and VM-exit perform on one page, with the TSC, on the
 * most recently created vCPU of a VM bound to the cache:
 *
 *	echo "<gpa> <alt_gpa> <n>" > bench	(GPAs in hex, n pairs)
 *	cat bench
 *
 * runs, on the virtual-APIC page kind, n of each of
 *	stock     kvm_vcpu_map() + kvm_vcpu_unmap() of gpa
 *	hit       the cache's map() + unmap() of gpa (warmed first)
 *	hit_msr   the same with gpa taken as the MSR bitmap: a hit that holds
 *	          the cache's lock shared from map() to unmap()
 *	hit_dirty the hit with unmap(dirty), as KVM unmaps the virtual-APIC
 *	          page at every nested VM-exit
 *	miss      map() + unmap() of gpa and the NVMX_WAYS pages from alt_gpa
 *	          in turn, one more page than the cache has ways: every map()
 *	          refreshes the cache
 *	get_put   get() + put() while gpa is mapped
 * and reports the ticks of each loop ("<name> <ticks> <n>" lines, names and
 * order as NVMX_BENCH_OPS in nvmx_gpc_stats.h).  The cache's operations are
 * called through the provider table, as KVM calls them.  The vCPU must not
 * run meanwhile: the write holds its mutex and loads it, as an ioctl does,
 * and holds kvm->srcu, as KVM does around these calls.
 */
#define NVMX_BENCH_NAME(NAME, name)	#name,
static const char *const nvmx_bench_names[NVMX_NR_BENCH] = {
	NVMX_BENCH_OPS(NVMX_BENCH_NAME)
};
#undef NVMX_BENCH_NAME

static struct {
	/* Protects the rest; held across a run.  Taken before vcpu->mutex. */
	struct mutex lock;
	struct kvm_vcpu *vcpu;
	void *vcpu_priv;
	u64 ticks[NVMX_NR_BENCH];
	u32 n;
} nvmx_bench = { .lock = __MUTEX_INITIALIZER(nvmx_bench.lock) };

static void nvmx_bench_track(struct kvm_vcpu *vcpu, void *vcpu_priv)
{
	mutex_lock(&nvmx_bench.lock);
	nvmx_bench.vcpu = vcpu;
	nvmx_bench.vcpu_priv = vcpu_priv;
	mutex_unlock(&nvmx_bench.lock);
}

static void nvmx_bench_forget(struct kvm_vcpu *vcpu)
{
	mutex_lock(&nvmx_bench.lock);
	if (nvmx_bench.vcpu == vcpu)
		nvmx_bench.vcpu = NULL;
	mutex_unlock(&nvmx_bench.lock);
}

/* Read at run time, so that the calls stay indirect, as KVM's are. */
static const struct kvm_nvmx_page_ops *nvmx_bench_ops = &nvmx_gpc_ops;

/*
 * n map() + unmap(@dirty) pairs of @gfn as @page, after one that warms the
 * cache.
 */
static int nvmx_bench_hits(const struct kvm_nvmx_page_ops *ops, struct kvm_vcpu *vcpu,
			   void *priv, enum kvm_nvmx_page page, gfn_t gfn, bool dirty, u32 n,
			   u64 *ticks)
{
	struct kvm_host_map map;
	u64 t0;
	u32 i;
	int r;

	r = ops->map(vcpu, priv, page, gfn, &map);
	if (r)
		return r;
	ops->unmap(vcpu, priv, page, &map, false);
	t0 = rdtsc_ordered();
	for (i = 0; i < n; i++) {
		r = ops->map(vcpu, priv, page, gfn, &map);
		if (r)
			return r;
		ops->unmap(vcpu, priv, page, &map, dirty);
	}
	*ticks = rdtsc_ordered() - t0;
	return 0;
}

static int nvmx_bench_loops(struct kvm_vcpu *vcpu, void *priv, gfn_t gfn, gfn_t alt,
			    u32 n, u64 *ticks)
{
	const struct kvm_nvmx_page_ops *ops = READ_ONCE(nvmx_bench_ops);
	const enum kvm_nvmx_page page = KVM_NVMX_PAGE_VIRTUAL_APIC;
	struct kvm_host_map map;
	u64 t0;
	u32 i;
	int r;

	t0 = rdtsc_ordered();
	for (i = 0; i < n; i++) {
		r = kvm_vcpu_map(vcpu, gfn, &map);
		if (r)
			return r;
		kvm_vcpu_unmap(vcpu, &map, false);
	}
	ticks[NVMX_BENCH_STOCK] = rdtsc_ordered() - t0;

	r = nvmx_bench_hits(ops, vcpu, priv, page, gfn, false, n, &ticks[NVMX_BENCH_HIT]);
	if (r)
		return r;
	r = nvmx_bench_hits(ops, vcpu, priv, KVM_NVMX_PAGE_MSR_BITMAP, gfn, false, n,
			    &ticks[NVMX_BENCH_HIT_MSR]);
	if (r)
		return r;
	r = nvmx_bench_hits(ops, vcpu, priv, page, gfn, true, n, &ticks[NVMX_BENCH_HIT_DIRTY]);
	if (r)
		return r;

	t0 = rdtsc_ordered();
	for (i = 0; i < n; i++) {
		u32 k = i % (NVMX_WAYS + 1);

		r = ops->map(vcpu, priv, page, k ? alt + k - 1 : gfn, &map);
		if (r)
			return r;
		ops->unmap(vcpu, priv, page, &map, false);
	}
	ticks[NVMX_BENCH_MISS] = rdtsc_ordered() - t0;

	r = ops->map(vcpu, priv, page, gfn, &map);
	if (r)
		return r;
	t0 = rdtsc_ordered();
	for (i = 0; i < n; i++) {
		if (!ops->get(vcpu, priv, page, &map)) {
			r = -EAGAIN;
			break;
		}
		ops->put(vcpu, priv, page, &map, false);
	}
	ticks[NVMX_BENCH_GET_PUT] = rdtsc_ordered() - t0;
	ops->unmap(vcpu, priv, page, &map, false);
	return r;
}

static ssize_t nvmx_bench_write(struct file *file, const char __user *ubuf, size_t len,
				loff_t *ppos)
{
	u64 gpa, alt, ticks[NVMX_NR_BENCH];
	struct kvm_vcpu *vcpu;
	struct kvm *kvm;
	char buf[80];
	int r, idx;
	u32 n;

	if (len >= sizeof(buf))
		return -EINVAL;
	if (copy_from_user(buf, ubuf, len))
		return -EFAULT;
	buf[len] = 0;
	if (sscanf(buf, "%llx %llx %u", &gpa, &alt, &n) != 3 || !n ||
	    (gpa_to_gfn(gpa) >= gpa_to_gfn(alt) &&
	     gpa_to_gfn(gpa) < gpa_to_gfn(alt) + NVMX_WAYS))
		return -EINVAL;

	mutex_lock(&nvmx_bench.lock);
	vcpu = nvmx_bench.vcpu;
	/* Only an online vCPU: creation has finished. */
	if (!vcpu || kvm_get_vcpu(vcpu->kvm, vcpu->vcpu_idx) != vcpu ||
	    !kvm_get_kvm_safe(vcpu->kvm)) {
		mutex_unlock(&nvmx_bench.lock);
		return -ENODEV;
	}
	kvm = vcpu->kvm;
	r = mutex_lock_killable(&vcpu->mutex);
	if (!r) {
		/*
		 * Loaded, as in an ioctl: the dirty mark of unmap() needs the
		 * running vCPU (mark_page_dirty_in_slot()).
		 */
		vcpu_load(vcpu);
		idx = srcu_read_lock(&kvm->srcu);
		r = nvmx_bench_loops(vcpu, nvmx_bench.vcpu_priv, gpa_to_gfn(gpa),
				     gpa_to_gfn(alt), n, ticks);
		srcu_read_unlock(&kvm->srcu, idx);
		vcpu_put(vcpu);
		mutex_unlock(&vcpu->mutex);
	}
	if (!r) {
		memcpy(nvmx_bench.ticks, ticks, sizeof(ticks));
		nvmx_bench.n = n;
	}
	mutex_unlock(&nvmx_bench.lock);
	/* Last: dropping the VM may free the vCPU, which takes the lock. */
	kvm_put_kvm(kvm);
	return r ? r : len;
}

static int nvmx_bench_show(struct seq_file *m, void *unused)
{
	int i;

	mutex_lock(&nvmx_bench.lock);
	for (i = 0; nvmx_bench.n && i < NVMX_NR_BENCH; i++)
		seq_printf(m, "%s %llu %u\n", nvmx_bench_names[i], nvmx_bench.ticks[i],
			   nvmx_bench.n);
	mutex_unlock(&nvmx_bench.lock);
	return 0;
}

static int nvmx_bench_open(struct inode *inode, struct file *file)
{
	return single_open(file, nvmx_bench_show, NULL);
}

static const struct file_operations nvmx_bench_fops = {
	.owner = THIS_MODULE,
	.open = nvmx_bench_open,
	.read = seq_read,
	.write = nvmx_bench_write,
	.llseek = seq_lseek,
	.release = single_release,
};

int nvmx_shim_register(void)
{
	int r;

	nvmx_debugfs_dir = debugfs_create_dir("nvmx_gpc", NULL);
	debugfs_create_file("live", 0444, nvmx_debugfs_dir, NULL, &nvmx_live_fops);
	debugfs_create_file("bench", 0600, nvmx_debugfs_dir, NULL, &nvmx_bench_fops);
	r = kvm_nvmx_register_page_ops(nvmx_ops());
	if (r)
		debugfs_remove(nvmx_debugfs_dir);
	return r;
}

void nvmx_shim_unregister(void)
{
	kvm_nvmx_unregister_page_ops(nvmx_ops());
	debugfs_remove(nvmx_debugfs_dir);
}
