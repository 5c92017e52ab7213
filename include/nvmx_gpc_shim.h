/* SPDX-License-Identifier: GPL-2.0 */
/*
 * nvmx-gpc shim ABI: the only interface between the Rust module and KVM.
 *
 * The C half of the module (rust/shim.c) is compiled against the patched
 * kernel and is the only code that includes KVM headers.  It registers the
 * provider table of <asm/kvm_nvmx_pages.h> with KVM; each entry of that
 * table forwards to one of the nvmx_rs_*() functions below, which the Rust
 * half implements.  In the other direction the Rust half reaches KVM only
 * through the nvmx_shim_*() functions.  KVM objects cross this boundary as
 * opaque pointers.
 *
 * Rust bindings are generated from this file by bindgen in rust/Kbuild with
 * NVMX_BINDGEN defined and no kernel include path, so nothing else leaks in.
 */
#ifndef NVMX_GPC_SHIM_H
#define NVMX_GPC_SHIM_H

#ifdef NVMX_BINDGEN
typedef unsigned int u32;
typedef unsigned long long u64;
typedef _Bool bool;
#else
#include <linux/types.h>
#endif

/* Bumped on every incompatible change of this header. */
#define NVMX_SHIM_ABI_VERSION 2

struct kvm;
struct kvm_vcpu;
struct kvm_host_map;

/*
 * The five L1 pages, numbered as enum kvm_nvmx_page (shim.c checks that the
 * numbers agree at build time).
 */
enum nvmx_page {
	NVMX_PAGE_MSR_BITMAP,
	NVMX_PAGE_EVMCS,
	NVMX_PAGE_APIC_ACCESS,
	NVMX_PAGE_VIRTUAL_APIC,
	NVMX_PAGE_PI_DESC,
	NVMX_NR_PAGES,
};

/* --- Implemented by the C shim, called from Rust. --- */

/* Version of the ABI the C shim was compiled with. */
u32 nvmx_shim_abi_version(void);

/* Register / unregister the provider table with KVM (may sleep). */
int nvmx_shim_register(void);
void nvmx_shim_unregister(void);

/* The stock mapping: kvm_vcpu_map() / kvm_vcpu_unmap(). May sleep. */
int nvmx_shim_stock_map(struct kvm_vcpu *vcpu, u64 gfn, struct kvm_host_map *map);
void nvmx_shim_stock_unmap(struct kvm_vcpu *vcpu, struct kvm_host_map *map, bool dirty);

/* The kernel address a filled kvm_host_map holds (NULL when unmapped). */
void *nvmx_shim_map_hva(const struct kvm_host_map *map);

/* --- Implemented in Rust, called by the provider table in the C shim. --- */

int nvmx_rs_vm_init(struct kvm *kvm, void **vm_priv);
void nvmx_rs_vm_destroy(struct kvm *kvm, void *vm_priv);
int nvmx_rs_vcpu_init(struct kvm_vcpu *vcpu, void *vm_priv, void **vcpu_priv);
void nvmx_rs_vcpu_free(struct kvm_vcpu *vcpu, void *vcpu_priv);
int nvmx_rs_map(struct kvm_vcpu *vcpu, void *vcpu_priv, u32 page, u64 gfn,
		struct kvm_host_map *map);
void nvmx_rs_unmap(struct kvm_vcpu *vcpu, void *vcpu_priv, u32 page,
		   struct kvm_host_map *map, bool dirty);
void *nvmx_rs_get(struct kvm_vcpu *vcpu, void *vcpu_priv, u32 page,
		  struct kvm_host_map *map);
void nvmx_rs_put(struct kvm_vcpu *vcpu, void *vcpu_priv, u32 page,
		 struct kvm_host_map *map, bool dirty);
void nvmx_rs_memslots_updated(struct kvm *kvm, void *vm_priv, u64 gen);

#endif /* NVMX_GPC_SHIM_H */
