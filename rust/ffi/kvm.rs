// SPDX-License-Identifier: GPL-2.0

//! Safe handles for the KVM objects that cross the C boundary, and the
//! kernel mappings and page references the cache holds.

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use kernel::error::to_result;
use kernel::prelude::*;

use super::raw;
use crate::state::{InvalCause, Mapping, MissReason, PageKind, Resolved};

/// A vCPU, borrowed for the duration of one callback from KVM.
///
/// # Invariants
///
/// `ptr` points to a live `struct kvm_vcpu` for at least `'a`.
pub(crate) struct Vcpu<'a> {
    pub(super) ptr: NonNull<raw::kvm_vcpu>,
    pub(super) _p: PhantomData<&'a raw::kvm_vcpu>,
}

/// A vCPU that the cache remembers beyond one callback, to kick it.
///
/// # Invariants
///
/// `ptr` points to a `struct kvm_vcpu` that is live while the vCPU's caches,
/// which hold this value, are on their VM's list: `vcpu_free()` takes them
/// off (under the per-VM lock) before KVM frees the vCPU. [`crate::cache`]
/// uses it only under that lock, for caches it found on the list.
pub(crate) struct VcpuRef {
    ptr: NonNull<raw::kvm_vcpu>,
}

// SAFETY: The pointer is only handed back to the shim, whose functions may
// be called from any thread (type invariant: the vCPU is live).
unsafe impl Send for VcpuRef {}
// SAFETY: As above; the value has no interior state.
unsafe impl Sync for VcpuRef {}

impl VcpuRef {
    /// `vcpu->vcpu_idx`: valid only once the vCPU has run (KVM assigns it
    /// after `vcpu_init()`), so read it when kicking, never at creation.
    pub(crate) fn idx(&self) -> u32 {
        // SAFETY: By the type invariant the vCPU is live.
        unsafe { raw::nvmx_shim_vcpu_idx(self.ptr.as_ptr()) }
    }
}

impl Vcpu<'_> {
    /// Looks `gfn` up in the VM's memslots, once: its memslot and its
    /// userspace address, which [`Memslot::resolve`] then uses.
    pub(crate) fn lookup(&self, gfn: u64) -> Result<Memslot<'_>> {
        let mut uhva = 0u64;
        // SAFETY: The vCPU is live, `kvm->srcu` is held during `map()`, and
        // `uhva` is a valid out-pointer.
        let slot = unsafe { raw::nvmx_shim_lookup(self.ptr.as_ptr(), gfn, &mut uhva) };
        let ptr = NonNull::new(slot.cast_mut()).ok_or(EFAULT)?;
        // INVARIANT: The memslot was found under `kvm->srcu`, which `map()`
        // holds for as long as it borrows the vCPU.
        Ok(Memslot {
            ptr,
            gfn,
            uhva,
            _p: PhantomData,
        })
    }

    /// A handle on this vCPU that [`crate::cache`] keeps until
    /// `vcpu_free()` (see [`VcpuRef`]).
    pub(crate) fn to_ref(&self) -> VcpuRef {
        // INVARIANT: Only `vcpu_init()` calls this, and the value lives in
        // the vCPU's caches, which `vcpu_free()` drops.
        VcpuRef { ptr: self.ptr }
    }

    /// The `nvmx_gpc_miss` trace event: `map()` of `gfn` found no valid
    /// cache and refreshes way `way`, which missed for `reason`.
    pub(crate) fn trace_miss(&self, kind: PageKind, gfn: u64, reason: MissReason, way: usize) {
        let reason = match reason {
            MissReason::Inactive => raw::nvmx_miss_reason_NVMX_MISS_INACTIVE,
            MissReason::Invalid => raw::nvmx_miss_reason_NVMX_MISS_INVALID,
            MissReason::GpaChanged => raw::nvmx_miss_reason_NVMX_MISS_GPA,
            MissReason::GenerationChanged => raw::nvmx_miss_reason_NVMX_MISS_GENERATION,
        };
        // SAFETY: The vCPU is live; the function only reads `vcpu_idx`.
        unsafe {
            raw::nvmx_shim_trace_miss(self.ptr.as_ptr(), kind as u32, gfn, reason, way as u32)
        }
    }

    /// The `nvmx_gpc_refresh` trace event: way `way` now holds `gfn` at
    /// `pfn`, after `retries` attempts that raced an invalidation.
    pub(crate) fn trace_refresh(
        &self,
        kind: PageKind,
        gfn: u64,
        pfn: u64,
        unmanaged: bool,
        way: usize,
        retries: u32,
    ) {
        // SAFETY: The vCPU is live; the function only reads `vcpu_idx`.
        unsafe {
            raw::nvmx_shim_trace_refresh(
                self.ptr.as_ptr(),
                kind as u32,
                gfn,
                pfn,
                unmanaged,
                way as u32,
                retries,
            )
        }
    }

    /// The `nvmx_gpc_reload` trace event: the vCPU gave up `gfn`, which was
    /// invalidated while it was in vmcs02.
    pub(crate) fn trace_reload(&self, kind: PageKind, gfn: u64) {
        // SAFETY: The vCPU is live; the function only reads `vcpu_idx`.
        unsafe { raw::nvmx_shim_trace_reload(self.ptr.as_ptr(), kind as u32, gfn) }
    }

    /// Marks `gfn` dirty in the VM's dirty log, like `kvm_vcpu_unmap()`.
    pub(crate) fn mark_dirty(&self, gfn: u64) {
        // SAFETY: The vCPU is live; KVM calls `unmap()` in the same context
        // as the stock `kvm_vcpu_unmap()`, which does the same call.
        unsafe { raw::nvmx_shim_mark_dirty(self.ptr.as_ptr(), gfn) }
    }
}

