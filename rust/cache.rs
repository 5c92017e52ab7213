// SPDX-License-Identifier: GPL-2.0

//! The nested page cache: one persistent, invalidation-aware mapping per
//! vCPU and page kind, behind the hook table of `<asm/kvm_nvmx_pages.h>`.
//!
//! C reference: [virt/kvm/pfncache.c](srctree/virt/kvm/pfncache.c). The
//! state machine and its retry protocol are [`crate::state`], shared with
//! the userspace model that checks them (`rust/cache/model`); this file adds
//! the locks, the page resolution and the vCPU kicks around it.
//!
//! # Locks and their order
//!
//! 1. `kvm->srcu` (read side, held by KVM around `map()`).
//! 2. [`CacheVm::inner`], the per-VM lock: the VM's [`InvalSeq`] and the list
//!    of vCPU caches.
//! 3. A cache's slot lock ([`VcpuCaches::slots`]): its [`CacheState`].
//!    Readers (`get()`) take only this lock, shared, and may nest a
//!    virtual-APIC read inside a PI-descriptor read (separate lockdep
//!    classes, never the other way round).
//!
//! The mmu_notifier callbacks take 2 then 3. No lock of this file is held
//! while sleeping (resolving a pfn, `memremap()`, `memunmap()`).
//!
//! # Kicks
//!
//! An invalidation walks the caches with 2 held for write. For a cache
//! whose page the vCPU's vmcs02 may hold ([`CacheState::hardware_in_use`]),
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
//!
//! # Pages and references
//!
//! - Hardware-visible pages (APIC-access, virtual-APIC, PI descriptor): no
//!   page reference is kept once a mapping is installed; the notifier is
//!   what keeps the pfn honest. On invalidation the owning vCPU is forced
//!   out of L2 and reloads vmcs02 before it enters L2 again.
//! - MSR bitmap and eVMCS: KVM reads them through the address `map()`
//!   returned until `unmap()`, possibly in atomic context, so a page
//!   reference is held from `map()` to `unmap()`, exactly as stock
//!   `kvm_vcpu_map()` holds one. Between an `unmap()` and the next `map()`
//!   nothing pins the page, so it can be migrated or reclaimed; the
//!   invalidation then makes the next `map()` refresh. (Keeping the
//!   reference for as long as the page is cached would pin the MSR bitmap
//!   for the life of the vCPU; `nvmx_inval_test -m migrate` catches that.)

use core::sync::atomic::{AtomicU64, Ordering};

use kernel::prelude::*;
use kernel::sync::Arc;

use crate::ffi::{self, HostMap, Pfn, ReadGuard, RwLock, Vcpu, VcpuRef, VmHandle};
use crate::state::{
    CacheState, Commit, InvalCause, InvalSeq, Invalidated, Lookup, MissReason, PageKind, Resolved,
    Stats, PAGE_SHIFT,
};

const NR_KINDS: usize = PageKind::ALL.len();
/// Lock class of the per-VM lock (see `nvmx_shim_rwlock_new()`).
const VM_LOCK_CLASS: u32 = NR_KINDS as u32;

/// One cache: the state machine plus what the kernel side needs besides.
///
/// # Invariants
///
/// If `state` has a mapping installed, its `mapping` is a live kernel
/// address of its `pfn` (the direct map, or a `memremap()` that only this
/// slot will undo), made by [`Vcpu::resolve`].
pub(crate) struct Slot {
    state: CacheState,
    /// Unmanaged mappings torn down (`memunmap()`).
    memunmaps: u64,
}

