// SPDX-License-Identifier: GPL-2.0

//! The module's only contact with C: bindgen output for
//! `include/nvmx_gpc_shim.h`, safe handles for the KVM objects that cross
//! it, a reader-writer lock backed by a C `rwlock_t`, and the `extern "C"`
//! entry points the C shim calls.
//!
//! Every `unsafe` operation of the module lives in this file. The rest of
//! the module sees [`Vcpu`], [`VmHandle`], [`RwLock`], [`Pfn`] and
//! [`PageRef`], never a raw pointer.

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use kernel::error::to_result;
use kernel::prelude::*;
use kernel::sync::{Arc, ArcBorrow};

use kernel::types::ForeignOwnable;

use crate::cache::{CacheVcpu, CacheVm};
use crate::state::PageKind;

#[allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code,
    unsafe_op_in_unsafe_fn,
    unreachable_pub,
    improper_ctypes,
    unknown_lints,
    unnecessary_transmutes,
    clippy::all
)]
mod raw {
    use kernel::ffi;
    include!("shim_gen.rs");
}

/// ABI version of the header this module was compiled against.
pub(crate) const ABI_VERSION: u32 = raw::NVMX_SHIM_ABI_VERSION;

/// Number of statistics reported per VM.
pub(crate) const NR_STATS: usize = raw::nvmx_stat_NVMX_NR_STATS as usize;

/// Number of statistics reported per vCPU (`enum nvmx_vcpu_stat`).
pub(crate) const NR_VCPU_STATS: usize = raw::nvmx_vcpu_stat_NVMX_NR_VCPU_STATS as usize;

/// ABI version the C shim was compiled with.
pub(crate) fn shim_abi_version() -> u32 {
    // SAFETY: `nvmx_shim_abi_version` takes no arguments and returns a
    // constant.
    unsafe { raw::nvmx_shim_abi_version() }
}

/// Registers the provider table with KVM. VMs created from now on use it.
pub(crate) fn register() -> Result {
    // SAFETY: Called from module init, in process context; the table points
    // at functions of this module, which stays loaded while the table is
    // registered (it is unregistered in the module's `Drop`) or a VM uses it
    // (KVM holds a module reference per bound VM).
    to_result(unsafe { raw::nvmx_shim_register() })
}

/// Unregisters the provider table. VMs bound to it keep it until destroyed.
pub(crate) fn unregister() {
    // SAFETY: Called from the module's `Drop`, in process context, after a
    // successful `register()`.
    unsafe { raw::nvmx_shim_unregister() }
}

/// Which provider the module was loaded with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProviderKind {
    Cache,
    PassThrough,
}

/// The `provider=` module parameter.
pub(crate) fn provider() -> ProviderKind {
    // SAFETY: Reads a module parameter; no preconditions.
    match unsafe { raw::nvmx_shim_provider() } {
        raw::nvmx_provider_NVMX_PROVIDER_PASSTHROUGH => ProviderKind::PassThrough,
        _ => ProviderKind::Cache,
    }
}

/// The test-only `break_invalidation` module parameter.
#[cfg(nvmx_test_knobs)]
pub(crate) fn break_invalidation() -> bool {
    // SAFETY: Reads a module parameter with `READ_ONCE`; no preconditions.
    unsafe { raw::nvmx_shim_break_invalidation() }
}

/// A default build has no test-only knob: constant false.
#[cfg(not(nvmx_test_knobs))]
#[inline(always)]
pub(crate) const fn break_invalidation() -> bool {
    false
}

/// The test-only `break_persistence` module parameter.
#[cfg(nvmx_test_knobs)]
pub(crate) fn break_persistence() -> bool {
    // SAFETY: Reads a module parameter with `READ_ONCE`; no preconditions.
    unsafe { raw::nvmx_shim_break_persistence() }
}

/// A default build has no test-only knob: constant false.
#[cfg(not(nvmx_test_knobs))]
#[inline(always)]
pub(crate) const fn break_persistence() -> bool {
    false
}

/// The test-only `break_lookup` module parameter.
#[cfg(nvmx_test_knobs)]
pub(crate) fn break_lookup() -> bool {
    // SAFETY: Reads a module parameter with `READ_ONCE`; no preconditions.
    unsafe { raw::nvmx_shim_break_lookup() }
}

