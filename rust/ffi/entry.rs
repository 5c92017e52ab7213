// SPDX-License-Identifier: GPL-2.0

//! The entry points the C shim calls (`nvmx_rs_*()` in
//! `include/nvmx_gpc_shim.h`): the provider's map/unmap/get/put, the life
//! cycle of the VM and vCPU states, the notifier and the statistics.

use core::ffi::c_void;
use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use kernel::prelude::*;
use kernel::sync::{Arc, ArcBorrow};
use kernel::types::ForeignOwnable;

use super::kvm::{LIVE_MAPPINGS, LIVE_REFS, LIVE_VMS};
use super::{
    bracket_page_kind, break_persistence, hw_page_kind, page_kind, raw, PageRef, Vcpu, VmHandle,
    NR_STATS, NR_VCPU_STATS,
};
use crate::cache::{CacheVcpu, CacheVm};
use crate::state::PageKind;

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
/// hits in the way KVM mapped last are handled here: a hardware-visible
/// page's with no call and no lock, the MSR bitmap's with the lock call
/// alone; everything else in [`map_rest`].
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
    if bracket_page_kind(page).is_some() {
        // SAFETY: The caller's contract is ours.
        return unsafe { map_bracket(vcpu, c, gfn, gen) };
    }
    // SAFETY: The caller's contract is ours.
    unsafe { map_rest(vcpu, c, page, gfn, gen) }
}

/// `map()` of the MSR bitmap, the only page KVM reads inside a non-sleeping
/// bracket: a hit in the way KVM mapped last takes the lock and makes no
/// other call. Apart from the hardware-visible hit, so that that one saves
/// no registers.
///
/// # Safety
///
/// As for [`nvmx_rs_map`], whose vCPU state `c` is.
#[inline(never)]
unsafe fn map_bracket(
    vcpu: *mut raw::kvm_vcpu,
    c: &CacheVcpu,
    gfn: u64,
    gen: u64,
) -> raw::nvmx_mapped {
    const PAGE: u32 = raw::nvmx_page_NVMX_PAGE_MSR_BITMAP;
    if let Some((m, guard)) = c.hit_shared(PageKind::MsrBitmap, gfn, gen) {
        // The shared hold lasts until the matching `unmap()`.
        guard.leak();
        return raw::nvmx_mapped {
            kaddr: m.kaddr,
            pfn: m.pfn,
        };
    }
    // SAFETY: The caller's contract is ours.
    unsafe { map_rest(vcpu, c, PAGE, gfn, gen) }
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
    let m = if kind.read_in_bracket() {
        match c.map_shared(&vcpu, kind, gfn, gen) {
            Ok((m, guard)) => {
                // The shared hold lasts until the matching `unmap()`.
                guard.leak();
                m
            }
            Err(e) => return mapped_err(e),
        }
    } else {
        match c.map(&vcpu, kind, gfn, gen) {
            Ok(m) => m,
            Err(e) => return mapped_err(e),
        }
    };
    // KVM's until `unmap()` hands it back (`nvmx_rs_unmap`).
    let _pfn = m.page_ref.map(PageRef::into_raw);
    raw::nvmx_mapped {
        kaddr: m.kaddr,
        pfn: m.pfn,
    }
}

/// A failed `map()`: the errno in `kaddr`, as `ERR_PTR()` would.
fn mapped_err(e: Error) -> raw::nvmx_mapped {
    raw::nvmx_mapped {
        kaddr: i64::from(e.to_errno()) as u64,
        pfn: 0,
    }
}

/// The provider's `unmap()`, at memslot generation `gen`. Handled here: the
/// release of a hardware-visible page that needs no dirty marking, with no
/// call, and the MSR bitmap's unlock; everything else in [`unmap_rest`].
///
/// # Safety
///
/// As for [`nvmx_rs_map`], for a page that a successful `map()` of the same
/// kind gave out and that is unmapped once; `pfn` is the pfn `map()`
/// returned. `kvm->srcu` may not be held (see `shim_unmap()`), and then
/// `gen` may be from just before a memslot update.
#[no_mangle]
unsafe extern "C" fn nvmx_rs_unmap(
    vcpu: *mut raw::kvm_vcpu,
    vcpu_priv: *mut c_void,
    page: u32,
    pfn: u64,
    dirty: bool,
    gen: u64,
) {
    // SAFETY: As in `nvmx_rs_map`.
    let c = unsafe { vcpu_state(vcpu_priv) };
    if hw_page_kind(page).is_some_and(|kind| c.unmap_hw_fast(kind, dirty, gen)) {
        return;
    }
    if bracket_page_kind(page).is_some() && !dirty && !break_persistence() {
        // SAFETY: The caller's contract is ours.
        return unsafe { unlock_bracket(c) };
    }
    // SAFETY: The caller's contract is ours.
    unsafe { unmap_rest(vcpu, c, page, pfn, dirty) }
}

