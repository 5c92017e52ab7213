/* SPDX-License-Identifier: GPL-2.0 */
/*
 * nvmx-gpc shim ABI: the only interface between the Rust module and KVM.
 *
 * The C side (rust/shim.c) is compiled against the patched kernel and may use
 * KVM internals; everything it hands to Rust goes through the functions
 * declared here, with KVM objects passed as opaque pointers.  Rust bindings
 * are generated from this file by bindgen in the module's Kbuild, with
 * NVMX_BINDGEN defined and no kernel headers, so nothing else leaks in.
 */
#ifndef NVMX_GPC_SHIM_H
#define NVMX_GPC_SHIM_H

#ifdef NVMX_BINDGEN
typedef __UINT32_TYPE__ u32;
typedef __UINT64_TYPE__ u64;
#else
#include <linux/types.h>
#endif

/* Bumped on every incompatible change of this header. */
#define NVMX_SHIM_ABI_VERSION 1

/* Version of the ABI the C shim was compiled with. */
u32 nvmx_shim_abi_version(void);

#endif /* NVMX_GPC_SHIM_H */
