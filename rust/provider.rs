// SPDX-License-Identifier: GPL-2.0

//! The two nested page providers and the per-VM / per-vCPU state KVM keeps
//! for us. `provider=cache` (the default) is [`crate::cache`];
//! `provider=passthrough` calls the stock mapping for every operation and
//! proves the hook layer: with it, KVM must behave exactly as without the
//! module.
//!
//! Everything here is safe code: the handles come from [`crate::ffi`].

use core::sync::atomic::{AtomicU64, Ordering};

use kernel::prelude::*;
use kernel::sync::Arc;

use crate::cache::{CacheVcpu, CacheVm};
use crate::ffi::{self, HostMap, ProviderKind, Vcpu, VmHandle};
use crate::state::PageKind;

/// Per-VM state, chosen by the `provider=` parameter at VM creation.
pub(crate) enum VmState {
    PassThrough,
    Cache(Arc<CacheVm>),
}

/// Per-vCPU state; always of the same kind as its VM's.
pub(crate) enum VcpuState {
    PassThrough(Counters),
    Cache(CacheVcpu),
}

/// Pass-through calls into the provider, counted so a reviewer can see in
/// the debug log that the hooks are reached.
#[derive(Default)]
pub(crate) struct Counters {
    maps: AtomicU64,
    unmaps: AtomicU64,
}

impl Drop for Counters {
    fn drop(&mut self) {
        pr_debug!(
            "pass-through vcpu freed after {} maps, {} unmaps\n",
            self.maps.load(Ordering::Relaxed),
            self.unmaps.load(Ordering::Relaxed)
        );
    }
}

impl VmState {
    pub(crate) fn new(handle: VmHandle) -> Result<Self> {
        Ok(match ffi::provider() {
            ProviderKind::PassThrough => VmState::PassThrough,
            ProviderKind::Cache => VmState::Cache(CacheVm::new(handle)?),
        })
    }

    pub(crate) fn memslots_updated(&self, gen: u64) {
        if let VmState::Cache(c) = self {
            c.memslots_updated(gen);
        }
    }

    pub(crate) fn invalidate_start(&self, start: u64, end: u64) {
        if let VmState::Cache(c) = self {
            c.invalidate_start(start, end);
        }
    }

    pub(crate) fn invalidate_end(&self, start: u64, end: u64) {
        if let VmState::Cache(c) = self {
            c.invalidate_end(start, end);
        }
    }

    pub(crate) fn reap(&self) {
        if let VmState::Cache(c) = self {
            c.reap();
        }
    }

    pub(crate) fn release(&self) {
        if let VmState::Cache(c) = self {
            c.release();
        }
    }

    pub(crate) fn stats(&self, out: &mut [u64]) {
        if let VmState::Cache(c) = self {
            c.stats(out);
        }
    }

    pub(crate) fn vcpu_stats(&self, pos: usize, out: &mut [u64]) -> bool {
        match self {
            VmState::Cache(c) => c.vcpu_stats(pos, out),
            VmState::PassThrough => false,
        }
    }
}

impl VcpuState {
    pub(crate) fn new(vm: &VmState, vcpu: &Vcpu<'_>) -> Result<Self> {
        Ok(match vm {
            VmState::PassThrough => VcpuState::PassThrough(Counters::default()),
            VmState::Cache(c) => VcpuState::Cache(CacheVcpu::new(c.clone(), vcpu)?),
        })
    }

    /// Maps `gfn` for a page of kind `kind`. May sleep.
    pub(crate) fn map(
        &self,
        vcpu: &Vcpu<'_>,
        kind: PageKind,
        gfn: u64,
        map: &mut HostMap<'_>,
    ) -> Result {
        match self {
            VcpuState::PassThrough(c) => {
                c.maps.fetch_add(1, Ordering::Relaxed);
                vcpu.stock_map(gfn, map)
            }
            VcpuState::Cache(c) => c.map(vcpu, kind, gfn, map),
        }
    }

    /// Undoes a successful `map`.
    pub(crate) fn unmap(
        &self,
        vcpu: &Vcpu<'_>,
        kind: PageKind,
        map: &mut HostMap<'_>,
        dirty: bool,
    ) {
        match self {
            VcpuState::PassThrough(c) => {
                c.unmaps.fetch_add(1, Ordering::Relaxed);
                vcpu.stock_unmap(map, dirty);
            }
            VcpuState::Cache(c) => c.unmap(vcpu, kind, map, dirty),
        }
    }
}
