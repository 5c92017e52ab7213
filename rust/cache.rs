// SPDX-License-Identifier: GPL-2.0

//! The nested page cache: persistent, invalidation-aware mappings, [`WAYS`]
//! per vCPU and page kind, behind the hook table of
//! `<asm/kvm_nvmx_pages.h>`.
//!
//! C reference: [virt/kvm/pfncache.c](srctree/virt/kvm/pfncache.c). The
//! state machine and its retry protocol are [`crate::state`], shared with
//! the userspace model that checks them (`tools/nvmx-model`); this file adds
//! the locks, the page resolution and the vCPU kicks around it.
//!
//! # The path of a nested VM-entry
//!
//! `nested_get_vmcs12_pages()` calls `map()` of the hook table:
//! `shim_map()` (C, reads the memslot generation) -> `nvmx_rs_map()`
//! ([`crate::ffi`]) -> [`CacheVcpu::hit_hw`] -> [`HitView::claim`] and
//! [`HitView::lookup_page`], on the way of the page kind that KVM mapped
//! last. A hit of a hardware-visible page takes no lock and makes no call;
//! the MSR bitmap's hit ([`CacheVcpu::map_shared`]) takes the way's lock
//! shared and leaves it held until `unmap()`, and after an L2 switch
//! [`CacheVcpu::map`] and [`CacheVcpu::map_shared`] find the page in another
//! way. A miss in every way goes on to the `#[cold]` refresh. `unmap()` of a
//! hardware-visible page is [`HitView::release`]
//! ([`CacheVcpu::unmap_hw_fast`]).
//!
//! # Locks and their order
//!
//! 1. `kvm->srcu` (read side, held by KVM around `map()`).
//! 2. [`CacheVm::inner`], the per-VM lock: the VM's [`InvalSeq`] and the list
//!    of vCPU caches.
//! 3. A cache's slot lock ([`Slot`]): its [`CacheState`], and the right to
//!    publish or withdraw its [`HitView`]. Readers (`get()` to `put()`, and
//!    the MSR bitmap's `map()` to `unmap()`) take only this lock, shared,
//!    and may nest a virtual-APIC read inside a PI-descriptor read
//!    (separate lockdep classes, never the other way round). The hit path
//!    of the other kinds takes none (see [`HitView`] for its ordering
//!    argument).
//!
//! The mmu_notifier callbacks take 2 then 3. No lock of this file is held
//! while sleeping (resolving a pfn, `memremap()`, `memunmap()`).
//!
//! # Kicks
//!
//! An invalidation walks the caches with 2 held for write. For a cache
//! whose page the vCPU's vmcs02 may hold ([`HitView::claimed`]),
//! it makes `KVM_REQ_NESTED_PAGES_RELOAD` pending on that vCPU while it
//! still holds the cache's lock 3, so `get()` can never see the invalidated
//! cache without the request being pending (KVM treats a NULL without a
//! pending request as fatal). After the walk, still under 2, it kicks the
//! marked vCPUs out of L2 and waits for them, in blockable and
//! non-blockable ranges alike, as KVM's own notifier waits for its TLB
//! flush. Waiting under 2 is what keeps a kicked vCPU from being freed
//! meanwhile: `vcpu_free()` takes 2 before the vCPU goes. It cannot
//! deadlock: the vCPUs waited for are in guest mode, where they hold none
//! of these locks, and nobody takes them with IRQs disabled.
//!
//! # What may sleep
//!
//! `map()` (refresh), `vcpu_free()` and the teardown of a VM may sleep.
//! `get()`, `put()`, `unmap()` and the notifier's range callbacks do not,
//! apart from the wait for kicked vCPUs, which spins with IRQs enabled.
//! KVM does not sleep between the MSR bitmap's `map()` and `unmap()`
//! (`nested_vmx_prepare_msr_bitmap()`), and the lock it holds meanwhile
//! only makes an invalidation of that page spin for as long as the merge
//! takes.
//!
//! # Pages and references
//!
//! - Hardware-visible pages (APIC-access, virtual-APIC, PI descriptor): no
//!   page reference is kept once a mapping is installed; the notifier is
//!   what keeps the pfn honest. On invalidation the owning vCPU is forced
//!   out of L2 and reloads vmcs02 before it enters L2 again.
//! - MSR bitmap: KVM reads it through the address `map()` returned, inside
//!   one function that does not sleep, so the way's lock, held shared from
//!   `map()` to `unmap()`, keeps the page (an invalidation must take that
//!   lock for write before it returns), as `gfn_to_pfn_cache` users hold
//!   `gpc->lock` around their reads. KVM gets no page reference.
//! - eVMCS: KVM reads and writes it through the address from `map()` to
//!   `unmap()`, possibly in atomic context and across L2 runs, so a page
//!   reference is held from `map()` to `unmap()`, exactly as stock
//!   `kvm_vcpu_map()` holds one.
//! - Between an `unmap()` and the next `map()` nothing pins either page, so
//!   it can be migrated or reclaimed; the invalidation then makes the next
//!   `map()` refresh. (Keeping a reference for as long as the page is cached
//!   would pin the MSR bitmap for the life of the vCPU;
//!   `nvmx_inval_race_test -m migrate` catches that.)
//! - Memory without `struct page` (`mem=` + `/dev/mem`): one `memremap()`
//!   per refresh, undone when the mapping is replaced, when the vCPU is
//!   freed, or, for an invalidated cache, at the next `unmap()` or by
//!   [`CacheVm::reap`]; page references are no-ops there, as in KVM.

