// SPDX-License-Identifier: GPL-2.0

//! The module's only contact with C: bindgen output for
//! `include/nvmx_gpc_shim.h` and thin wrappers around it.
//!
//! Every `unsafe` operation of the module lives in this file. The wrappers
//! expose safe functions; the rest of the module never names `raw::`.

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
    // SAFETY: `nvmx_shim_abi_version` takes no arguments, touches no shared
    // state and only returns a constant.
    unsafe { raw::nvmx_shim_abi_version() }
}
