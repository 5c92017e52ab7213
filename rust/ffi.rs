// SPDX-License-Identifier: GPL-2.0

//! The module's only contact with C, by job:
//!
//! - this file: bindgen output for `include/nvmx_gpc_shim.h` (`raw`),
//!   registration, module parameters and the page kinds of the header;
//! - [`kvm`]: safe handles for the KVM objects that cross the boundary
//!   ([`Vcpu`], [`VcpuRef`], [`kvm::Memslot`], [`VmHandle`]) and what the cache
//!   owns of KVM's memory ([`Pfn`], a kernel mapping; [`PageRef`], a page
//!   reference);
//! - [`lock`]: a reader-writer lock backed by a C `rwlock_t`;
//! - [`entry`]: the `unsafe extern "C"` entry points the C shim calls.
//!
//! Every `unsafe` operation of the module lives here; the other files
//! `#![forbid(unsafe_code)]` and never see a raw pointer.

use kernel::error::to_result;
use kernel::prelude::*;

use crate::state::PageKind;

mod entry;
mod kvm;
mod lock;

pub(crate) use entry::Mapped;
pub(crate) use kvm::{trace_invalidate, PageRef, Pfn, Vcpu, VcpuRef, VmHandle};
pub(crate) use lock::{ReadGuard, RwLock};

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

/// Caches per vCPU and page kind (`NVMX_WAYS`).
pub(crate) const WAYS: usize = raw::NVMX_WAYS as usize;

/// Number of statistics reported per VM (`enum nvmx_stat`).
pub(crate) const NR_STATS: usize = raw::nvmx_stat_NVMX_NR_STATS as usize;

/// Number of values reported per vCPU (`enum nvmx_vcpu_stat`).
pub(crate) const NR_VCPU_STATS: usize = raw::nvmx_vcpu_stat_NVMX_NR_VCPU_STATS as usize;

/// A per-VM statistic: an index of `enum nvmx_stat`. The list that names
/// and describes them is `NVMX_VM_STATS` in `include/nvmx_gpc_stats.h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum VmStat {
    Hits = raw::nvmx_stat_NVMX_STAT_HITS,
    Misses = raw::nvmx_stat_NVMX_STAT_MISSES,
    Refreshes = raw::nvmx_stat_NVMX_STAT_REFRESHES,
    Retries = raw::nvmx_stat_NVMX_STAT_RETRIES,
    InvalNotifier = raw::nvmx_stat_NVMX_STAT_INVAL_NOTIFIER,
    InvalMemslot = raw::nvmx_stat_NVMX_STAT_INVAL_MEMSLOT,
    InvalTeardown = raw::nvmx_stat_NVMX_STAT_INVAL_TEARDOWN,
    Memremap = raw::nvmx_stat_NVMX_STAT_MEMREMAP,
    Memunmap = raw::nvmx_stat_NVMX_STAT_MEMUNMAP,
    Reloads = raw::nvmx_stat_NVMX_STAT_RELOADS,
    Vcpus = raw::nvmx_stat_NVMX_STAT_VCPUS,
}

impl VmStat {
    /// Every statistic, in the order of `enum nvmx_stat`.
    pub(crate) const ALL: [VmStat; NR_STATS] = [
        VmStat::Hits,
        VmStat::Misses,
        VmStat::Refreshes,
        VmStat::Retries,
        VmStat::InvalNotifier,
        VmStat::InvalMemslot,
        VmStat::InvalTeardown,
        VmStat::Memremap,
        VmStat::Memunmap,
        VmStat::Reloads,
        VmStat::Vcpus,
    ];
}

/// A per-vCPU value: an index of `enum nvmx_vcpu_stat`. The list that
/// names the statistics is `NVMX_VCPU_STATS` in `include/nvmx_gpc_stats.h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum VcpuStat {
    /// `vcpu->vcpu_idx`, which names the vCPU's lines.
    Idx = raw::nvmx_vcpu_stat_NVMX_VCPU_STAT_IDX,
    Kicks = raw::nvmx_vcpu_stat_NVMX_VCPU_STAT_KICKS,
    Refreshes = raw::nvmx_vcpu_stat_NVMX_VCPU_STAT_REFRESHES,
    Hits = raw::nvmx_vcpu_stat_NVMX_VCPU_STAT_HITS,
}

impl VcpuStat {
    /// Every value, in the order of `enum nvmx_vcpu_stat`.
    pub(crate) const ALL: [VcpuStat; NR_VCPU_STATS] = [
        VcpuStat::Idx,
        VcpuStat::Kicks,
        VcpuStat::Refreshes,
        VcpuStat::Hits,
    ];
}

// `VmStat::ALL` and `VcpuStat::ALL` list every index of the C enums, in
// order (their lengths are the C counts, so a statistic added in C and not
// here fails to build), and each name has the C value of the same name.
const _: () = {
    let mut i = 0;
    while i < NR_STATS {
        assert!(VmStat::ALL[i] as usize == i);
        i += 1;
    }
    let mut i = 0;
    while i < NR_VCPU_STATS {
        assert!(VcpuStat::ALL[i] as usize == i);
        i += 1;
    }
};

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

/// Defines `fn $name() -> bool` for the test-only module parameter
/// `$name`: in the test-knob build (`NVMX_TEST_KNOBS=1`, cfg
/// `nvmx_test_knobs`) it reads the parameter through `$shim`; in a default
/// build, which has no such parameter, it is a constant false, so the hot
/// paths carry no call for it.
macro_rules! test_knob {
    ($(#[$doc:meta])* $name:ident => $shim:ident) => {
        $(#[$doc])*
        #[cfg(nvmx_test_knobs)]
        pub(crate) fn $name() -> bool {
            // SAFETY: Reads a module parameter with `READ_ONCE`; no
            // preconditions.
            unsafe { raw::$shim() }
        }

        $(#[$doc])*
        #[cfg(not(nvmx_test_knobs))]
        #[inline(always)]
        pub(crate) const fn $name() -> bool {
            false
        }
    };
}

test_knob!(
    /// `break_invalidation`: ignore mmu_notifier and memslot invalidations.
    break_invalidation => nvmx_shim_break_invalidation
);
test_knob!(
    /// `break_persistence`: drop every cached mapping at `unmap()`.
    break_persistence => nvmx_shim_break_persistence
);
test_knob!(
    /// `break_lookup`: look caches up by page kind alone.
    break_lookup => nvmx_shim_break_lookup
);
test_knob!(
    /// `break_sticky_hw`: keep a vCPU's claim after it left L2.
    break_sticky_hw => nvmx_shim_break_sticky_hw
);

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

/// [`page_kind`] for the kinds KVM reads only inside a non-sleeping bracket
/// ([`PageKind::read_in_bracket`]), whose hit and release the entry points
/// handle with the lock call alone.
#[inline]
fn bracket_page_kind(v: u32) -> Option<PageKind> {
    match v {
        raw::nvmx_page_NVMX_PAGE_MSR_BITMAP => Some(PageKind::MsrBitmap),
        _ => None,
    }
}

/// Index of a page kind in per-kind arrays (and its lock class).
#[inline]
pub(crate) fn kind_index(kind: PageKind) -> usize {
    kind as usize
}