#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use kernel::prelude::*;
use kernel::sync::Arc;

use crate::ffi::{
    self, Mapped, PageRef, Pfn, ReadGuard, RwLock, Vcpu, VcpuRef, VcpuStat, VmHandle, VmStat,
};
use crate::state::{
    CacheState, Commit, Hit, HitView, InvalCause, InvalSeq, Invalidated, Lookup, Mapping, PageKind,
    Stats, PAGE_SHIFT,
};

const NR_KINDS: usize = PageKind::ALL.len();

/// Caches per vCPU and page kind ("ways"): an L1 that runs several L2s on
/// one vCPU switches between their pages, and each of up to `WAYS` L2s
/// keeps its own cache of each kind. The way to use is chosen by the page's
/// GPA (an L2 switch changes the GPAs of the pages, and L2s that share a
/// page share its way); a miss evicts the least recently used way.
///
/// Memory: a [`Slot`] is 224 bytes on x86_64, so the caches of one vCPU are
/// 40 slots (8,960 bytes, one 1,792-byte allocation per kind) plus one
/// `rwlock_t` allocation per slot. An invalidation walks only the ways that
/// were ever used ([`Slot::armed`]).
pub(crate) const WAYS: usize = ffi::WAYS;
/// Lock class of the per-VM lock (see `nvmx_shim_rwlock_new()`).
const VM_LOCK_CLASS: u32 = NR_KINDS as u32;

/// The locked half of one cache: the state machine plus what the kernel
/// side needs besides.
///
/// # Invariants
///
/// If `state` has a mapping installed, its `mapping` is a live kernel
/// address of its `pfn` (the direct map, or a `memremap()` that only this
/// slot will undo), made by [`ffi::Memslot::resolve`].
pub(crate) struct Locked {
    state: CacheState<Pfn>,
    /// Unmanaged mappings torn down (`memunmap()`).
    memunmaps: u64,
}

/// One cache: the half its vCPU's hits read without a lock, and the half
/// behind the lock.
///
/// # Invariants
///
/// `view` is the [`HitView`] of `locked.state`: every call of a
/// [`CacheState`] method that takes a view gets this one.
pub(crate) struct Slot {
    view: HitView,
    locked: RwLock<Locked>,
    /// A refresh of this way began at least once; set under the per-VM
    /// lock, so the invalidation walk, which holds that lock, may skip a
    /// way without it: nothing was ever installed there.
    armed: AtomicBool,
    /// The vCPU's own bookkeeping (written only by it, under
    /// `vcpu->mutex`): the gfn of the last refresh, for dirty marking at
    /// `unmap()` and to find the way of a GPA again; and when the vCPU last
    /// switched to this way, for the eviction.
    gfn: AtomicU64,
    last_use: AtomicU64,
    /// The vCPU's own bookkeeping too: the memslot of the last refresh does
    /// not log dirty pages. See [`Slot::unlogged`].
    unlogged: AtomicBool,
}

// The size the documentation of `WAYS` states.
const _: () = assert!(core::mem::size_of::<Slot>() == 224);

impl Slot {
    fn new(kind: PageKind) -> Result<Self> {
        let mut state = CacheState::new(kind);
        state.activate();
        Ok(Slot {
            view: HitView::new(),
            locked: RwLock::new(
                ffi::kind_index(kind) as u32,
                Locked {
                    state,
                    memunmaps: 0,
                },
            )?,
            armed: AtomicBool::new(false),
            gfn: AtomicU64::new(0),
            last_use: AtomicU64::new(0),
            unlogged: AtomicBool::new(false),
        })
    }

    fn armed(&self) -> bool {
        self.armed.load(Ordering::Relaxed)
    }

    /// The vCPU, at `unmap()` with memslot generation `gen`: whether
    /// marking the page dirty would do nothing. True if the memslots are
    /// still those of the last refresh (generation `gen` is the published
    /// one) and that refresh found a memslot that does not log dirty pages:
    /// `kvm_vcpu_mark_page_dirty()` would find the same memslot and test
    /// the same flag.
    ///
    /// Where KVM calls `unmap()` without `kvm->srcu` (vCPU reset, state
    /// ioctls, vCPU free) `gen` may be read from just before an update
    /// that enables dirty logging. No write is lost then either: the CPU
    /// writes these pages only while L2 runs, and KVM marks them dirty at
    /// every exit from L2 (`nested_mark_vmcs12_pages_dirty()`); KVM's own
    /// writes are marked at `put()`.
    #[inline]
    fn unlogged(&self, gen: u64) -> bool {
        self.unlogged.load(Ordering::Relaxed) && self.view.generation() == gen
    }

