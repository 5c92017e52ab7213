// SPDX-License-Identifier: GPL-2.0

//! The module's only contact with C: bindgen output for
//! `include/nvmx_gpc_shim.h`, safe handles for the KVM objects that cross
//! it, a reader-writer lock backed by a C `rwlock_t`, and the `extern "C"`
//! entry points the C shim calls.
//!
//! Every `unsafe` operation of the module lives in this file. The rest of
//! the module sees [`Vcpu`], [`HostMap`], [`VmHandle`], [`RwLock`] and
//! [`Pfn`], never a raw pointer.

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use kernel::error::to_result;
use kernel::prelude::*;
use kernel::sync::Arc;

use crate::provider::{VcpuState, VmState};
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

/// Index of a page kind in per-kind arrays (and its lock class).
pub(crate) fn kind_index(kind: PageKind) -> usize {
    match kind {
        PageKind::MsrBitmap => 0,
        PageKind::Evmcs => 1,
        PageKind::ApicAccess => 2,
        PageKind::VirtualApic => 3,
        PageKind::PiDesc => 4,
    }
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

/// KVM's record of one mapping (`struct kvm_host_map`), borrowed mutably for
/// the duration of one callback from KVM.
///
/// # Invariants
///
/// `ptr` points to a live `struct kvm_host_map` that nothing else accesses
/// for at least `'a`.
pub(crate) struct HostMap<'a> {
    ptr: NonNull<raw::kvm_host_map>,
    _p: PhantomData<&'a mut raw::kvm_host_map>,
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
    /// The VM's memslot generation. KVM calls `map()` with `kvm->srcu` held,
    /// which the read requires; only `map()` calls this.
    pub(crate) fn memslots_gen(&self) -> u64 {
        // SAFETY: The vCPU is live (type invariant) and `kvm->srcu` is held
        // during `map()` (provider contract).
        unsafe { raw::nvmx_shim_memslots_gen(self.ptr.as_ptr()) }
    }

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

    /// The stock mapping of `gfn`, i.e. `kvm_vcpu_map()`. May sleep.
    pub(crate) fn stock_map(&self, gfn: u64, map: &mut HostMap<'_>) -> Result {
        // SAFETY: Both pointers are live and `map` is exclusively ours; the
        // provider contract calls `map()` in process context with the vCPU
        // loaded, as kvm_vcpu_map() requires.
        to_result(unsafe { raw::nvmx_shim_stock_map(self.ptr.as_ptr(), gfn, map.ptr.as_ptr()) })
    }

    /// Undoes [`Vcpu::stock_map`], i.e. `kvm_vcpu_unmap()`.
    pub(crate) fn stock_unmap(&self, map: &mut HostMap<'_>, dirty: bool) {
        // SAFETY: As for `stock_map`; `unmap()` is only called for a mapping
        // that `map()` filled.
        unsafe { raw::nvmx_shim_stock_unmap(self.ptr.as_ptr(), map.ptr.as_ptr(), dirty) }
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
    pub(crate) fn resolve(&self) -> Result<Pfn> {
        let mut out = raw::nvmx_pfn::default();
        // SAFETY: The memslot is live (type invariant); `map()` runs in
        // process context and may sleep, and `out` is a valid out-pointer.
        to_result(unsafe { raw::nvmx_shim_resolve(self.ptr.as_ptr(), self.gfn, &mut out) })?;
        LIVE_MAPPINGS.fetch_add(1, Ordering::Relaxed);
        LIVE_REFS.fetch_add(1, Ordering::Relaxed);
        // INVARIANT: `out` was filled by a successful `nvmx_shim_resolve`.
        Ok(Pfn { raw: out })
    }
}

impl HostMap<'_> {
    /// The kernel address the record holds, or null.
    pub(crate) fn hva(&self) -> *mut c_void {
        // SAFETY: By the type invariant `ptr` is live.
        unsafe { raw::nvmx_shim_map_hva(self.ptr.as_ptr()) }
    }

    /// The pfn the record holds.
    pub(crate) fn pfn(&self) -> u64 {
        // SAFETY: By the type invariant `ptr` is live.
        unsafe { raw::nvmx_shim_map_pfn(self.ptr.as_ptr()) }
    }

    /// Records a mapping made by the cache.
    pub(crate) fn fill(&mut self, kaddr: u64, pfn: u64, gfn: u64) {
        // SAFETY: By the type invariant `ptr` is live and ours.
        unsafe { raw::nvmx_shim_map_fill(self.ptr.as_ptr(), kaddr, pfn, gfn) }
    }

    /// Clears the record (the cache keeps the mapping).
    pub(crate) fn clear(&mut self) {
        // SAFETY: By the type invariant `ptr` is live and ours.
        unsafe { raw::nvmx_shim_map_clear(self.ptr.as_ptr()) }
    }
}