/// A default build has no test-only knob: constant false.
#[cfg(not(nvmx_test_knobs))]
#[inline(always)]
pub(crate) const fn break_lookup() -> bool {
    false
}

/// The test-only `break_sticky_hw` module parameter.
#[cfg(nvmx_test_knobs)]
pub(crate) fn break_sticky_hw() -> bool {
    // SAFETY: Reads a module parameter with `READ_ONCE`; no preconditions.
    unsafe { raw::nvmx_shim_break_sticky_hw() }
}

/// A default build has no test-only knob: constant false.
#[cfg(not(nvmx_test_knobs))]
#[inline(always)]
pub(crate) const fn break_sticky_hw() -> bool {
    false
}

/// Lets the scheduler run something else in a retry loop.
pub(crate) fn cond_resched() {
    // SAFETY: Only called from `map()`, which runs in process context and
    // may sleep (provider contract), with no lock of this module held.
    unsafe { raw::nvmx_shim_cond_resched() }
}

// `PageKind` has the values of `enum nvmx_page`, and `PageKind::ALL` lists
// them in that order.
const _: () = {
    assert!(PageKind::ALL.len() == raw::nvmx_page_NVMX_NR_PAGES as usize);
    assert!(PageKind::MsrBitmap as u32 == raw::nvmx_page_NVMX_PAGE_MSR_BITMAP);
    assert!(PageKind::Evmcs as u32 == raw::nvmx_page_NVMX_PAGE_EVMCS);
    assert!(PageKind::ApicAccess as u32 == raw::nvmx_page_NVMX_PAGE_APIC_ACCESS);
    assert!(PageKind::VirtualApic as u32 == raw::nvmx_page_NVMX_PAGE_VIRTUAL_APIC);
    assert!(PageKind::PiDesc as u32 == raw::nvmx_page_NVMX_PAGE_PI_DESC);
    let mut i = 0;
    while i < PageKind::ALL.len() {
        assert!(PageKind::ALL[i] as usize == i);
        i += 1;
    }
};

/// The page kind of an `enum nvmx_page` value from C.
#[inline]
fn page_kind(v: u32) -> Option<PageKind> {
    Some(match v {
        raw::nvmx_page_NVMX_PAGE_MSR_BITMAP => PageKind::MsrBitmap,
        raw::nvmx_page_NVMX_PAGE_EVMCS => PageKind::Evmcs,
        raw::nvmx_page_NVMX_PAGE_APIC_ACCESS => PageKind::ApicAccess,
        raw::nvmx_page_NVMX_PAGE_VIRTUAL_APIC => PageKind::VirtualApic,
        raw::nvmx_page_NVMX_PAGE_PI_DESC => PageKind::PiDesc,
        _ => return None,
    })
}

/// [`page_kind`] for the hardware-visible kinds only, the kinds whose hit
/// and release the entry points handle without a call.
#[inline]
fn hw_page_kind(v: u32) -> Option<PageKind> {
    Some(match v {
        raw::nvmx_page_NVMX_PAGE_APIC_ACCESS => PageKind::ApicAccess,
        raw::nvmx_page_NVMX_PAGE_VIRTUAL_APIC => PageKind::VirtualApic,
        raw::nvmx_page_NVMX_PAGE_PI_DESC => PageKind::PiDesc,
        _ => return None,
    })
}

/// Index of a page kind in per-kind arrays (and its lock class).
#[inline]
pub(crate) fn kind_index(kind: PageKind) -> usize {
    kind as usize
}

/// A vCPU, borrowed for the duration of one callback from KVM.
///
/// # Invariants
///
/// `ptr` points to a live `struct kvm_vcpu` for at least `'a`.
pub(crate) struct Vcpu<'a> {
    ptr: NonNull<raw::kvm_vcpu>,
    _p: PhantomData<&'a raw::kvm_vcpu>,
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
static LIVE_MAPPINGS: AtomicU64 = AtomicU64::new(0);
/// Page references taken ([`Memslot::resolve`], [`PageRef::get`]) and not
/// yet dropped.
static LIVE_REFS: AtomicU64 = AtomicU64::new(0);
/// VM states alive.
static LIVE_VMS: AtomicU64 = AtomicU64::new(0);