    /// The lock-free hit of a hardware-visible page (see [`HitView`]): the
    /// claim comes first.
    #[inline]
    fn hit_hw(&self, gfn: u64, gen: u64) -> Option<Hit> {
        let prev = self.view.claim();
        let hit = self.view.lookup_page(gfn, gen);
        match hit {
            Some(_) => self.view.count_hit(),
            None => self.view.restore_claim(prev),
        }
        hit
    }

    /// The hit of a page KVM reads only inside a non-sleeping bracket (see
    /// [`PageKind::read_in_bracket`]): the page, with the lock held shared,
    /// which keeps every invalidation of the page waiting until the guard
    /// goes. Under the lock the view cannot be withdrawn.
    #[inline]
    fn hit_shared(&self, gfn: u64, gen: u64) -> Option<(Mapped, ReadGuard<'_, Locked>)> {
        let s = self.locked.read();
        let hit = self.view.lookup_page(gfn, gen)?;
        self.view.count_hit();
        let m = Mapped {
            pfn: hit.pfn,
            kaddr: hit.mapping,
            page_ref: None,
        };
        Some((m, s))
    }

    /// The lock-free hit of a page KVM reads through the address until
    /// `unmap()` (the eVMCS): KVM's page reference, taken while the page is
    /// still published.
    #[inline]
    fn hit_ref(&self, gfn: u64, gen: u64) -> Option<(Hit, PageRef)> {
        let hit = self.view.lookup_page(gfn, gen)?;
        let page_ref = PageRef::get(hit.pfn)?;
        if !self.view.still(gfn) {
            drop(page_ref);
            return None;
        }
        self.view.count_hit();
        Some((hit, page_ref))
    }
}

/// The caches of one vCPU: `WAYS` per page kind.
///
/// # Invariants
///
/// `slots[k][w]` holds way `w` of the page kind with index `k`
/// ([`ffi::kind_index`]), and its lock has that kind's lockdep class.
pub(crate) struct VcpuCaches {
    /// The vCPU, to kick it; its `vcpu_idx` is read only when kicking.
    vcpu: VcpuRef,
    /// One allocation per kind: built on the stack, 40 slots would not fit
    /// a kernel stack (8,960 bytes, moved more than once).
    slots: [KBox<[Slot; WAYS]>; NR_KINDS],
    /// Per kind, the way KVM mapped last: the one `unmap()`, `get()` and
    /// `put()` use. Written only by the vCPU, in `map()`.
    cur: [AtomicUsize; NR_KINDS],
    /// The vCPU's clock for [`Slot::last_use`].
    clock: AtomicU64,
    /// Reload requests made to this vCPU (statistics).
    kicks: AtomicU64,
    /// The last `map()` refreshed (set by the refresh, taken by
    /// [`CacheVcpu::take_refreshed`] for the `nvmx_gpc_hit` trace event).
    /// Written only by the vCPU.
    refreshed: AtomicBool,
}

/// # Invariants
///
/// Every cache the notifier must see is on `vcpus`, and only caches of live
/// vCPUs are: `vcpu_free()` empties the vCPU's entry, and a later vCPU
/// reuses it, so the list is as long as the most vCPUs the VM ever had at
/// once (a failed `KVM_CREATE_VCPU` leaves nothing behind).
struct VmInner {
    inval: InvalSeq,
    vcpus: KVec<Option<Arc<VcpuCaches>>>,
}

/// Per-VM part of the cache.
///
/// # Invariants
///
/// `inner` is taken before any slot lock of the VM's caches; `handle` is
/// the shim object whose notifier drives `inner.inval`.
pub(crate) struct CacheVm {
    handle: VmHandle,
    inner: RwLock<VmInner>,
}

/// Per-vCPU part of the cache.
///
/// # Invariants
///
/// `caches` is on `vm.inner.vcpus` from construction on, so every
/// invalidation of the VM sees it.
pub(crate) struct CacheVcpu {
    vm: Arc<CacheVm>,
    caches: Arc<VcpuCaches>,
}

fn add_stats(total: &mut Stats, s: &Stats) {
    total.misses += s.misses;
    total.refreshes += s.refreshes;
    total.retries += s.retries;
    total.inval_notifier += s.inval_notifier;
    total.inval_memslot += s.inval_memslot;
    total.inval_teardown += s.inval_teardown;
    total.memremap += s.memremap;
    total.reloads += s.reloads;
}

impl CacheVm {
    pub(crate) fn new(handle: VmHandle) -> Result<Arc<Self>> {
        let inner = VmInner {
            inval: InvalSeq::new(),
            vcpus: KVec::new(),
        };
        Ok(Arc::new(
            CacheVm {
                handle,
                inner: RwLock::new(VM_LOCK_CLASS, inner)?,
            },
            GFP_KERNEL,
        )?)
    }

