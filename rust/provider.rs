// SPDX-License-Identifier: GPL-2.0

//! Nested page providers: what the module does when KVM maps, unmaps or
//! reads one of the five L1 pages of a nested vCPU.
//!
//! A provider is a type implementing [`Provider`]; [`Active`] names the one
//! compiled in. Everything here is safe code: the handles come from
//! [`crate::ffi`], which owns every `unsafe` operation.

use core::ffi::c_void;
use core::sync::atomic::{AtomicU64, Ordering};

use kernel::prelude::*;

use crate::ffi::{self, HostMap, Page, Vcpu};

/// The provider the module registers with KVM.
pub(crate) type Active = PassThrough;

/// Operations of a nested page provider; see `<asm/kvm_nvmx_pages.h>` for
/// the contract KVM expects (contexts, lifetimes, which calls may sleep).
pub(crate) trait Provider {
    /// Per-VM state, created at VM creation.
    type Vm: Send + Sync;
    /// Per-vCPU state, created at vCPU creation.
    type Vcpu: Send + Sync;

    fn vm_init() -> Result<Self::Vm>;
    fn vcpu_init(vm: &Self::Vm) -> Result<Self::Vcpu>;
    /// Maps `gfn` for `page`. May sleep.
    fn map(
        state: &Self::Vcpu,
        vcpu: &Vcpu<'_>,
        page: Page,
        gfn: u64,
        map: &mut HostMap<'_>,
    ) -> Result;
    /// Undoes a successful `map`.
    fn unmap(state: &Self::Vcpu, vcpu: &Vcpu<'_>, page: Page, map: &mut HostMap<'_>, dirty: bool);
    /// Starts an access to the contents of a mapped page; null if it is not
    /// available. Must not sleep.
    fn get(state: &Self::Vcpu, vcpu: &Vcpu<'_>, page: Page, map: &HostMap<'_>) -> *mut c_void;
    /// Ends an access started by a successful `get`. Must not sleep.
    fn put(state: &Self::Vcpu, vcpu: &Vcpu<'_>, page: Page, map: &HostMap<'_>, dirty: bool);
    /// The VM's memslots changed to generation `gen`.
    fn memslots_updated(vm: &Self::Vm, gen: u64);
}

/// Calls into KVM counted per vCPU, so tests and reviewers can see that the
/// hooks are reached.
#[derive(Default)]
pub(crate) struct Counters {
    maps: AtomicU64,
    unmaps: AtomicU64,
    gets: AtomicU64,
}

impl Counters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Counters {
    fn drop(&mut self) {
        pr_debug!(
            "vcpu freed: {} maps, {} unmaps, {} reads\n",
            self.maps.load(Ordering::Relaxed),
            self.unmaps.load(Ordering::Relaxed),
            self.gets.load(Ordering::Relaxed)
        );
    }
}

/// The pass-through provider: every operation is the stock one
/// (`kvm_vcpu_map()`/`kvm_vcpu_unmap()`, and the mapping's own address for
/// reads). It proves the hook layer: with it loaded, KVM must behave exactly
/// as without the module.
pub(crate) struct PassThrough;

impl Provider for PassThrough {
    type Vm = ();
    type Vcpu = Counters;

    fn vm_init() -> Result<()> {
        Ok(())
    }

    fn vcpu_init(_vm: &()) -> Result<Counters> {
        Ok(Counters::default())
    }

    fn map(
        state: &Counters,
        vcpu: &Vcpu<'_>,
        _page: Page,
        gfn: u64,
        map: &mut HostMap<'_>,
    ) -> Result {
        Counters::bump(&state.maps);
        ffi::stock_map(vcpu, gfn, map)
    }

    fn unmap(state: &Counters, vcpu: &Vcpu<'_>, _page: Page, map: &mut HostMap<'_>, dirty: bool) {
        Counters::bump(&state.unmaps);
        ffi::stock_unmap(vcpu, map, dirty);
    }

    fn get(state: &Counters, _vcpu: &Vcpu<'_>, _page: Page, map: &HostMap<'_>) -> *mut c_void {
        Counters::bump(&state.gets);
        ffi::map_hva(map)
    }

    fn put(_state: &Counters, _vcpu: &Vcpu<'_>, _page: Page, _map: &HostMap<'_>, _dirty: bool) {}

    fn memslots_updated(_vm: &(), _gen: u64) {}
}