/// Kernel mappings made by [`Vcpu::resolve`] and not yet undone.
static LIVE_MAPPINGS: AtomicU64 = AtomicU64::new(0);
/// Pfn references taken ([`Vcpu::resolve`], [`Pfn::get_ref`]) and not yet
/// dropped ([`Pfn::put_ref`]).
static LIVE_REFS: AtomicU64 = AtomicU64::new(0);
/// VM states alive.
static LIVE_VMS: AtomicU64 = AtomicU64::new(0);

/// A page resolved and mapped into the kernel by [`Vcpu::resolve`]. It
/// carries a pfn reference (if the page is refcounted) until
/// [`Pfn::put_ref`] and a kernel mapping until [`Pfn::unmap`]; the cache
/// decides when each goes.
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

    /// Drops the pfn reference `resolve` took. Call once per `resolve`.
    pub(crate) fn put_ref(&self, dirty: bool) {
        // SAFETY: By the type invariant this came from a successful resolve;
        // the cache calls this once per resolve (for hardware-visible pages
        // right after install, otherwise when the mapping is replaced).
        unsafe { raw::nvmx_shim_put_pfn(&self.raw, dirty) };
        LIVE_REFS.fetch_sub(1, Ordering::Relaxed);
    }

    /// Takes another reference on the page of a valid cache entry, for the
    /// time KVM has it mapped. False if the page is already being freed.
    pub(crate) fn get_ref(pfn: u64) -> bool {
        // SAFETY: `nvmx_shim_get_pfn` only increments a refcount that is
        // not zero; it is called for a pfn of a valid cache entry, which the
        // VM's process still maps (no invalidation of it has started).
        let ok = unsafe { raw::nvmx_shim_get_pfn(pfn) };
        if ok {
            LIVE_REFS.fetch_add(1, Ordering::Relaxed);
        }
        ok
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
        ReadGuard { lock: self }
    }

    /// Takes the lock exclusive. Does not sleep.
    pub(crate) fn write(&self) -> WriteGuard<'_, T> {
        // SAFETY: The lock is live (type invariant).
        unsafe { raw::nvmx_shim_write_lock(self.lock.as_ptr()) };
        WriteGuard { lock: self }
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

/// Builds the borrowed handles of one callback.
///
/// # Safety
///
/// `vcpu` and `map` must be the pointers KVM passed to the callback, live
/// (and `map` unaliased) until the callback returns.
unsafe fn handles<'a>(
    vcpu: *mut raw::kvm_vcpu,
    map: *mut raw::kvm_host_map,
) -> Option<(Vcpu<'a>, HostMap<'a>)> {
    // INVARIANT: The caller guarantees liveness and exclusivity for 'a.
    Some((
        Vcpu {
            ptr: NonNull::new(vcpu)?,
            _p: PhantomData,
        },
        HostMap {
            ptr: NonNull::new(map)?,
            _p: PhantomData,
        },
    ))
}

/// Borrows the state behind a private pointer made by `Arc::into_raw` or
/// `KBox::into_raw`.
///
/// # Safety
///
/// `p` must point to a live `T` that outlives `'a`.
unsafe fn priv_ref<'a, T>(p: *const c_void) -> &'a T {
    // SAFETY: Guaranteed by the caller.
    unsafe { &*p.cast::<T>() }
}

#[no_mangle]
extern "C" fn nvmx_rs_vm_init(vm: *mut raw::nvmx_vm, rs: *mut *mut c_void) -> i32 {
    let Some(ptr) = NonNull::new(vm) else {
        return EINVAL.to_errno();
    };
    // INVARIANT: The shim frees its `nvmx_vm` only after `nvmx_rs_vm_destroy`
    // dropped the state that holds this handle.
    let handle = VmHandle { ptr };
    match VmState::new(handle).and_then(|s| Ok(Arc::new(s, GFP_KERNEL)?)) {
        Ok(state) => {
            LIVE_VMS.fetch_add(1, Ordering::Relaxed);
            // SAFETY: The shim passes a valid out-pointer.
            unsafe { *rs = Arc::into_raw(state).cast_mut().cast() };
            0
        }
        Err(e) => e.to_errno(),
    }
}