    /// Applies `f` to every cache of the VM, with the per-VM lock held for
    /// write (the caller's `vm`), then kicks the vCPUs whose
    /// hardware-visible pages went stale and waits for them, still under
    /// that lock (see "Kicks" above).
    fn invalidate_each(
        &self,
        vm: &mut VmInner,
        (start, end, cause): (u64, u64, InvalCause),
        mut f: impl FnMut(&mut CacheState<Pfn>, &HitView) -> Invalidated,
    ) {
        let (mut aliases, mut caches, mut kicks) = (false, 0u32, 0u32);
        for v in vm.vcpus.iter().flatten() {
            let mut kicked = false;
            for slot in v.all().filter(|s| s.armed()) {
                let mut s = slot.locked.write();
                let r = f(&mut s.state, &slot.view);
                caches += u32::from(r.was_valid);
                if r.kick_vcpu && !kicked {
                    // Before `s` is dropped: `get()` must not see the
                    // invalidated cache without the request (F3).
                    let gfn = slot.gfn.load(Ordering::Relaxed);
                    self.handle.reload_mark(&v.vcpu, s.state.kind(), gfn);
                    v.kicks.fetch_add(1, Ordering::Relaxed);
                    kicked = true;
                    kicks += 1;
                }
                aliases |= s.state.has_invalid_alias();
            }
        }
        self.handle.reload_send();
        // Only the invalidations that hit a cache: the VMM's mm sees many.
        if caches > 0 || kicks > 0 {
            ffi::trace_invalidate(start, end, cause, caches, kicks);
        }
        if aliases {
            // `memunmap()` may sleep: the shim's work item calls `reap()`.
            self.handle.schedule_reap();
        }
    }

    /// Undoes the `memremap()` aliases of invalidated caches (F9), from the
    /// shim's work item and from `unmap()`. May sleep; call with no lock of
    /// this file held.
    pub(crate) fn reap(&self) {
        loop {
            let found = {
                let vm = self.inner.write();
                vm.vcpus.iter().flatten().find_map(|v| {
                    v.all().enumerate().find_map(|(i, slot)| {
                        let r = slot.locked.write().state.take_invalid_alias(&slot.view)?;
                        Some((v.clone(), i, r))
                    })
                })
            };
            let Some((v, i, r)) = found else {
                return;
            };
            v.release(&v.slots[i / WAYS][i % WAYS], r);
        }
    }

    /// The VM's memslots changed: nothing cached may be served again, and
    /// vCPUs in L2 must stop using the old pages now, not at their next
    /// nested VM-entry.
    pub(crate) fn memslots_updated(&self, _gen: u64) {
        if ffi::break_invalidation() {
            return;
        }
        let mut vm = self.inner.write();
        let all = (0, u64::MAX, InvalCause::Memslot);
        self.invalidate_each(&mut vm, all, |s, v| {
            s.invalidate_all(InvalCause::Memslot, v)
        });
    }

    /// `invalidate_range_start`: nothing that overlaps `[start, end)` may be
    /// served or used by the CPU once this returns. Never fails, also in a
    /// non-blockable range: waiting for the kicked vCPUs does not sleep.
    pub(crate) fn invalidate_start(&self, start: u64, end: u64) {
        let mut vm = self.inner.write();
        // First, so that a refresh that resolved before this point and
        // commits after it retries (see `InvalSeq`).
        if vm.inval.begin().is_err() {
            pr_warn!("invalidation counter saturated\n");
        }
        if !ffi::break_invalidation() {
            let range = (start, end, InvalCause::Notifier);
            self.invalidate_each(&mut vm, range, |s, v| s.invalidate_range(start, end, v));
        }
    }

    /// `invalidate_range_end`: the host page tables are updated; refreshes
    /// may install pages again.
    pub(crate) fn invalidate_end(&self, _start: u64, _end: u64) {
        if self.inner.write().inval.end().is_err() {
            pr_warn!("unbalanced invalidate_range_end\n");
        }
    }

    /// The address space is going away: serve nothing from it any more.
    pub(crate) fn release(&self) {
        let mut vm = self.inner.write();
        let all = (0, u64::MAX, InvalCause::Teardown);
        self.invalidate_each(&mut vm, all, |s, v| {
            s.invalidate_all(InvalCause::Teardown, v)
        });
    }

    /// Sums the statistics of all caches of the VM into `out`.
    pub(crate) fn stats(&self, out: &mut [u64; ffi::NR_STATS]) {
        let vm = self.inner.read();
        let mut total = Stats::default();
        let (mut hits, mut memunmaps, mut nr_vcpus) = (0, 0, 0);
        for v in vm.vcpus.iter().flatten() {
            nr_vcpus += 1;
            let (h, m) = v.add_stats(&mut total);
            hits += h;
            memunmaps += m;
        }
        for (o, stat) in out.iter_mut().zip(VmStat::ALL) {
            *o = match stat {
                VmStat::Hits => hits,
                VmStat::Misses => total.misses,
                VmStat::Refreshes => total.refreshes,
                VmStat::Retries => total.retries,
                VmStat::InvalNotifier => total.inval_notifier,
                VmStat::InvalMemslot => total.inval_memslot,
                VmStat::InvalTeardown => total.inval_teardown,
                VmStat::Memremap => total.memremap,
                VmStat::Memunmap => memunmaps,
                VmStat::Reloads => total.reloads,
                VmStat::Vcpus => nr_vcpus,
            };
        }
    }

