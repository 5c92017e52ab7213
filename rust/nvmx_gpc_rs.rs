// SPDX-License-Identifier: GPL-2.0

//! nvmx-gpc: a provider for the L1 pages that nested VMX maps (MSR bitmap,
//! eVMCS, APIC-access page, virtual-APIC page, posted-interrupt descriptor),
//! plugged into KVM through the hook table of `<asm/kvm_nvmx_pages.h>`.
//!
//! The module registers its table at load time; VMs created afterwards bind
//! to it for their whole life and hold a reference on the module, so
//! `rmmod` is refused while such a VM exists. `provider=cache` (default)
//! selects the page cache of [`cache`], `provider=passthrough` the stock
//! mapping for every operation (the C shim's second hook table).

use kernel::prelude::*;

mod cache;
mod ffi;
#[path = "cache/state.rs"]
pub mod state;

module! {
    type: NvmxGpc,
    name: "nvmx_gpc",
    author: "nvmx-gpc developers",
    description: "Nested VMX page provider for L1-owned pages",
    license: "GPL",
}

struct NvmxGpc;

impl kernel::Module for NvmxGpc {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let shim = ffi::shim_abi_version();
        if shim != ffi::ABI_VERSION {
            pr_err!(
                "shim ABI {} does not match the Rust side's {}\n",
                shim,
                ffi::ABI_VERSION
            );
            return Err(EINVAL);
        }
        ffi::register().inspect_err(|e| {
            pr_err!("cannot register with KVM: {:?}\n", e);
        })?;
        pr_info!(
            "loaded (shim ABI {}, provider: {:?})\n",
            shim,
            ffi::provider()
        );
        Ok(NvmxGpc)
    }
}

impl Drop for NvmxGpc {
    fn drop(&mut self) {
        ffi::unregister();
        pr_info!("unloaded\n");
    }
}