#[no_mangle]
extern "C" fn nvmx_rs_vm_destroy(rs: *mut c_void) {
    if !rs.is_null() {
        // SAFETY: `rs` came from `Arc::into_raw` in `nvmx_rs_vm_init`, and
        // the shim calls this once, after the notifier is unregistered.
        drop(unsafe { Arc::<VmState>::from_raw(rs.cast()) });
        LIVE_VMS.fetch_sub(1, Ordering::Relaxed);
    }
}

#[no_mangle]
extern "C" fn nvmx_rs_live(mappings: *mut u64, refs: *mut u64, vms: *mut u64) {
    if mappings.is_null() || refs.is_null() || vms.is_null() {
        return;
    }
    // SAFETY: The shim passes three valid out-pointers.
    unsafe {
        *mappings = LIVE_MAPPINGS.load(Ordering::Relaxed);
        *refs = LIVE_REFS.load(Ordering::Relaxed);
        *vms = LIVE_VMS.load(Ordering::Relaxed);
    }
}

#[no_mangle]
extern "C" fn nvmx_rs_vcpu_init(
    vcpu: *mut raw::kvm_vcpu,
    rs: *mut c_void,
    vcpu_priv: *mut *mut c_void,
) -> i32 {
    let Some(ptr) = NonNull::new(vcpu) else {
        return EINVAL.to_errno();
    };
    // INVARIANT: KVM passes the live vCPU being created.
    let vcpu = Vcpu {
        ptr,
        _p: PhantomData,
    };
    // SAFETY: `rs` is the VM's state from `nvmx_rs_vm_init`, alive until
    // vm_destroy, which KVM calls after every vCPU is freed.
    let vm = unsafe { vm_state(rs) };
    match VcpuState::new(vm, &vcpu).and_then(|s| Ok(KBox::new(s, GFP_KERNEL)?)) {
        Ok(b) => {
            // SAFETY: KVM passes a valid out-pointer.
            unsafe { *vcpu_priv = KBox::into_raw(b).cast() };
            0
        }
        Err(e) => e.to_errno(),
    }
}

#[no_mangle]
extern "C" fn nvmx_rs_vcpu_free(_vcpu: *mut raw::kvm_vcpu, vcpu_priv: *mut c_void) {
    if !vcpu_priv.is_null() {
        // SAFETY: `vcpu_priv` came from `KBox::into_raw` in
        // `nvmx_rs_vcpu_init`; KVM calls this once, after the vCPU's last
        // map/unmap/get/put.
        drop(unsafe { KBox::<VcpuState>::from_raw(vcpu_priv.cast()) });
    }
}

