// SPDX-License-Identifier: GPL-2.0

//! The module's only contact with C: bindgen output for
//! `include/nvmx_gpc_shim.h`, safe handles for the KVM objects that cross
//! it, and the `extern "C"` entry points the C shim's provider table calls.
//!
//! Every `unsafe` operation of the module lives in this file. The rest of
//! the module sees [`Vcpu`], [`HostMap`] and [`Page`], never a raw pointer.

use core::ffi::c_void;
use core::marker::PhantomData;
use core::ptr::NonNull;

use kernel::alloc::{flags::GFP_KERNEL, KBox};
use kernel::error::{to_result, Error};
use kernel::prelude::*;

use crate::provider::{Active, Provider};

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

/// ABI version the C shim was compiled with.
pub(crate) fn shim_abi_version() -> u32 {
    // SAFETY: `nvmx_shim_abi_version` takes no arguments and returns a
    // constant.
    unsafe { raw::nvmx_shim_abi_version() }
}

/// Registers the provider table with KVM. VMs created from now on use it.
pub(crate) fn register() -> Result {
    // SAFETY: Called from module init, in process context; the table it
    // registers points at functions of this module, which stays loaded while
    // the table is registered (it is unregistered in the module's `Drop`) or
    // a VM uses it (KVM holds a module reference per bound VM).
    to_result(unsafe { raw::nvmx_shim_register() })
}

/// Unregisters the provider table. VMs bound to it keep it until destroyed.
pub(crate) fn unregister() {
    // SAFETY: Called from the module's `Drop`, in process context, after a
    // successful `register()`.
    unsafe { raw::nvmx_shim_unregister() }
}

/// One of the five L1 pages nested VMX maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Page {
    MsrBitmap,
    Evmcs,
    ApicAccess,
    VirtualApic,
    PiDesc,
}

