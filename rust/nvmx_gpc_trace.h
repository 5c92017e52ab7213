/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Trace events of the nvmx_gpc page cache ("trace-cmd record -e nvmx_gpc",
 * "perf record -e 'nvmx_gpc:*'").  rust/shim.c defines them; the C shim
 * emits nvmx_gpc_hit and nvmx_gpc_kick itself, the Rust half the others
 * through the nvmx_shim_trace_*() functions of include/nvmx_gpc_shim.h.
 * The debugfs statistics count the same things without tracing.
 */
#undef TRACE_SYSTEM
#define TRACE_SYSTEM nvmx_gpc

#if !defined(_NVMX_GPC_TRACE_H) || defined(TRACE_HEADER_MULTI_READ)
#define _NVMX_GPC_TRACE_H

#include <linux/tracepoint.h>

#include "nvmx_gpc_shim.h"

#define NVMX_TRACE_PAGES					\
	{ NVMX_PAGE_MSR_BITMAP,		"msr_bitmap" },		\
	{ NVMX_PAGE_EVMCS,		"evmcs" },		\
	{ NVMX_PAGE_APIC_ACCESS,	"apic_access" },	\
	{ NVMX_PAGE_VIRTUAL_APIC,	"virtual_apic" },	\
	{ NVMX_PAGE_PI_DESC,		"pi_desc" }

#define NVMX_TRACE_MISSES					\
	{ NVMX_MISS_INACTIVE,		"inactive" },		\
	{ NVMX_MISS_INVALID,		"invalid" },		\
	{ NVMX_MISS_GPA,		"other_page" },		\
	{ NVMX_MISS_GENERATION,		"memslots_changed" }

#define NVMX_TRACE_CAUSES					\
	{ NVMX_INVAL_NOTIFIER,		"mmu_notifier" },	\
	{ NVMX_INVAL_MEMSLOT,		"memslot" },		\
	{ NVMX_INVAL_TEARDOWN,		"teardown" }

/* A page of one vCPU: hit, kick and reload. */
DECLARE_EVENT_CLASS(nvmx_gpc_page,
	TP_PROTO(u32 vcpu, u32 page, u64 gfn),
	TP_ARGS(vcpu, page, gfn),

	TP_STRUCT__entry(
		__field(u32, vcpu)
		__field(u32, page)
		__field(u64, gfn)
	),

	TP_fast_assign(
		__entry->vcpu = vcpu;
		__entry->page = page;
		__entry->gfn = gfn;
	),

	TP_printk("vcpu %u %s gfn 0x%llx", __entry->vcpu,
		  __print_symbolic(__entry->page, NVMX_TRACE_PAGES), __entry->gfn)
);

/* map() served the page from a cache, without a refresh. */
DEFINE_EVENT(nvmx_gpc_page, nvmx_gpc_hit,
	TP_PROTO(u32 vcpu, u32 page, u64 gfn),
	TP_ARGS(vcpu, page, gfn)
);

/* An invalidation made a reload pending on the vCPU, which may hold the page in vmcs02. */
DEFINE_EVENT(nvmx_gpc_page, nvmx_gpc_kick,
	TP_PROTO(u32 vcpu, u32 page, u64 gfn),
	TP_ARGS(vcpu, page, gfn)
);

/*
 * The vCPU gave up a page that was invalidated while it was in vmcs02: the
 * first half of the reload a kick asked for (or a nested VM-exit that came
 * first).  The map() that follows refreshes.
 */
DEFINE_EVENT(nvmx_gpc_page, nvmx_gpc_reload,
	TP_PROTO(u32 vcpu, u32 page, u64 gfn),
	TP_ARGS(vcpu, page, gfn)
);

/* map() found no valid cache of the page; the reason is the chosen way's. */
TRACE_EVENT(nvmx_gpc_miss,
	TP_PROTO(u32 vcpu, u32 page, u64 gfn, u32 reason, u32 way),
	TP_ARGS(vcpu, page, gfn, reason, way),

	TP_STRUCT__entry(
		__field(u32, vcpu)
		__field(u32, page)
		__field(u64, gfn)
		__field(u32, reason)
		__field(u32, way)
	),

	TP_fast_assign(
		__entry->vcpu = vcpu;
		__entry->page = page;
		__entry->gfn = gfn;
		__entry->reason = reason;
		__entry->way = way;
	),

	TP_printk("vcpu %u %s gfn 0x%llx reason %s way %u", __entry->vcpu,
		  __print_symbolic(__entry->page, NVMX_TRACE_PAGES), __entry->gfn,
		  __print_symbolic(__entry->reason, NVMX_TRACE_MISSES), __entry->way)
);

/* A refresh installed a page; retries: attempts that raced an invalidation. */
TRACE_EVENT(nvmx_gpc_refresh,
	TP_PROTO(u32 vcpu, u32 page, u64 gfn, u64 pfn, bool unmanaged, u32 way, u32 retries),
	TP_ARGS(vcpu, page, gfn, pfn, unmanaged, way, retries),

	TP_STRUCT__entry(
		__field(u32, vcpu)
		__field(u32, page)
		__field(u64, gfn)
		__field(u64, pfn)
		__field(bool, unmanaged)
		__field(u32, way)
		__field(u32, retries)
	),

	TP_fast_assign(
		__entry->vcpu = vcpu;
		__entry->page = page;
		__entry->gfn = gfn;
		__entry->pfn = pfn;
		__entry->unmanaged = unmanaged;
		__entry->way = way;
		__entry->retries = retries;
	),

	TP_printk("vcpu %u %s gfn 0x%llx pfn 0x%llx%s way %u retries %u", __entry->vcpu,
		  __print_symbolic(__entry->page, NVMX_TRACE_PAGES), __entry->gfn, __entry->pfn,
		  __entry->unmanaged ? " memremap" : "", __entry->way, __entry->retries)
);

/*
 * An invalidation of the VM's caches: [start, end) of the VM's address
 * space for the mmu_notifier, everything for the others; how many valid
 * caches it invalidated and how many vCPUs it kicked.
 */
TRACE_EVENT(nvmx_gpc_invalidate,
	TP_PROTO(u64 start, u64 end, u32 cause, u32 caches, u32 kicks),
	TP_ARGS(start, end, cause, caches, kicks),

	TP_STRUCT__entry(
		__field(u64, start)
		__field(u64, end)
		__field(u32, cause)
		__field(u32, caches)
		__field(u32, kicks)
	),

	TP_fast_assign(
		__entry->start = start;
		__entry->end = end;
		__entry->cause = cause;
		__entry->caches = caches;
		__entry->kicks = kicks;
	),

	TP_printk("%s 0x%llx-0x%llx caches %u kicks %u",
		  __print_symbolic(__entry->cause, NVMX_TRACE_CAUSES), __entry->start,
		  __entry->end, __entry->caches, __entry->kicks)
);

#endif /* _NVMX_GPC_TRACE_H */

/* This part must be outside the include guard. */
#undef TRACE_INCLUDE_PATH
#define TRACE_INCLUDE_PATH .
#undef TRACE_INCLUDE_FILE
#define TRACE_INCLUDE_FILE nvmx_gpc_trace
#include <trace/define_trace.h>