#[no_mangle]
extern "C" fn nvmx_rs_map(
    vcpu: *mut raw::kvm_vcpu,
    vcpu_priv: *mut c_void,
    page: u32,
    gfn: u64,
    map: *mut raw::kvm_host_map,
) -> i32 {
    // SAFETY: KVM passes live pointers that stay valid for this call.
    let (Some((vcpu, mut map)), Some(kind)) = (unsafe { handles(vcpu, map) }, page_kind(page))
    else {
        return EINVAL.to_errno();
    };
    // SAFETY: `vcpu_priv` was stored by vcpu_init and lives until vcpu_free.
    let state = unsafe { priv_ref::<VcpuState>(vcpu_priv) };
    match state.map(&vcpu, kind, gfn, &mut map) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

#[no_mangle]
extern "C" fn nvmx_rs_unmap(
    vcpu: *mut raw::kvm_vcpu,
    vcpu_priv: *mut c_void,
    page: u32,
    map: *mut raw::kvm_host_map,
    dirty: bool,
) {
    // SAFETY: As in `nvmx_rs_map`.
    let (Some((vcpu, mut map)), Some(kind)) = (unsafe { handles(vcpu, map) }, page_kind(page))
    else {
        return;
    };
    // SAFETY: As in `nvmx_rs_map`.
    let state = unsafe { priv_ref::<VcpuState>(vcpu_priv) };
    state.unmap(&vcpu, kind, &mut map, dirty);
}

#[no_mangle]
extern "C" fn nvmx_rs_get(
    vcpu: *mut raw::kvm_vcpu,
    vcpu_priv: *mut c_void,
    page: u32,
    map: *mut raw::kvm_host_map,
) -> *mut c_void {
    // SAFETY: As in `nvmx_rs_map`.
    let (Some((_vcpu, map)), Some(kind)) = (unsafe { handles(vcpu, map) }, page_kind(page)) else {
        return core::ptr::null_mut();
    };
    // SAFETY: As in `nvmx_rs_map`.
    let state = unsafe { priv_ref::<VcpuState>(vcpu_priv) };
    match state {
        VcpuState::PassThrough(_) => map.hva(),
        VcpuState::Cache(c) => match c.get(kind) {
            Some((kaddr, guard)) => {
                // The shared hold lasts until KVM's matching put(); the
                // provider contract pairs every non-null get() with one.
                guard.leak();
                kaddr as usize as *mut c_void
            }
            None => core::ptr::null_mut(),
        },
    }
}

#[no_mangle]
extern "C" fn nvmx_rs_put(
    _vcpu: *mut raw::kvm_vcpu,
    vcpu_priv: *mut c_void,
    page: u32,
    _map: *mut raw::kvm_host_map,
    _dirty: bool,
) {
    let Some(kind) = page_kind(page) else {
        return;
    };
    // SAFETY: As in `nvmx_rs_map`.
    let state = unsafe { priv_ref::<VcpuState>(vcpu_priv) };
    if let VcpuState::Cache(c) = state {
        // SAFETY: KVM calls put() exactly once after each non-null get() of
        // the same page, whose guard `nvmx_rs_get` leaked.
        unsafe { c.slot(kind).unlock_leaked_read() };
    }
}

/// Borrows the VM state behind the shim's `rs` pointer.
///
/// # Safety
///
/// `rs` must be the pointer `nvmx_rs_vm_init` stored, before vm_destroy.
unsafe fn vm_state<'a>(rs: *mut c_void) -> &'a VmState {
    // SAFETY: Guaranteed by the caller: the Arc's allocation is live.
    unsafe { priv_ref::<VmState>(rs) }
}

#[no_mangle]
extern "C" fn nvmx_rs_memslots_updated(rs: *mut c_void, gen: u64) {
    // SAFETY: Memslot updates cannot race with VM destruction.
    unsafe { vm_state(rs) }.memslots_updated(gen);
}

#[no_mangle]
extern "C" fn nvmx_rs_mn_start(rs: *mut c_void, start: u64, end: u64) {
    // SAFETY: The shim unregisters the notifier (waiting for callbacks)
    // before it destroys the VM state.
    unsafe { vm_state(rs) }.invalidate_start(start, end);
}

#[no_mangle]
extern "C" fn nvmx_rs_reap(rs: *mut c_void) {
    // SAFETY: The shim cancels its work item (waiting for it) before it
    // destroys the VM state.
    unsafe { vm_state(rs) }.reap();
}

#[no_mangle]
extern "C" fn nvmx_rs_mn_end(rs: *mut c_void, start: u64, end: u64) {
    // SAFETY: As in `nvmx_rs_mn_start`.
    unsafe { vm_state(rs) }.invalidate_end(start, end);
}

#[no_mangle]
extern "C" fn nvmx_rs_mn_release(rs: *mut c_void) {
    // SAFETY: As in `nvmx_rs_mn_start`.
    unsafe { vm_state(rs) }.release();
}

#[no_mangle]
extern "C" fn nvmx_rs_vm_stats(rs: *mut c_void, out: *mut u64) {
    if out.is_null() {
        return;
    }
    // SAFETY: The shim removes the statistics file (waiting for readers)
    // before it destroys the VM state.
    let vm = unsafe { vm_state(rs) };
    // SAFETY: The shim passes an array of `NR_STATS` values.
    let out = unsafe { core::slice::from_raw_parts_mut(out, NR_STATS) };
    vm.stats(out);
}

#[no_mangle]
extern "C" fn nvmx_rs_vcpu_stats(rs: *mut c_void, pos: u32, out: *mut u64) -> bool {
    if out.is_null() {
        return false;
    }
    // SAFETY: As in `nvmx_rs_vm_stats`.
    let vm = unsafe { vm_state(rs) };
    // SAFETY: The shim passes an array of `NR_VCPU_STATS` values.
    let out = unsafe { core::slice::from_raw_parts_mut(out, NR_VCPU_STATS) };
    vm.vcpu_stats(pos as usize, out)
}
