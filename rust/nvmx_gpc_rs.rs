// SPDX-License-Identifier: GPL-2.0

//! nvmx-gpc: persistent, invalidation-aware mappings of the L1 pages that
//! nested VMX uses (MSR bitmap, eVMCS, APIC-access page, virtual-APIC page,
//! posted-interrupt descriptor).
//!
//! This is the module skeleton: it checks that the C shim and the Rust side
//! agree on the shim ABI and registers nothing with KVM yet.

use kernel::prelude::*;

mod ffi;

module! {
    type: NvmxGpc,
    name: "nvmx_gpc",
    author: "nvmx-gpc developers",
    description: "Nested VMX page cache for L1-owned pages",
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
        pr_info!("loaded (shim ABI {}, provider: none)\n", shim);
        Ok(NvmxGpc)
    }
}

impl Drop for NvmxGpc {
    fn drop(&mut self) {
        pr_info!("unloaded\n");
    }
}