/// The caches of one vCPU, indexed by [`ffi::kind_index`].
///
/// # Invariants
///
/// `slots[i]` holds a cache of the page kind with index `i`, and its lock
/// has that kind's lockdep class.
pub(crate) struct VcpuCaches {
    /// The vCPU, to kick it; its `vcpu_idx` is read only when kicking.
    vcpu: VcpuRef,
    slots: [RwLock<Slot>; NR_KINDS],
    /// The gfn KVM last mapped per kind, for dirty marking at `unmap()`.
    gfns: [AtomicU64; NR_KINDS],
    /// Reload requests made to this vCPU (statistics).
    kicks: AtomicU64,
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
    total.hits += s.hits;
    total.misses += s.misses;
    total.refreshes += s.refreshes;
    total.retries += s.retries;
    total.inval_notifier += s.inval_notifier;
    total.inval_memslot += s.inval_memslot;
    total.inval_teardown += s.inval_teardown;
    total.memremap += s.memremap;
    total.reloads += s.reloads;
}

fn is_hw(kind: PageKind) -> bool {
    kind.hardware_visible()
}

fn to_resolved(p: &Pfn) -> Resolved {
    Resolved {
        pfn: p.pfn(),
        mapping: p.kaddr(),
        unmanaged: p.unmanaged(),
    }
}