/// A page resolved and mapped into the kernel by [`Memslot::resolve`]: the
/// kernel mapping, which lasts until [`Pfn::unmap`]. The page reference
/// that came with it is a separate [`PageRef`].
///
/// # Invariants
///
/// `raw` was filled by a successful `nvmx_shim_resolve()`.
#[derive(Clone, Copy)]
pub(crate) struct Pfn {
    raw: raw::nvmx_pfn,
}

impl Pfn {
    /// Rebuilds the value the cache stored in its state.
    pub(crate) fn from_parts(pfn: u64, kaddr: u64, unmanaged: bool) -> Self {
        // INVARIANT: The cache only stores values it got from `resolve`.
        Pfn {
            raw: raw::nvmx_pfn {
                pfn,
                kaddr,
                unmanaged,
            },
        }
    }

    pub(crate) fn pfn(&self) -> u64 {
        self.raw.pfn
    }

    pub(crate) fn kaddr(&self) -> u64 {
        self.raw.kaddr
    }

    pub(crate) fn unmanaged(&self) -> bool {
        self.raw.unmanaged
    }

    /// Undoes the kernel mapping (`memunmap()` for unmanaged memory). May
    /// sleep; never called with a lock of this module held.
    pub(crate) fn unmap(&self) {
        // SAFETY: By the type invariant this came from a successful resolve,
        // and the cache unmaps each mapping once, after no reader can reach
        // it any more (it is no longer installed, or the cache is gone).
        unsafe { raw::nvmx_shim_unmap_kaddr(&self.raw) };
        LIVE_MAPPINGS.fetch_sub(1, Ordering::Relaxed);
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
    unsafe fn from_raw(pfn: u64) -> Self {
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
    ptr: NonNull<raw::nvmx_vm>,
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
    pub(crate) fn reload_mark(&self, vcpu: &VcpuRef) {
        // SAFETY: The handle and the vCPU are live (type invariants); the
        // caller holds the per-VM lock, which serialises the mask.
        unsafe { raw::nvmx_shim_reload_mark(self.ptr.as_ptr(), vcpu.ptr.as_ptr()) }
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

/// A reader-writer lock backed by a C `rwlock_t` (the 6.12 `kernel` crate
/// has none). Non-sleeping on both sides.
///
/// # Invariants
///
/// `lock` points to a live `nvmx_rwlock` owned by this object; `data` is
/// only reached through a [`ReadGuard`] (lock held shared) or a
/// [`WriteGuard`] (lock held exclusive).
pub(crate) struct RwLock<T> {
    lock: NonNull<raw::nvmx_rwlock>,
    data: UnsafeCell<T>,
}

// SAFETY: The lock owns `T`; moving it to another thread moves `T`.
unsafe impl<T: Send> Send for RwLock<T> {}
// SAFETY: Shared access hands out `&T` to several threads (needs `Sync`)
// and exclusive access `&mut T` to one at a time (needs `Send`).
unsafe impl<T: Send + Sync> Sync for RwLock<T> {}

impl<T> RwLock<T> {
    /// A lock of lockdep class `class` (see `nvmx_shim_rwlock_new()`).
    pub(crate) fn new(class: u32, data: T) -> Result<Self> {
        // SAFETY: Allocates and initialises a lock; no preconditions.
        let lock = NonNull::new(unsafe { raw::nvmx_shim_rwlock_new(class) }).ok_or(ENOMEM)?;
        // INVARIANT: `lock` is freshly allocated and owned by the new value.
        Ok(RwLock {
            lock,
            data: UnsafeCell::new(data),
        })
    }

    /// Takes the lock shared. Does not sleep.
    pub(crate) fn read(&self) -> ReadGuard<'_, T> {
        // SAFETY: The lock is live (type invariant).
        unsafe { raw::nvmx_shim_read_lock(self.lock.as_ptr()) };
        ReadGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    /// Takes the lock exclusive. Does not sleep.
    pub(crate) fn write(&self) -> WriteGuard<'_, T> {
        // SAFETY: The lock is live (type invariant).
        unsafe { raw::nvmx_shim_write_lock(self.lock.as_ptr()) };
        WriteGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    /// Releases a shared hold that a [`ReadGuard::leak`] kept.
    ///
    /// # Safety
    ///
    /// The caller must own a shared hold of this lock taken by `read()` whose
    /// guard was leaked, and must not use that guard's reference afterwards.
    unsafe fn unlock_leaked_read(&self) {
        // SAFETY: The caller owns a shared hold of the live lock.
        unsafe { raw::nvmx_shim_read_unlock(self.lock.as_ptr()) }
    }
}

impl<T> Drop for RwLock<T> {
    fn drop(&mut self) {
        // SAFETY: We own the lock and nobody holds it (`&mut self`).
        unsafe { raw::nvmx_shim_rwlock_free(self.lock.as_ptr()) }
    }
}

/// Shared hold of an [`RwLock`]; released when dropped.
#[must_use = "the lock is released immediately when the guard is unused"]
pub(crate) struct ReadGuard<'a, T> {
    lock: &'a RwLock<T>,
    /// A lock is released on the CPU that took it.
    _not_send: PhantomData<*mut ()>,
}

impl<'a, T> ReadGuard<'a, T> {
    /// Keeps the lock held past the guard, for a KVM `get()` that a later
    /// `put()` ends; see `nvmx_rs_put`.
    fn leak(self) {
        core::mem::forget(self);
    }
}

impl<T> Deref for ReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: The lock is held shared (type invariant of `RwLock`).
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> Drop for ReadGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: This guard owns a shared hold.
        unsafe { raw::nvmx_shim_read_unlock(self.lock.lock.as_ptr()) }
    }
}

/// Exclusive hold of an [`RwLock`]; released when dropped.
#[must_use = "the lock is released immediately when the guard is unused"]
pub(crate) struct WriteGuard<'a, T> {
    lock: &'a RwLock<T>,
    /// A lock is released on the CPU that took it.
    _not_send: PhantomData<*mut ()>,
}