impl Page {
    fn from_raw(v: u32) -> Option<Self> {
        Some(match v {
            raw::nvmx_page_NVMX_PAGE_MSR_BITMAP => Page::MsrBitmap,
            raw::nvmx_page_NVMX_PAGE_EVMCS => Page::Evmcs,
            raw::nvmx_page_NVMX_PAGE_APIC_ACCESS => Page::ApicAccess,
            raw::nvmx_page_NVMX_PAGE_VIRTUAL_APIC => Page::VirtualApic,
            raw::nvmx_page_NVMX_PAGE_PI_DESC => Page::PiDesc,
            _ => return None,
        })
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

/// The stock mapping of `gfn`, i.e. `kvm_vcpu_map()`. May sleep.
pub(crate) fn stock_map(vcpu: &Vcpu<'_>, gfn: u64, map: &mut HostMap<'_>) -> Result {
    // SAFETY: By the type invariants both pointers are live and `map` is
    // exclusively ours; the provider contract calls `map()` in process
    // context with the vCPU loaded, as kvm_vcpu_map() requires.
    to_result(unsafe { raw::nvmx_shim_stock_map(vcpu.ptr.as_ptr(), gfn, map.ptr.as_ptr()) })
}

/// Undoes [`stock_map`], i.e. `kvm_vcpu_unmap()`.
pub(crate) fn stock_unmap(vcpu: &Vcpu<'_>, map: &mut HostMap<'_>, dirty: bool) {
    // SAFETY: As for `stock_map`; the provider contract calls `unmap()` only
    // for a mapping that `map()` filled.
    unsafe { raw::nvmx_shim_stock_unmap(vcpu.ptr.as_ptr(), map.ptr.as_ptr(), dirty) }
}

/// The kernel address `map` holds, or null.
pub(crate) fn map_hva(map: &HostMap<'_>) -> *mut c_void {
    // SAFETY: By the type invariant `map.ptr` is live.
    unsafe { raw::nvmx_shim_map_hva(map.ptr.as_ptr()) }
}

/// Builds the borrowed handles of one callback.
///
/// # Safety
///
/// `vcpu` and `map` must be the live, non-null pointers KVM passed to the
/// callback, valid (and `map` unaliased) until the callback returns.
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

/// Turns a provider's per-VM or per-vCPU state into the opaque pointer KVM
/// keeps for us, and back.
fn into_priv<T>(state: T, out: *mut *mut c_void) -> i32 {
    match KBox::new(state, GFP_KERNEL) {
        Ok(b) => {
            // SAFETY: KVM passes a valid out-pointer to vm_init/vcpu_init.
            unsafe { *out = KBox::into_raw(b).cast() };
            0
        }
        Err(_) => ENOMEM.to_errno(),
    }
}

/// Borrows the state behind a private pointer made by [`into_priv`].
///
/// # Safety
///
/// `p` must come from `into_priv::<T>` and not have been freed yet.
unsafe fn priv_ref<'a, T>(p: *mut c_void) -> &'a T {
    // SAFETY: The caller guarantees `p` is a live `KBox<T>` allocation; KVM
    // frees it only through vm_destroy/vcpu_free, after the last callback.
    unsafe { &*p.cast::<T>() }
}

/// Frees the state behind a private pointer made by [`into_priv`].
///
/// # Safety
///
/// As for [`priv_ref`], and no reference to it may outlive this call.
unsafe fn free_priv<T>(p: *mut c_void) {
    if !p.is_null() {
        // SAFETY: The caller guarantees `p` came from `KBox::into_raw` of a
        // `KBox<T>` and is not used again.
        drop(unsafe { KBox::<T>::from_raw(p.cast()) });
    }
}

type VmState = <Active as Provider>::Vm;
type VcpuState = <Active as Provider>::Vcpu;

#[no_mangle]
extern "C" fn nvmx_rs_vm_init(_kvm: *mut raw::kvm, vm_priv: *mut *mut c_void) -> i32 {
    match Active::vm_init() {
        Ok(state) => into_priv(state, vm_priv),
        Err(e) => e.to_errno(),
    }
}

#[no_mangle]
extern "C" fn nvmx_rs_vm_destroy(_kvm: *mut raw::kvm, vm_priv: *mut c_void) {
    // SAFETY: KVM calls vm_destroy once, after every vCPU is freed, with
    // the pointer vm_init stored.
    unsafe { free_priv::<VmState>(vm_priv) }
}

#[no_mangle]
extern "C" fn nvmx_rs_vcpu_init(
    _vcpu: *mut raw::kvm_vcpu,
    vm_priv: *mut c_void,
    vcpu_priv: *mut *mut c_void,
) -> i32 {
    // SAFETY: The VM's state lives until vm_destroy, after all vCPUs.
    let vm = unsafe { priv_ref::<VmState>(vm_priv) };
    match Active::vcpu_init(vm) {
        Ok(state) => into_priv(state, vcpu_priv),
        Err(e) => e.to_errno(),
    }
}

#[no_mangle]
extern "C" fn nvmx_rs_vcpu_free(_vcpu: *mut raw::kvm_vcpu, vcpu_priv: *mut c_void) {
    // SAFETY: KVM calls vcpu_free once per vCPU, after its last map/unmap.
    unsafe { free_priv::<VcpuState>(vcpu_priv) }
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
    let (Some((vcpu, mut map)), Some(page)) = (unsafe { handles(vcpu, map) }, Page::from_raw(page))
    else {
        return EINVAL.to_errno();
    };
    // SAFETY: vcpu_priv was stored by vcpu_init and lives until vcpu_free.
    let state = unsafe { priv_ref::<VcpuState>(vcpu_priv) };
    match Active::map(state, &vcpu, page, gfn, &mut map) {
        Ok(()) => 0,
        Err(e) => Error::to_errno(e),
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
    let (Some((vcpu, mut map)), Some(page)) = (unsafe { handles(vcpu, map) }, Page::from_raw(page))
    else {
        return;
    };
    // SAFETY: As in `nvmx_rs_map`.
    let state = unsafe { priv_ref::<VcpuState>(vcpu_priv) };
    Active::unmap(state, &vcpu, page, &mut map, dirty);
}

#[no_mangle]
extern "C" fn nvmx_rs_get(
    vcpu: *mut raw::kvm_vcpu,
    vcpu_priv: *mut c_void,
    page: u32,
    map: *mut raw::kvm_host_map,
) -> *mut c_void {
    // SAFETY: As in `nvmx_rs_map`.
    let (Some((vcpu, map)), Some(page)) = (unsafe { handles(vcpu, map) }, Page::from_raw(page))
    else {
        return core::ptr::null_mut();
    };
    // SAFETY: As in `nvmx_rs_map`.
    let state = unsafe { priv_ref::<VcpuState>(vcpu_priv) };
    Active::get(state, &vcpu, page, &map)
}

#[no_mangle]
extern "C" fn nvmx_rs_put(
    vcpu: *mut raw::kvm_vcpu,
    vcpu_priv: *mut c_void,
    page: u32,
    map: *mut raw::kvm_host_map,
    dirty: bool,
) {
    // SAFETY: As in `nvmx_rs_map`.
    let (Some((vcpu, map)), Some(page)) = (unsafe { handles(vcpu, map) }, Page::from_raw(page))
    else {
        return;
    };
    // SAFETY: As in `nvmx_rs_map`.
    let state = unsafe { priv_ref::<VcpuState>(vcpu_priv) };
    Active::put(state, &vcpu, page, &map, dirty);
}

#[no_mangle]
extern "C" fn nvmx_rs_memslots_updated(_kvm: *mut raw::kvm, vm_priv: *mut c_void, gen: u64) {
    // SAFETY: The VM's state lives until vm_destroy; memslot updates cannot
    // race with VM destruction.
    let vm = unsafe { priv_ref::<VmState>(vm_priv) };
    Active::memslots_updated(vm, gen);
}