    /// The statistics of the `pos`-th vCPU on the list; false if there is
    /// none.
    pub(crate) fn vcpu_stats(&self, pos: usize, out: &mut [u64; ffi::NR_VCPU_STATS]) -> bool {
        let vm = self.inner.read();
        let Some(v) = vm.vcpus.iter().flatten().nth(pos) else {
            return false;
        };
        let mut total = Stats::default();
        let (hits, _) = v.add_stats(&mut total);
        for (o, stat) in out.iter_mut().zip(VcpuStat::ALL) {
            *o = match stat {
                VcpuStat::Idx => u64::from(v.vcpu.idx()),
                VcpuStat::Kicks => v.kicks.load(Ordering::Relaxed),
                VcpuStat::Refreshes => total.refreshes,
                VcpuStat::Hits => hits,
            };
        }
        true
    }

    /// Puts `caches` on the list: into a free entry, or at the end. The
    /// list grows with memory allocated before the lock is taken.
    fn add_vcpu(&self, caches: Arc<VcpuCaches>) -> Result {
        let mut bigger: Option<KVec<Option<Arc<VcpuCaches>>>> = None;
        loop {
            let mut vm = self.inner.write();
            if let Some(free) = vm.vcpus.as_mut_slice().iter_mut().find(|e| e.is_none()) {
                *free = Some(caches);
                return Ok(());
            }
            if let Some(mut new) = bigger.take() {
                if new.capacity() > vm.vcpus.len() {
                    for e in vm.vcpus.as_mut_slice().iter_mut() {
                        // Within the capacity: does not allocate.
                        new.push(e.take(), GFP_NOWAIT)?;
                    }
                    core::mem::swap(&mut vm.vcpus, &mut new);
                }
            }
            if vm.vcpus.len() < vm.vcpus.capacity() {
                // Within the capacity: does not allocate.
                vm.vcpus.push(Some(caches), GFP_NOWAIT)?;
                return Ok(());
            }
            let want = 2 * vm.vcpus.len() + 2;
            drop(vm);
            bigger = Some(KVec::with_capacity(want, GFP_KERNEL_ACCOUNT)?);
        }
    }
}

impl VcpuCaches {
    /// Adds the statistics of this vCPU's caches to `total`; returns their
    /// hits and their `memunmap()` count.
    fn add_stats(&self, total: &mut Stats) -> (u64, u64) {
        let (mut hits, mut memunmaps) = (0, 0);
        for slot in self.all() {
            hits += slot.view.hits();
            let s = slot.locked.read();
            add_stats(total, s.state.stats());
            memunmaps += s.memunmaps;
        }
        (hits, memunmaps)
    }

    /// Undoes a kernel mapping `slot` no longer serves, and counts it if it
    /// was a `memunmap()`. The cache holds no page reference of its own.
    /// May sleep; call with no lock held.
    fn release(&self, slot: &Slot, r: Pfn) {
        let unmanaged = r.unmanaged();
        r.unmap();
        if unmanaged {
            slot.locked.write().memunmaps += 1;
        }
    }

    #[inline]
    fn slot(&self, kind: PageKind, way: usize) -> &Slot {
        &self.slots[ffi::kind_index(kind)][way % WAYS]
    }

    fn all(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter().flat_map(|ways| ways.iter())
    }

    /// The way of `kind` that KVM mapped last.
    #[inline]
    fn cur(&self, kind: PageKind) -> &Slot {
        self.slot(
            kind,
            self.cur[ffi::kind_index(kind)].load(Ordering::Relaxed),
        )
    }

    /// The vCPU uses way `way` of `kind` from now on.
    fn switch_to(&self, kind: PageKind, way: usize) {
        let now = self.clock.load(Ordering::Relaxed).wrapping_add(1);
        self.clock.store(now, Ordering::Relaxed);
        self.slot(kind, way).last_use.store(now, Ordering::Relaxed);
        self.cur[ffi::kind_index(kind)].store(way, Ordering::Relaxed);
    }

    /// The way a refresh of `gfn` goes to: the way that held `gfn` last, else
    /// one never used, else the least recently used. Reads only the vCPU's
    /// own bookkeeping.
    fn victim(&self, kind: PageKind, gfn: u64) -> usize {
        let ways = || (0..WAYS).map(|w| (w, self.slot(kind, w)));
        ways()
            .find(|(_, s)| s.armed() && s.gfn.load(Ordering::Relaxed) == gfn)
            .or_else(|| ways().find(|(_, s)| !s.armed()))
            .or_else(|| ways().min_by_key(|(_, s)| s.last_use.load(Ordering::Relaxed)))
            .map_or(0, |(w, _)| w)
    }
}

