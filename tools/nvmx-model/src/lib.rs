// SPDX-License-Identifier: GPL-2.0

//! Userspace build of the nested-VMX page cache state machine.
//!
//! The kernel module compiles `rust/cache/state.rs` as one of its modules;
//! this crate compiles the very same file so that `cargo test` can run its
//! unit tests and the interleaving explorer in `tests/interleavings.rs`.

#![no_std]

#[cfg(test)]
extern crate std;

#[path = "../../../rust/cache/state.rs"]
mod state;

pub use state::*;
