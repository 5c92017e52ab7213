// SPDX-License-Identifier: GPL-2.0
/*
 * C half of the nvmx-gpc module.  Everything that needs KVM headers, C
 * inline functions or C-only macros lives here, behind
 * include/nvmx_gpc_shim.h; see that header for the division of labour.
 */
#include <linux/build_bug.h>
#include <linux/kvm_host.h>
#include <linux/module.h>
#include <asm/kvm_nvmx_pages.h>

#include "nvmx_gpc_shim.h"

MODULE_IMPORT_NS(KVM_NVMX_PAGES);

static char *provider = "passthrough";
module_param(provider, charp, 0444);
MODULE_PARM_DESC(provider, "Active nested page provider (read-only): passthrough");

static_assert(NVMX_PAGE_MSR_BITMAP == (int)KVM_NVMX_PAGE_MSR_BITMAP);
static_assert(NVMX_PAGE_EVMCS == (int)KVM_NVMX_PAGE_EVMCS);
static_assert(NVMX_PAGE_APIC_ACCESS == (int)KVM_NVMX_PAGE_APIC_ACCESS);
static_assert(NVMX_PAGE_VIRTUAL_APIC == (int)KVM_NVMX_PAGE_VIRTUAL_APIC);
static_assert(NVMX_PAGE_PI_DESC == (int)KVM_NVMX_PAGE_PI_DESC);
static_assert(NVMX_NR_PAGES == (int)KVM_NVMX_NR_PAGES);

u32 nvmx_shim_abi_version(void)
{
	return NVMX_SHIM_ABI_VERSION;
}

int nvmx_shim_stock_map(struct kvm_vcpu *vcpu, u64 gfn, struct kvm_host_map *map)
{
	return kvm_vcpu_map(vcpu, gfn, map);
}

void nvmx_shim_stock_unmap(struct kvm_vcpu *vcpu, struct kvm_host_map *map, bool dirty)
{
	kvm_vcpu_unmap(vcpu, map, dirty);
}

void *nvmx_shim_map_hva(const struct kvm_host_map *map)
{
	return map->hva;
}

static int shim_map(struct kvm_vcpu *vcpu, void *vcpu_priv, enum kvm_nvmx_page page,
		    gfn_t gfn, struct kvm_host_map *map)
{
	return nvmx_rs_map(vcpu, vcpu_priv, page, gfn, map);
}

static void shim_unmap(struct kvm_vcpu *vcpu, void *vcpu_priv, enum kvm_nvmx_page page,
		       struct kvm_host_map *map, bool dirty)
{
	nvmx_rs_unmap(vcpu, vcpu_priv, page, map, dirty);
}

static void *shim_get(struct kvm_vcpu *vcpu, void *vcpu_priv, enum kvm_nvmx_page page,
		      struct kvm_host_map *map)
{
	return nvmx_rs_get(vcpu, vcpu_priv, page, map);
}

static void shim_put(struct kvm_vcpu *vcpu, void *vcpu_priv, enum kvm_nvmx_page page,
		     struct kvm_host_map *map, bool dirty)
{
	nvmx_rs_put(vcpu, vcpu_priv, page, map, dirty);
}

static const struct kvm_nvmx_page_ops nvmx_gpc_ops = {
	.owner = THIS_MODULE,
	.name = "nvmx_gpc",
	.vm_init = nvmx_rs_vm_init,
	.vm_destroy = nvmx_rs_vm_destroy,
	.vcpu_init = nvmx_rs_vcpu_init,
	.vcpu_free = nvmx_rs_vcpu_free,
	.map = shim_map,
	.unmap = shim_unmap,
	.get = shim_get,
	.put = shim_put,
	.memslots_updated = nvmx_rs_memslots_updated,
};

int nvmx_shim_register(void)
{
	return kvm_nvmx_register_page_ops(&nvmx_gpc_ops);
}

void nvmx_shim_unregister(void)
{
	kvm_nvmx_unregister_page_ops(&nvmx_gpc_ops);
}