impl CacheVcpu {
    pub(crate) fn new(vm: Arc<CacheVm>, vcpu: &Vcpu<'_>) -> Result<Self> {
        let ways = |kind| -> Result<KBox<[Slot; WAYS]>> {
            let ways = [
                Slot::new(kind)?,
                Slot::new(kind)?,
                Slot::new(kind)?,
                Slot::new(kind)?,
                Slot::new(kind)?,
                Slot::new(kind)?,
                Slot::new(kind)?,
                Slot::new(kind)?,
            ];
            Ok(KBox::new(ways, GFP_KERNEL_ACCOUNT)?)
        };
        let caches = Arc::new(
            VcpuCaches {
                vcpu: vcpu.to_ref(),
                slots: [
                    ways(PageKind::ALL[0])?,
                    ways(PageKind::ALL[1])?,
                    ways(PageKind::ALL[2])?,
                    ways(PageKind::ALL[3])?,
                    ways(PageKind::ALL[4])?,
                ],
                cur: [const { AtomicUsize::new(0) }; NR_KINDS],
                clock: AtomicU64::new(0),
                kicks: AtomicU64::new(0),
                refreshed: AtomicBool::new(false),
            },
            GFP_KERNEL_ACCOUNT,
        )?;
        vm.add_vcpu(caches.clone())?;
        // INVARIANT: `caches` was put on the VM's list above.
        Ok(CacheVcpu { vm, caches })
    }

    /// The lock that `get()` leaves held for `put()`, and
    /// [`CacheVcpu::map_shared`] for `unmap()`: that of the way KVM mapped
    /// last, which does not change between the two.
    pub(crate) fn lock_of(&self, kind: PageKind) -> &RwLock<Locked> {
        &self.caches.cur(kind).locked
    }

    /// The fast half of `map()` for a hardware-visible page: the page if
    /// the way KVM mapped last holds `gfn` for memslot generation `gen`
    /// (read by the shim under the `kvm->srcu` that KVM holds around
    /// `map()`). `None` for a miss and for the other kinds, which
    /// [`CacheVcpu::map`] serves. Takes no lock, makes no call.
    #[inline]
    pub(crate) fn hit_hw(&self, kind: PageKind, gfn: u64, gen: u64) -> Option<Hit> {
        if !kind.hardware_visible() || ffi::break_lookup() {
            return None;
        }
        // A hit is of the page the way's last refresh published, whose gfn
        // that refresh recorded in `Slot::gfn`.
        self.caches.cur(kind).hit_hw(gfn, gen)
    }

    /// The fast half of `map()` for a page KVM reads only inside a
    /// non-sleeping bracket (the MSR bitmap): the page with the lock of the
    /// way KVM mapped last held shared, if that way holds `gfn` for memslot
    /// generation `gen`. `None` for a miss and for the other kinds, which
    /// [`CacheVcpu::map_shared`] and [`CacheVcpu::map`] serve. The lock is
    /// the only call.
    #[inline]
    pub(crate) fn hit_shared(
        &self,
        kind: PageKind,
        gfn: u64,
        gen: u64,
    ) -> Option<(Mapped, ReadGuard<'_, Locked>)> {
        if !kind.read_in_bracket() || ffi::break_lookup() {
            return None;
        }
        self.caches.cur(kind).hit_shared(gfn, gen)
    }

    /// `map()` of a page KVM reads only inside a non-sleeping bracket (the
    /// MSR bitmap, see [`PageKind::read_in_bracket`]): the page, with the
    /// lock of the way KVM maps now held shared until `unmap()`, which
    /// finds that lock with [`CacheVcpu::lock_of`]. KVM gets no page
    /// reference: no invalidation of the page can finish while the lock is
    /// held. A hit in the way KVM mapped last takes the lock and makes no
    /// other call. May sleep (refresh), and then returns with the lock held.
    pub(crate) fn map_shared(
        &self,
        vcpu: &Vcpu<'_>,
        kind: PageKind,
        gfn: u64,
        gen: u64,
    ) -> Result<(Mapped, ReadGuard<'_, Locked>)> {
        loop {
            if !ffi::break_lookup() {
                if let Some(x) = self.caches.cur(kind).hit_shared(gfn, gen) {
                    return Ok(x);
                }
                let other = (0..WAYS).find(|&way| {
                    let slot = self.caches.slot(kind, way);
                    slot.view.lookup_page(gfn, gen).is_some()
                });
                if let Some(way) = other {
                    if let Some(x) = self.caches.slot(kind, way).hit_shared(gfn, gen) {
                        self.caches.switch_to(kind, way);
                        return Ok(x);
                    }
                }
            }
            let Mapped {
                pfn,
                kaddr,
                page_ref,
            } = self.refresh(vcpu, kind, gfn, gen)?;
            // The refresh installed the page in the way it switched to; an
            // invalidation may have taken it again before the lock.
            let s = self.caches.cur(kind).locked.read();
            let still = s.state.is_valid() && s.state.installed().is_some_and(|r| r.pfn == pfn);
            drop(page_ref);
            if still {
                let m = Mapped {
                    pfn,
                    kaddr,
                    page_ref: None,
                };
                return Ok((m, s));
            }
            drop(s);
            ffi::cond_resched();
        }
    }