/// The memslot of one gfn and the userspace address it gives, found by
/// [`Vcpu::lookup`] during one `map()`.
///
/// # Invariants
///
/// `ptr` points to a `struct kvm_memory_slot` of the VM that stays live for
/// `'a` (`kvm->srcu` is held); `uhva` is what it maps `gfn` to.
pub(crate) struct Memslot<'a> {
    ptr: NonNull<raw::kvm_memory_slot>,
    gfn: u64,
    uhva: u64,
    _p: PhantomData<&'a raw::kvm_memory_slot>,
}

impl Memslot<'_> {
    /// The userspace address of the gfn.
    pub(crate) fn uhva(&self) -> u64 {
        self.uhva
    }

    /// Whether the memslot logs dirty pages (`KVM_MEM_LOG_DIRTY_PAGES`):
    /// otherwise marking one of its pages dirty does nothing. A memslot's
    /// flags never change; new flags come with a new memslot generation.
    pub(crate) fn logs_dirty(&self) -> bool {
        // SAFETY: The memslot is live (type invariant).
        unsafe { raw::nvmx_shim_slot_logs_dirty(self.ptr.as_ptr()) }
    }

    /// Resolves the gfn through this memslot, i.e. the address
    /// [`Memslot::uhva`] names, to a pfn (taking a reference if
    /// refcounted) and maps it into the kernel, like `kvm_vcpu_map()`. May
    /// sleep.
    pub(crate) fn resolve(&self) -> Result<(Pfn, PageRef)> {
        let mut out = raw::nvmx_pfn::default();
        // SAFETY: The memslot is live (type invariant); `map()` runs in
        // process context and may sleep, and `out` is a valid out-pointer.
        to_result(unsafe { raw::nvmx_shim_resolve(self.ptr.as_ptr(), self.gfn, &mut out) })?;
        LIVE_MAPPINGS.fetch_add(1, Ordering::Relaxed);
        LIVE_REFS.fetch_add(1, Ordering::Relaxed);
        // INVARIANT: `out` was filled by a successful `nvmx_shim_resolve`,
        // which took one reference on `out.pfn` (none if it is not
        // refcounted, which `nvmx_shim_put_pfn` then ignores).
        Ok((Pfn { raw: out }, PageRef { pfn: out.pfn }))
    }
}