fn to_pfn(r: &Resolved) -> Pfn {
    Pfn::from_parts(r.pfn, r.mapping, r.unmanaged)
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
    fn invalidate_each(&self, vm: &mut VmInner, mut f: impl FnMut(&mut CacheState) -> Invalidated) {
        let mut aliases = false;
        for v in vm.vcpus.iter().flatten() {
            let mut kicked = false;
            for slot in v.slots.iter() {
                let mut s = slot.write();
                if f(&mut s.state).kick_vcpu && !kicked {
                    // Before `s` is dropped: `get()` must not see the
                    // invalidated cache without the request (F3).
                    self.handle.reload_mark(&v.vcpu);
                    v.kicks.fetch_add(1, Ordering::Relaxed);
                    kicked = true;
                }
                aliases |= s.state.has_invalid_alias();
            }
        }
        self.handle.reload_send();
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
                    PageKind::ALL.iter().find_map(|&kind| {
                        let r = v.slots[ffi::kind_index(kind)]
                            .write()
                            .state
                            .take_invalid_alias()?;
                        Some((v.clone(), kind, r))
                    })
                })
            };
            let Some((v, kind, r)) = found else {
                return;
            };
            v.release(kind, &r);
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
        self.invalidate_each(&mut vm, |s| s.invalidate_all(InvalCause::Memslot));
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
            self.invalidate_each(&mut vm, |s| s.invalidate_range(start, end));
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
        self.invalidate_each(&mut vm, |s| s.invalidate_all(InvalCause::Teardown));
    }

    /// Sums the statistics of all caches of the VM into `out`, in the order
    /// of `enum nvmx_stat`.
    pub(crate) fn stats(&self, out: &mut [u64]) {
        let vm = self.inner.read();
        let mut total = Stats::default();
        let mut memunmaps = 0;
        let mut nr_vcpus = 0;
        for v in vm.vcpus.iter().flatten() {
            nr_vcpus += 1;
            memunmaps += v.add_stats(&mut total);
        }
        let values = [
            total.hits,
            total.misses,
            total.refreshes,
            total.retries,
            total.inval_notifier,
            total.inval_memslot,
            total.inval_teardown,
            total.memremap,
            memunmaps,
            total.reloads,
            nr_vcpus,
        ];
        for (o, v) in out.iter_mut().zip(values) {
            *o = v;
        }
    }

    /// The statistics of the `pos`-th vCPU on the list, in the order of
    /// `enum nvmx_vcpu_stat`; false if there is none.
    pub(crate) fn vcpu_stats(&self, pos: usize, out: &mut [u64]) -> bool {
        let vm = self.inner.read();
        let Some(v) = vm.vcpus.iter().flatten().nth(pos) else {
            return false;
        };
        let mut total = Stats::default();
        v.add_stats(&mut total);
        let values = [
            u64::from(v.vcpu.idx()),
            v.kicks.load(Ordering::Relaxed),
            total.refreshes,
            total.hits,
        ];
        for (o, v) in out.iter_mut().zip(values) {
            *o = v;
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
    /// `memunmap()` count.
    fn add_stats(&self, total: &mut Stats) -> u64 {
        let mut memunmaps = 0;
        for slot in self.slots.iter() {
            let s = slot.read();
            add_stats(total, s.state.stats());
            memunmaps += s.memunmaps;
        }
        memunmaps
    }

    /// Undoes a kernel mapping the cache of `kind` no longer serves, and
    /// counts it if it was a `memunmap()`. The cache holds no page reference
    /// of its own. May sleep; call with no lock held.
    fn release(&self, kind: PageKind, r: &Resolved) {
        to_pfn(r).unmap();
        if r.unmanaged {
            self.slots[ffi::kind_index(kind)].write().memunmaps += 1;
        }
    }
}

impl CacheVcpu {
    pub(crate) fn new(vm: Arc<CacheVm>, vcpu: &Vcpu<'_>) -> Result<Self> {
        let mk = |kind: PageKind| {
            let mut state = CacheState::new(kind);
            state.activate();
            RwLock::new(
                ffi::kind_index(kind) as u32,
                Slot {
                    state,
                    memunmaps: 0,
                },
            )
        };
        let caches = Arc::new(
            VcpuCaches {
                vcpu: vcpu.to_ref(),
                slots: [
                    mk(PageKind::ALL[0])?,
                    mk(PageKind::ALL[1])?,
                    mk(PageKind::ALL[2])?,
                    mk(PageKind::ALL[3])?,
                    mk(PageKind::ALL[4])?,
                ],
                gfns: [const { AtomicU64::new(0) }; NR_KINDS],
                kicks: AtomicU64::new(0),
            },
            GFP_KERNEL_ACCOUNT,
        )?;
        vm.add_vcpu(caches.clone())?;
        // INVARIANT: `caches` was put on the VM's list above.
        Ok(CacheVcpu { vm, caches })
    }

    fn set_gfn(&self, kind: PageKind, gfn: u64) {
        self.caches.gfns[ffi::kind_index(kind)].store(gfn, Ordering::Relaxed);
    }

    /// The cache of `kind`; its lock is the one `get()` leaves held for
    /// `put()`.
    pub(crate) fn slot(&self, kind: PageKind) -> &RwLock<Slot> {
        &self.caches.slots[ffi::kind_index(kind)]
    }

    /// `map()`: serve `gfn` from the cache, refreshing it if needed. May
    /// sleep. Fails exactly where `kvm_vcpu_map()` fails (no memslot, MMIO,
    /// error pfn), so KVM reacts to L1's bad GPAs as stock KVM does.
    pub(crate) fn map(
        &self,
        vcpu: &Vcpu<'_>,
        kind: PageKind,
        gfn: u64,
        map: &mut HostMap<'_>,
    ) -> Result {
        let gpa = gfn << PAGE_SHIFT;
        let slot = self.slot(kind);
        loop {
            let gen = vcpu.memslots_gen();

            // Fast path: a valid cache for this gpa and generation. The
            // lock is exclusive because a hit records that vmcs02 will hold
            // the page (`use_hit`).
            {
                let mut s = slot.write();
                let hit = match s.state.check(gpa, gen) {
                    Lookup::Hit { pfn, mapping } => Some((pfn, mapping)),
                    // Test-only breakage: a cache keyed by page kind alone.
                    Lookup::Miss(MissReason::GpaChanged | MissReason::GenerationChanged)
                        if ffi::break_lookup() =>
                    {
                        s.state.installed().map(|r| (r.pfn, r.mapping))
                    }
                    Lookup::Miss(_) => None,
                };
                if let Some((pfn, mapping)) = hit {
                    // KVM's reference while mapped (see "Pages and
                    // references"), taken while the entry is valid.
                    if is_hw(kind) || Pfn::get_ref(pfn) {
                        s.state.use_hit();
                        drop(s);
                        self.set_gfn(kind, gfn);
                        map.fill(mapping, pfn, gfn);
                        return Ok(());
                    }
                }
                s.state.note_miss();
            }

            // Slow path: snapshot under the locks, resolve outside them.
            // One memslot lookup gives the address to snapshot and to
            // resolve (F11); no memslot can be freed while `map()` holds
            // `kvm->srcu`, and a changed one invalidates the cache.
            let memslot = vcpu.lookup(gfn).map_err(|_| EINVAL)?;
            let ticket = {
                let vm = self.vm.inner.write();
                let mut s = slot.write();
                s.state
                    .begin_refresh(gpa, gen, memslot.uhva(), &vm.inval)
                    .map_err(|_| EAGAIN)?
            };
            // The address the ticket recorded, through the same memslot.
            let new = memslot.resolve()?;
            let commit = {
                let vm = self.vm.inner.write();
                let mut s = slot.write();
                s.state.finish_refresh(ticket, to_resolved(&new), &vm.inval)
            };
            match commit {
                Commit::Installed { old } => {
                    if is_hw(kind) {
                        // The notifier, not a reference, keeps it honest.
                        new.put_ref(false);
                    }
                    // Otherwise the reference from `resolve` is KVM's until
                    // `unmap()`.
                    if let Some(old) = old {
                        self.caches.release(kind, &old);
                    }
                    self.set_gfn(kind, gfn);
                    map.fill(new.kaddr(), new.pfn(), gfn);
                    return Ok(());
                }
                Commit::Retry { discard } => {
                    new.put_ref(false);
                    self.caches.release(kind, &discard);
                    ffi::cond_resched();
                }
                Commit::Stale { discard } => {
                    new.put_ref(false);
                    self.caches.release(kind, &discard);
                    return Err(EAGAIN);
                }
            }
        }
    }

    /// `unmap()`: KVM is done with the page for now; the cache keeps it.
    pub(crate) fn unmap(
        &self,
        vcpu: &Vcpu<'_>,
        kind: PageKind,
        map: &mut HostMap<'_>,
        dirty: bool,
    ) {
        if dirty {
            vcpu.mark_dirty(self.caches.gfns[ffi::kind_index(kind)].load(Ordering::Relaxed));
        }
        if is_hw(kind) {
            // The vCPU is in root mode and vmcs02 gets this address again
            // only through `map()`: invalidations need not kick it (F7).
            if !ffi::break_sticky_hw() {
                let alias = {
                    let mut s = self.slot(kind).write();
                    s.state.unmapped();
                    // Invalidated while L2 ran: the alias can go now (F9).
                    s.state.take_invalid_alias()
                };
                if let Some(r) = alias {
                    self.caches.release(kind, &r);
                }
            }
        } else {
            // The reference `map()` took for KVM's use of the address.
            Pfn::from_parts(map.pfn(), 0, false).put_ref(dirty);
        }
        map.clear();
        if ffi::break_persistence() {
            // Test-only breakage: forget the mapping, as stock KVM does.
            let old = {
                let _vm = self.vm.inner.write();
                let mut s = self.slot(kind).write();
                let old = s.state.deactivate();
                s.state.activate();
                old
            };
            if let Some(r) = old {
                self.caches.release(kind, &r);
            }
        }
    }

    /// `get()`: the kernel address of a valid cached page, with the cache's
    /// lock held shared until `put()`; `None` if the page was invalidated
    /// (KVM then waits for the pending reload).
    pub(crate) fn get(&self, kind: PageKind) -> Option<(u64, ReadGuard<'_, Slot>)> {
        let s = self.slot(kind).read();
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
        let mut old: [Option<Resolved>; NR_KINDS] = [None; NR_KINDS];
        {
            // Under the VM lock, so no invalidation walks the caches or
            // kicks this vCPU now, and none will once it is off the list.
            let mut vm = self.vm.inner.write();
            for (i, slot) in self.caches.slots.iter().enumerate() {
                old[i] = slot.write().state.deactivate();
            }
            for e in vm.vcpus.as_mut_slice().iter_mut() {
                if e.as_ref().is_some_and(|c| Arc::ptr_eq(c, &self.caches)) {
                    *e = None;
                }
            }
        }
        for (kind, r) in PageKind::ALL.iter().zip(old.iter()) {
            if let Some(r) = r {
                self.caches.release(*kind, r);
            }
        }
    }
}