    /// The rest of `map()`: the hit of another way (an L2 switch), or a
    /// refresh.
    #[inline(never)]
    pub(crate) fn map(
        &self,
        vcpu: &Vcpu<'_>,
        kind: PageKind,
        gfn: u64,
        gen: u64,
    ) -> Result<Mapped> {
        if !ffi::break_lookup() {
            for way in 0..WAYS {
                let slot = self.caches.slot(kind, way);
                // A first look without the claim, so that a miss claims
                // nothing; the hit then claims and looks again.
                if slot.view.lookup_page(gfn, gen).is_none() {
                    continue;
                }
                let m = if kind.hardware_visible() {
                    slot.hit_hw(gfn, gen).map(|hit| (hit, None))
                } else {
                    slot.hit_ref(gfn, gen).map(|(hit, r)| (hit, Some(r)))
                };
                if let Some((hit, page_ref)) = m {
                    self.caches.switch_to(kind, way);
                    return Ok(Mapped {
                        pfn: hit.pfn,
                        kaddr: hit.mapping,
                        page_ref,
                    });
                }
            }
        }
        self.refresh(vcpu, kind, gfn, gen)
    }

    /// The slow half of `map()`, after a miss in every way: resolve the page
    /// outside the locks and install it in the way [`VcpuCaches::victim`]
    /// chooses, retrying while invalidations race with the refresh (the
    /// protocol of [`crate::state`]). May sleep. Fails exactly where
    /// `kvm_vcpu_map()` fails (no memslot, MMIO, error pfn), so KVM reacts
    /// to L1's bad GPAs as stock KVM does.
    #[cold]
    #[inline(never)]
    fn refresh(&self, vcpu: &Vcpu<'_>, kind: PageKind, gfn: u64, gen: u64) -> Result<Mapped> {
        let gpa = gfn << PAGE_SHIFT;
        if ffi::break_lookup() {
            if let Some(m) = self.installed_hit(kind) {
                return Ok(m);
            }
        }
        let way = self.caches.victim(kind, gfn);
        let slot = self.caches.slot(kind, way);
        self.caches.switch_to(kind, way);
        let mut first = true;
        let mut retries = 0;
        loop {
            // One memslot lookup gives the address to snapshot and to
            // resolve (F11); no memslot can be freed while `map()` holds
            // `kvm->srcu`, and a changed one invalidates the cache.
            let memslot = vcpu.lookup(gfn).map_err(|_| EINVAL)?;
            let ticket = {
                let vm = self.vm.inner.write();
                // INVARIANT: Set under the per-VM lock (see `Slot::armed`).
                slot.armed.store(true, Ordering::Relaxed);
                let mut s = slot.locked.write();
                if first {
                    if let Lookup::Miss(reason) = s.state.check(gpa, gen) {
                        vcpu.trace_miss(kind, gfn, reason, way);
                    }
                    s.state.note_miss();
                    first = false;
                }
                s.state
                    .begin_refresh(gpa, gen, memslot.uhva(), &vm.inval, &slot.view)
                    .map_err(|_| EAGAIN)?
            };
            // The address the ticket recorded, through the same memslot.
            let (new, page_ref) = memslot.resolve()?;
            let r = new.resolved();
            let commit = {
                let vm = self.vm.inner.write();
                let mut s = slot.locked.write();
                s.state.finish_refresh(ticket, new, &vm.inval, &slot.view)
            };
            match commit {
                Commit::Installed { old } => {
                    if let Some(old) = old {
                        self.caches.release(slot, old);
                    }
                    slot.gfn.store(gfn, Ordering::Relaxed);
                    slot.unlogged
                        .store(!memslot.logs_dirty(), Ordering::Relaxed);
                    self.caches.refreshed.store(true, Ordering::Relaxed);
                    vcpu.trace_refresh(kind, gfn, r.pfn, r.unmanaged, way, retries);
                    // For a hardware-visible page the notifier, not a
                    // reference, keeps the pfn honest (see "Pages and
                    // references"); the others' is KVM's until `unmap()`.
                    let page_ref = if kind.hardware_visible() {
                        drop(page_ref);
                        None
                    } else {
                        Some(page_ref)
                    };
                    return Ok(Mapped {
                        pfn: r.pfn,
                        kaddr: r.mapping,
                        page_ref,
                    });
                }
                Commit::Retry { discard } => {
                    retries += 1;
                    drop(page_ref);
                    self.caches.release(slot, discard);
                    ffi::cond_resched();
                }
                Commit::Stale { discard } => {
                    drop(page_ref);
                    self.caches.release(slot, discard);
                    return Err(EAGAIN);
                }
            }
        }
    }

    /// Test-only breakage (`break_lookup`): a cache keyed by page kind
    /// alone, which serves the valid page of the way KVM mapped last
    /// whatever the GPA or memslot generation asked for.
    #[cold]
    fn installed_hit(&self, kind: PageKind) -> Option<Mapped> {
        let slot = self.caches.cur(kind);
        let s = slot.locked.write();
        if !s.state.is_valid() {
            return None;
        }
        let r = s.state.installed()?;
        let page_ref = if kind.hardware_visible() {
            slot.view.restore_claim(true);
            None
        } else {
            Some(PageRef::get(r.pfn)?)
        };
        Some(Mapped {
            pfn: r.pfn,
            kaddr: r.mapping,
            page_ref,
        })
    }