/// Kernel mappings made by [`Memslot::resolve`] and not yet undone.
pub(super) static LIVE_MAPPINGS: AtomicU64 = AtomicU64::new(0);
/// Page references taken ([`Memslot::resolve`], [`PageRef::get`]) and not
/// yet dropped.
pub(super) static LIVE_REFS: AtomicU64 = AtomicU64::new(0);
/// VM states alive.
pub(super) static LIVE_VMS: AtomicU64 = AtomicU64::new(0);

/// The `nvmx_gpc_invalidate` trace event: an invalidation (of `[start, end)`
/// for the mmu_notifier) made `caches` valid caches invalid and kicked
/// `kicks` vCPUs.
pub(crate) fn trace_invalidate(start: u64, end: u64, cause: InvalCause, caches: u32, kicks: u32) {
    let cause = match cause {
        InvalCause::Notifier => raw::nvmx_inval_cause_NVMX_INVAL_NOTIFIER,
        InvalCause::Memslot => raw::nvmx_inval_cause_NVMX_INVAL_MEMSLOT,
        InvalCause::Teardown => raw::nvmx_inval_cause_NVMX_INVAL_TEARDOWN,
    };
    // SAFETY: No pointer is passed; any context.
    unsafe { raw::nvmx_shim_trace_invalidate(start, end, cause, caches, kicks) }
}

/// A page resolved and mapped into the kernel by [`Memslot::resolve`]: the
/// kernel mapping, owned, which lasts until [`Pfn::unmap`] consumes it. The
/// page reference that came with it is a separate [`PageRef`]. A cache
/// holds it in its [`crate::state::CacheState`], which hands it back
/// exactly once.
///
/// There is no `Drop`: undoing a `memremap()` may sleep, and a value can be
/// dropped under a lock. A `Pfn` dropped without [`Pfn::unmap`] leaks the
/// mapping, which the `LIVE_MAPPINGS` count (the test bed's `no-leaks`
/// check) catches.
///
/// # Invariants
///
/// `raw` was filled by a successful `nvmx_shim_resolve()`, and no other
/// value owns its kernel mapping.
#[must_use = "a kernel mapping must be undone with Pfn::unmap"]
pub(crate) struct Pfn {
    raw: raw::nvmx_pfn,
}

impl Pfn {
    pub(crate) fn unmanaged(&self) -> bool {
        self.raw.unmanaged
    }