impl<T> Deref for WriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: The lock is held exclusive (type invariant of `RwLock`).
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for WriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: The lock is held exclusive (type invariant of `RwLock`).
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for WriteGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: This guard owns the exclusive hold.
        unsafe { raw::nvmx_shim_write_unlock(self.lock.lock.as_ptr()) }
    }
}

/// What a successful [`CacheVcpu::map`] gives KVM: the page and, for a
/// page KVM reads through the address until `unmap()` (MSR bitmap, eVMCS),
/// the page reference KVM holds meanwhile.
pub(crate) struct Mapped {
    pub(crate) pfn: u64,
    pub(crate) kaddr: u64,
    pub(crate) page_ref: Option<PageRef>,
}

/// The vCPU of one callback from KVM.
///
/// # Safety
///
/// `ptr` must be null or point to a `struct kvm_vcpu` that stays live for
/// `'a`.
unsafe fn vcpu_of<'a>(ptr: *mut raw::kvm_vcpu) -> Option<Vcpu<'a>> {
    // INVARIANT: Guaranteed by the caller.
    Some(Vcpu {
        ptr: NonNull::new(ptr)?,
        _p: PhantomData,
    })
}

/// Borrows the vCPU state stored by `nvmx_rs_vcpu_init`.
///
/// # Safety
///
/// `p` must be the `*vcpu_priv` that `nvmx_rs_vcpu_init` stored, and
/// `nvmx_rs_vcpu_free` must not have run for it.
unsafe fn vcpu_state<'a>(p: *mut c_void) -> &'a CacheVcpu {
    // SAFETY: Guaranteed by the caller.
    unsafe { KBox::<CacheVcpu>::borrow(p) }
}

/// Borrows the VM state stored by `nvmx_rs_vm_init`.
///
/// # Safety
///
/// `rs` must be the pointer `nvmx_rs_vm_init` stored, and
/// `nvmx_rs_vm_destroy` must not have run for it.
unsafe fn vm_state<'a>(rs: *mut c_void) -> ArcBorrow<'a, CacheVm> {
    // SAFETY: Guaranteed by the caller.
    unsafe { Arc::<CacheVm>::borrow(rs) }
}

