// SPDX-License-Identifier: GPL-2.0
/*
 * C half of the nvmx-gpc module: everything that needs KVM internals or C
 * inline functions lives here, behind include/nvmx_gpc_shim.h.
 */
#include <linux/module.h>

#include "nvmx_gpc_shim.h"

u32 nvmx_shim_abi_version(void)
{
	return NVMX_SHIM_ABI_VERSION;
}