    /// Undoes the kernel mapping (`memunmap()` for unmanaged memory). May
    /// sleep; never called with a lock of this module held.
    pub(crate) fn unmap(self) {
        // SAFETY: By the type invariant this value owns a mapping made by a
        // successful resolve, and it is consumed here: the mapping is
        // undone once. The cache gets it back from its state only once no
        // reader can reach the mapping (it is no longer installed, or the
        // cache is gone).
        unsafe { raw::nvmx_shim_unmap_kaddr(&self.raw) };
        LIVE_MAPPINGS.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Mapping for Pfn {
    fn resolved(&self) -> Resolved {
        Resolved {
            pfn: self.raw.pfn,
            mapping: self.raw.kaddr,
            unmanaged: self.raw.unmanaged,
        }
    }
}

/// One reference on a page (on its folio), for KVM's use of a mapping from
/// `map()` to `unmap()`. Dropping it drops the reference clean;
/// [`PageRef::put`] can report the page dirty. KVM holds it as the pfn in
/// its `struct kvm_host_map` ([`PageRef::into_raw`] and
/// [`PageRef::from_raw`]).
///
/// # Invariants
///
/// The value owns one reference on `pfn`, taken by `nvmx_shim_resolve()` or
/// `nvmx_shim_get_pfn()` (or none, if `pfn` is not refcounted, which
/// `nvmx_shim_put_pfn()` then ignores).
#[must_use = "dropping the reference at once makes the page reclaimable"]
pub(crate) struct PageRef {
    pfn: u64,
}

impl PageRef {
    /// Takes another reference on the page of a published cache entry.
    /// `None` if the page is already being freed. The caller checks
    /// afterwards that the entry is still published (see
    /// [`crate::state::HitView::still`]).
    #[inline]
    pub(crate) fn get(pfn: u64) -> Option<Self> {
        // SAFETY: `nvmx_shim_get_pfn` only increments a refcount that is
        // not zero, so it never resurrects a freed page.
        if unsafe { raw::nvmx_shim_get_pfn(pfn) } {
            LIVE_REFS.fetch_add(1, Ordering::Relaxed);
            // INVARIANT: The reference was just taken.
            Some(PageRef { pfn })
        } else {
            None
        }
    }

    /// Drops the reference, reporting the page dirty if `dirty`.
    pub(crate) fn put(self, dirty: bool) {
        let pfn = self.pfn;
        core::mem::forget(self);
        // SAFETY: `self` owned the reference (type invariant) and is gone.
        unsafe { raw::nvmx_shim_put_pfn(pfn, dirty) };
        LIVE_REFS.fetch_sub(1, Ordering::Relaxed);
    }

    /// Hands the reference to KVM, as the pfn of its `struct kvm_host_map`.
    pub(crate) fn into_raw(self) -> u64 {
        let pfn = self.pfn;
        core::mem::forget(self);
        pfn
    }

    /// Takes back a reference handed to KVM.
    ///
    /// # Safety
    ///
    /// `pfn` must come from [`PageRef::into_raw`], and be taken back once.
    pub(super) unsafe fn from_raw(pfn: u64) -> Self {
        // INVARIANT: By the safety contract, the reference is ours again.
        PageRef { pfn }
    }
}

impl Drop for PageRef {
    fn drop(&mut self) {
        // SAFETY: The value owns the reference (type invariant).
        unsafe { raw::nvmx_shim_put_pfn(self.pfn, false) };
        LIVE_REFS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The shim's per-VM object (mmu_notifier, statistics file).
///
/// # Invariants
///
/// `ptr` points to the live `struct nvmx_vm` of the VM whose Rust state
/// holds this handle; the shim frees it only after that state is gone.
pub(crate) struct VmHandle {
    pub(super) ptr: NonNull<raw::nvmx_vm>,
}

// SAFETY: The handle is only used to pass the pointer back to the shim,
// whose functions may be called from any thread.
unsafe impl Send for VmHandle {}
// SAFETY: As above; the handle has no interior state.
unsafe impl Sync for VmHandle {}

impl VmHandle {
    /// Makes a reload of the hardware-visible pages pending on `vcpu` now,
    /// and notes it for [`VmHandle::reload_send`]. Call it with the per-VM
    /// lock held for write (it guards the shim's reload mask), for a vCPU
    /// of this VM that has mapped the page, before the invalidated cache
    /// can be seen by `get()`.
    /// `kind` and `gfn` name the cache that caused it (`nvmx_gpc_kick`).
    pub(crate) fn reload_mark(&self, vcpu: &VcpuRef, kind: PageKind, gfn: u64) {
        // SAFETY: The handle and the vCPU are live (type invariants); the
        // caller holds the per-VM lock, which serialises the mask.
        unsafe {
            raw::nvmx_shim_reload_mark(self.ptr.as_ptr(), vcpu.ptr.as_ptr(), kind as u32, gfn)
        }
    }

    /// Makes the shim's work item call [`crate::cache::CacheVm::reap`]
    /// soon, in process context. Does not sleep.
    pub(crate) fn schedule_reap(&self) {
        // SAFETY: The handle is live (type invariant); `schedule_work()`
        // may be called in atomic context.
        unsafe { raw::nvmx_shim_schedule_reap(self.ptr.as_ptr()) }
    }

    /// Kicks the vCPUs marked since the last call out of L2 and waits until
    /// none of them runs L2 with the old addresses. Call it with the per-VM
    /// lock held for write: no marked vCPU can be freed meanwhile. Does not
    /// sleep; needs IRQs enabled.
    pub(crate) fn reload_send(&self) {
        // SAFETY: The handle is live (type invariant); the caller holds the
        // per-VM lock, so every vCPU in the mask is live.
        unsafe { raw::nvmx_shim_reload_send(self.ptr.as_ptr()) }
    }
}