/// `unmap()` of the MSR bitmap that leaves nothing to do but the unlock.
/// Apart from [`nvmx_rs_unmap`] and [`unmap_rest`], so that both calls are
/// tail calls and the hardware-visible release saves no registers.
///
/// # Safety
///
/// As for [`nvmx_rs_unmap`] of the MSR bitmap, whose vCPU state `c` is.
#[inline(never)]
unsafe fn unlock_bracket(c: &CacheVcpu) {
    // SAFETY: `map()` of the MSR bitmap leaked the guard of a shared hold of
    // the way KVM mapped last (`CacheVcpu::hit_shared`,
    // `CacheVcpu::map_shared`), which is still the way `lock_of()` finds,
    // and KVM unmaps each mapping once: the hold is ours to drop.
    unsafe { c.lock_of(PageKind::MsrBitmap).unlock_leaked_read() }
}

/// # Safety
///
/// As for [`nvmx_rs_unmap`], whose vCPU state `c` is.
#[inline(never)]
unsafe fn unmap_rest(vcpu: *mut raw::kvm_vcpu, c: &CacheVcpu, page: u32, pfn: u64, dirty: bool) {
    if bracket_page_kind(page).is_some() {
        // SAFETY: As in `unlock_bracket()`.
        unsafe { unlock_bracket(c) };
    }
    // SAFETY: The vCPU is live for this call (caller contract).
    let (Some(vcpu), Some(kind)) = (unsafe { vcpu_of(vcpu) }, page_kind(page)) else {
        return;
    };
    if kind.hardware_visible() {
        c.unmap_hw(&vcpu, kind, dirty);
    } else if kind.read_in_bracket() {
        // The shared hold is gone (above).
        c.unmap_read(&vcpu, kind, None, dirty);
    } else {
        // SAFETY: For this kind `map()` handed KVM a reference as the pfn
        // (`Mapped::page_ref`), and KVM unmaps each mapping once.
        let page_ref = unsafe { PageRef::from_raw(pfn) };
        c.unmap_read(&vcpu, kind, Some(page_ref), dirty);
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

/// Whether the vCPU's last `map()` refreshed, for the `nvmx_gpc_hit` trace
/// event; clears it.
///
/// # Safety
///
/// `vcpu_priv` is the vCPU's state (see [`vcpu_state`]), called on the
/// vCPU's thread after its `map()`.
#[no_mangle]
unsafe extern "C" fn nvmx_rs_take_refreshed(vcpu_priv: *mut c_void) -> bool {
    // SAFETY: The vCPU's state (caller contract).
    unsafe { vcpu_state(vcpu_priv) }.take_refreshed()
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

/// The output array of a statistics entry point, or `None` for null.
///
/// # Safety
///
/// `out` is null or points to `N` writable values that nothing else
/// accesses during `'a`.
unsafe fn stats_out<'a, const N: usize>(out: *mut u64) -> Option<&'a mut [u64; N]> {
    // SAFETY: Null or valid for `N` values and unaliased (caller contract).
    unsafe { out.cast::<[u64; N]>().as_mut() }
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
    // SAFETY: Caller contract.
    if let Some(out) = unsafe { stats_out::<NR_STATS>(out) } {
        // SAFETY: Caller contract.
        unsafe { vm_state(rs) }.stats(out);
    }
}

/// The statistics of the `pos`-th vCPU, in the order of
/// `enum nvmx_vcpu_stat`; false if there is none.
///
/// # Safety
///
/// As for [`nvmx_rs_vm_stats`], with `NR_VCPU_STATS` values.
#[no_mangle]
unsafe extern "C" fn nvmx_rs_vcpu_stats(rs: *mut c_void, pos: u32, out: *mut u64) -> bool {
    // SAFETY: Caller contract.
    let Some(out) = (unsafe { stats_out::<NR_VCPU_STATS>(out) }) else {
        return false;
    };
    // SAFETY: Caller contract.
    unsafe { vm_state(rs) }.vcpu_stats(pos as usize, out)
}