    /// The fast half of `unmap()` of a hardware-visible page, at memslot
    /// generation `gen`: gives up the claim and returns true if that was
    /// all: the cache is still valid, and KVM did not write the page or
    /// marking it dirty would do nothing ([`Slot::unlogged`]). False for
    /// the other kinds and when [`CacheVcpu::unmap_hw`] must do the rest,
    /// which gives up the claim then. Takes no lock, makes no call.
    #[inline]
    pub(crate) fn unmap_hw_fast(&self, kind: PageKind, dirty: bool, gen: u64) -> bool {
        if !kind.hardware_visible() || ffi::break_sticky_hw() || ffi::break_persistence() {
            return false;
        }
        let slot = self.caches.cur(kind);
        (!dirty || slot.unlogged(gen)) && !slot.view.release()
    }

    /// Whether the last `map()` refreshed; clears it. Called by the shim
    /// after each `map()` only while the `nvmx_gpc_hit` event is enabled.
    pub(crate) fn take_refreshed(&self) -> bool {
        self.caches.refreshed.swap(false, Ordering::Relaxed)
    }

    /// `unmap()` of a hardware-visible page: KVM is done with it for now;
    /// the cache keeps it. The vCPU is in root mode and vmcs02 gets the
    /// address again only through `map()`, so invalidations need not kick
    /// it any more (F7). Releasing an already released claim is harmless,
    /// so this may follow [`CacheVcpu::unmap_hw_fast`].
    pub(crate) fn unmap_hw(&self, vcpu: &Vcpu<'_>, kind: PageKind, dirty: bool) {
        let slot = self.caches.cur(kind);
        if !ffi::break_sticky_hw() && slot.view.release() {
            self.unmap_invalid(vcpu, kind, slot);
        }
        if dirty {
            vcpu.mark_dirty(slot.gfn.load(Ordering::Relaxed));
        }
        if ffi::break_persistence() {
            self.forget(slot);
        }
    }

    /// `unmap()` of a page KVM read through the address: drops the
    /// reference `map()` gave KVM for the eVMCS, if any (the MSR bitmap's
    /// shared hold of [`CacheVcpu::map_shared`] is gone already); the cache
    /// keeps the mapping.
    #[inline]
    pub(crate) fn unmap_read(
        &self,
        vcpu: &Vcpu<'_>,
        kind: PageKind,
        page_ref: Option<PageRef>,
        dirty: bool,
    ) {
        let slot = self.caches.cur(kind);
        if dirty {
            vcpu.mark_dirty(slot.gfn.load(Ordering::Relaxed));
        }
        if let Some(r) = page_ref {
            r.put(dirty);
        }
        if ffi::break_persistence() {
            self.forget(slot);
        }
    }

    /// The cache was invalidated while L2 ran: the `memremap()` alias can go
    /// now (F9).
    #[cold]
    #[inline(never)]
    fn unmap_invalid(&self, vcpu: &Vcpu<'_>, kind: PageKind, slot: &Slot) {
        vcpu.trace_reload(kind, slot.gfn.load(Ordering::Relaxed));
        let alias = slot.locked.write().state.take_invalid_alias(&slot.view);
        if let Some(r) = alias {
            self.caches.release(slot, r);
        }
    }

    /// Test-only breakage: forget the mapping at `unmap()`, as stock does.
    #[cold]
    fn forget(&self, slot: &Slot) {
        let old = {
            let _vm = self.vm.inner.write();
            let mut s = slot.locked.write();
            let old = s.state.deactivate(&slot.view);
            s.state.activate();
            old
        };
        if let Some(r) = old {
            self.caches.release(slot, r);
        }
    }

    /// `get()`: the kernel address of the valid page of the way KVM mapped
    /// last, with the way's lock held shared until `put()`; `None` if the
    /// page was invalidated (KVM then waits for the pending reload).
    pub(crate) fn get(&self, kind: PageKind) -> Option<(u64, ReadGuard<'_, Locked>)> {
        let s = self.caches.cur(kind).locked.read();
        match (s.state.is_valid(), s.state.installed()) {
            (true, Some(r)) => Some((r.mapping, s)),
            _ => None,
        }
    }
}

impl Drop for CacheVcpu {
    /// vCPU teardown: deactivate the caches (invalidations skip them from
    /// then on) and release their mappings. Runs after KVM's last use of the
    /// vCPU.
    fn drop(&mut self) {
        let mut old: [Option<Pfn>; NR_KINDS * WAYS] = [const { None }; NR_KINDS * WAYS];
        {
            // Under the VM lock, so no invalidation walks the caches or
            // kicks this vCPU now, and none will once it is off the list.
            let mut vm = self.vm.inner.write();
            for (o, slot) in old.iter_mut().zip(self.caches.all()) {
                *o = slot.locked.write().state.deactivate(&slot.view);
            }
            for e in vm.vcpus.as_mut_slice().iter_mut() {
                if e.as_ref().is_some_and(|c| Arc::ptr_eq(c, &self.caches)) {
                    *e = None;
                }
            }
        }
        for (slot, r) in self.caches.all().zip(old) {
            if let Some(r) = r {
                self.caches.release(slot, r);
            }
        }
    }
}