/// Creates the VM's state; stores it in `*rs`.
///
/// # Safety
///
/// `vm` must point to the shim's live object for the VM, which outlives
/// the state (the shim frees it after `nvmx_rs_vm_destroy`); `rs` must be a
/// valid out-pointer.
#[no_mangle]
unsafe extern "C" fn nvmx_rs_vm_init(vm: *mut raw::nvmx_vm, rs: *mut *mut c_void) -> i32 {
    let Some(ptr) = NonNull::new(vm) else {
        return EINVAL.to_errno();
    };
    // INVARIANT: The caller guarantees that the object outlives the state.
    let handle = VmHandle { ptr };
    match CacheVm::new(handle) {
        Ok(state) => {
            LIVE_VMS.fetch_add(1, Ordering::Relaxed);
            // SAFETY: `rs` is a valid out-pointer (caller contract).
            unsafe { *rs = state.into_foreign().cast_mut() };
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// Drops the VM's state.
///
/// # Safety
///
/// `rs` must be null or what `nvmx_rs_vm_init` stored, passed once, after
/// the notifier is unregistered, the work item cancelled and every vCPU
/// freed.
#[no_mangle]
unsafe extern "C" fn nvmx_rs_vm_destroy(rs: *mut c_void) {
    // SAFETY: The caller's contract is `try_from_foreign`'s.
    if let Some(vm) = unsafe { Arc::<CacheVm>::try_from_foreign(rs) } {
        drop(vm);
        LIVE_VMS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Module-wide counts of live kernel mappings, page references and VM
/// states, for leak checks.
///
/// # Safety
///
/// The three pointers must be null or valid out-pointers.
#[no_mangle]
unsafe extern "C" fn nvmx_rs_live(mappings: *mut u64, refs: *mut u64, vms: *mut u64) {
    if mappings.is_null() || refs.is_null() || vms.is_null() {
        return;
    }
    // SAFETY: Three valid out-pointers (caller contract).
    unsafe {
        *mappings = LIVE_MAPPINGS.load(Ordering::Relaxed);
        *refs = LIVE_REFS.load(Ordering::Relaxed);
        *vms = LIVE_VMS.load(Ordering::Relaxed);
    }
}

/// Creates a vCPU's caches; stores them in `*vcpu_priv`.
///
/// # Safety
///
/// `vcpu` must be the live vCPU being created, `rs` the VM's state (see
/// [`vm_state`]) and `vcpu_priv` a valid out-pointer.
#[no_mangle]
unsafe extern "C" fn nvmx_rs_vcpu_init(
    vcpu: *mut raw::kvm_vcpu,
    rs: *mut c_void,
    vcpu_priv: *mut *mut c_void,
) -> i32 {
    // SAFETY: The vCPU is live for this call (caller contract).
    let Some(vcpu) = (unsafe { vcpu_of(vcpu) }) else {
        return EINVAL.to_errno();
    };
    // SAFETY: `rs` is the VM's live state (caller contract).
    let vm: Arc<CacheVm> = unsafe { vm_state(rs) }.into();
    match CacheVcpu::new(vm, &vcpu).and_then(|c| Ok(KBox::new(c, GFP_KERNEL)?)) {
        Ok(b) => {
            // SAFETY: A valid out-pointer (caller contract).
            unsafe { *vcpu_priv = b.into_foreign().cast_mut() };
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// Frees a vCPU's caches.
///
/// # Safety
///
/// `vcpu_priv` must be null or what `nvmx_rs_vcpu_init` stored, passed
/// once, after KVM's last map/unmap/get/put of the vCPU.
#[no_mangle]
unsafe extern "C" fn nvmx_rs_vcpu_free(_vcpu: *mut raw::kvm_vcpu, vcpu_priv: *mut c_void) {
    // SAFETY: The caller's contract is `try_from_foreign`'s.
    drop(unsafe { KBox::<CacheVcpu>::try_from_foreign(vcpu_priv) });
}

/// The provider's `map()`: the page, or a negative errno in `kaddr`. The
/// hit of a hardware-visible page is handled here, with no call and no
/// lock; everything else in [`map_rest`].
///
/// # Safety
///
/// KVM's `map()` context: `vcpu` is live and loaded, `vcpu_priv` its state
/// (see [`vcpu_state`]), `kvm->srcu` is held and `gen` was read under it;
/// process context.
#[no_mangle]
unsafe extern "C" fn nvmx_rs_map(
    vcpu: *mut raw::kvm_vcpu,
    vcpu_priv: *mut c_void,
    page: u32,
    gfn: u64,
    gen: u64,
) -> raw::nvmx_mapped {
    // SAFETY: The vCPU's state (caller contract).
    let c = unsafe { vcpu_state(vcpu_priv) };
    if let Some(hit) = hw_page_kind(page).and_then(|kind| c.hit_hw(kind, gfn, gen)) {
        return raw::nvmx_mapped {
            kaddr: hit.mapping,
            pfn: hit.pfn,
        };
    }
    // SAFETY: The caller's contract is ours.
    unsafe { map_rest(vcpu, c, page, gfn, gen) }
}

/// # Safety
///
/// As for [`nvmx_rs_map`], whose vCPU state `c` is.
#[inline(never)]
unsafe fn map_rest(
    vcpu: *mut raw::kvm_vcpu,
    c: &CacheVcpu,
    page: u32,
    gfn: u64,
    gen: u64,
) -> raw::nvmx_mapped {
    // SAFETY: The vCPU is live for this call (caller contract).
    let (Some(vcpu), Some(kind)) = (unsafe { vcpu_of(vcpu) }, page_kind(page)) else {
        return mapped_err(EINVAL);
    };
    match c.map(&vcpu, kind, gfn, gen) {
        Ok(m) => {
            // KVM's until `unmap()` hands it back (`nvmx_rs_unmap`).
            let _pfn = m.page_ref.map(PageRef::into_raw);
            raw::nvmx_mapped {
                kaddr: m.kaddr,
                pfn: m.pfn,
            }
        }
        Err(e) => mapped_err(e),
    }
}

/// A failed `map()`: the errno in `kaddr`, as `ERR_PTR()` would.
fn mapped_err(e: Error) -> raw::nvmx_mapped {
    raw::nvmx_mapped {
        kaddr: i64::from(e.to_errno()) as u64,
        pfn: 0,
    }
}

/// The provider's `unmap()`. The release of a hardware-visible page KVM
/// did not write is handled here, with no call; everything else in
/// [`unmap_rest`].
///
/// # Safety
///
/// As for [`nvmx_rs_map`], for a page that a successful `map()` of the same
/// kind gave out and that is unmapped once; `pfn` is the pfn `map()`
/// returned.
#[no_mangle]
unsafe extern "C" fn nvmx_rs_unmap(
    vcpu: *mut raw::kvm_vcpu,
    vcpu_priv: *mut c_void,
    page: u32,
    pfn: u64,
    dirty: bool,
) {
    // SAFETY: As in `nvmx_rs_map`.
    let c = unsafe { vcpu_state(vcpu_priv) };
    if !dirty && hw_page_kind(page).is_some_and(|kind| c.unmap_hw_clean(kind)) {
        return;
    }
    // SAFETY: The caller's contract is ours.
    unsafe { unmap_rest(vcpu, c, page, pfn, dirty) }
}

/// # Safety
///
/// As for [`nvmx_rs_unmap`], whose vCPU state `c` is.
#[inline(never)]
unsafe fn unmap_rest(vcpu: *mut raw::kvm_vcpu, c: &CacheVcpu, page: u32, pfn: u64, dirty: bool) {
    // SAFETY: The vCPU is live for this call (caller contract).
    let (Some(vcpu), Some(kind)) = (unsafe { vcpu_of(vcpu) }, page_kind(page)) else {
        return;
    };
    if kind.hardware_visible() {
        c.unmap_hw(&vcpu, kind, dirty);
    } else {
        // SAFETY: For this kind `map()` handed KVM a reference as the pfn
        // (`Mapped::page_ref`), and KVM unmaps each mapping once.
        c.unmap_ref(&vcpu, kind, unsafe { PageRef::from_raw(pfn) }, dirty);
    }
}

/// The provider's `get()`: the page's kernel address with the cache held
/// shared until `put()`, or null.
///
/// # Safety
///
/// `vcpu_priv` is the vCPU's state (see [`vcpu_state`]); a non-null result
/// must be followed by exactly one [`nvmx_rs_put`] of the same page.
#[no_mangle]
unsafe extern "C" fn nvmx_rs_get(vcpu_priv: *mut c_void, page: u32) -> *mut c_void {
    let Some(kind) = page_kind(page) else {
        return core::ptr::null_mut();
    };
    // SAFETY: The vCPU's state (caller contract).
    let c = unsafe { vcpu_state(vcpu_priv) };
    match c.get(kind) {
        Some((kaddr, guard)) => {
            // The shared hold lasts until the matching `put()`.
            guard.leak();
            kaddr as usize as *mut c_void
        }
        None => core::ptr::null_mut(),
    }
}

/// The provider's `put()`.
///
/// # Safety
///
/// Exactly once after each non-null [`nvmx_rs_get`] of the same page and
/// vCPU state.
#[no_mangle]
unsafe extern "C" fn nvmx_rs_put(vcpu_priv: *mut c_void, page: u32) {
    let Some(kind) = page_kind(page) else {
        return;
    };
    // SAFETY: The vCPU's state (caller contract).
    let c = unsafe { vcpu_state(vcpu_priv) };
    // SAFETY: `nvmx_rs_get` leaked the guard of this shared hold.
    unsafe { c.lock_of(kind).unlock_leaked_read() };
}

/// The VM's memslots changed.
///
/// # Safety
///
/// `rs` is the VM's state (see [`vm_state`]).
#[no_mangle]
unsafe extern "C" fn nvmx_rs_memslots_updated(rs: *mut c_void, gen: u64) {
    // SAFETY: Caller contract.
    unsafe { vm_state(rs) }.memslots_updated(gen);
}

/// The notifier's `invalidate_range_start`.
///
/// # Safety
///
/// `rs` is the VM's state (see [`vm_state`]); the shim unregisters the
/// notifier, waiting for callbacks, before it destroys the state.
#[no_mangle]
unsafe extern "C" fn nvmx_rs_mn_start(rs: *mut c_void, start: u64, end: u64) {
    // SAFETY: Caller contract.
    unsafe { vm_state(rs) }.invalidate_start(start, end);
}

/// The VM's work item.
///
/// # Safety
///
/// `rs` is the VM's state (see [`vm_state`]); the shim cancels the work
/// item, waiting for it, before it destroys the state.
#[no_mangle]
unsafe extern "C" fn nvmx_rs_reap(rs: *mut c_void) {
    // SAFETY: Caller contract.
    unsafe { vm_state(rs) }.reap();
}

/// The notifier's `invalidate_range_end`.
///
/// # Safety
///
/// As for [`nvmx_rs_mn_start`].
#[no_mangle]
unsafe extern "C" fn nvmx_rs_mn_end(rs: *mut c_void, start: u64, end: u64) {
    // SAFETY: Caller contract.
    unsafe { vm_state(rs) }.invalidate_end(start, end);
}

/// The notifier's `release`.
///
/// # Safety
///
/// As for [`nvmx_rs_mn_start`].
#[no_mangle]
unsafe extern "C" fn nvmx_rs_mn_release(rs: *mut c_void) {
    // SAFETY: Caller contract.
    unsafe { vm_state(rs) }.release();
}

/// The VM's statistics, in the order of `enum nvmx_stat`.
///
/// # Safety
///
/// `rs` is the VM's state (see [`vm_state`]; the shim removes the file,
/// waiting for readers, before it destroys the state); `out` is null or an
/// array of `NR_STATS` values.
#[no_mangle]
unsafe extern "C" fn nvmx_rs_vm_stats(rs: *mut c_void, out: *mut u64) {
    if out.is_null() {
        return;
    }
    // SAFETY: Caller contract.
    let vm = unsafe { vm_state(rs) };
    // SAFETY: An array of `NR_STATS` values (caller contract).
    let out = unsafe { core::slice::from_raw_parts_mut(out, NR_STATS) };
    vm.stats(out);
}

/// The statistics of the `pos`-th vCPU, in the order of
/// `enum nvmx_vcpu_stat`; false if there is none.
///
/// # Safety
///
/// As for [`nvmx_rs_vm_stats`], with `NR_VCPU_STATS` values.
#[no_mangle]
unsafe extern "C" fn nvmx_rs_vcpu_stats(rs: *mut c_void, pos: u32, out: *mut u64) -> bool {
    if out.is_null() {
        return false;
    }
    // SAFETY: Caller contract.
    let vm = unsafe { vm_state(rs) };
    // SAFETY: An array of `NR_VCPU_STATS` values (caller contract).
    let out = unsafe { core::slice::from_raw_parts_mut(out, NR_VCPU_STATS) };
    vm.vcpu_stats(pos as usize, out)
}
