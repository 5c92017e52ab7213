/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * nvmx_nested.h: L1 and L2 code shared by the nvmx-gpc page-cache selftests.
 *
 * The tests put the three L1 pages that nested VMX maps for vmcs02 and that
 * this emulator can exercise (MSR bitmap, APIC-access page, virtual-APIC
 * page) in a memslot of their own (NVMX_PAGES_SLOT at NVMX_PAGES_GPA, or
 * /dev/mem memory for the unmanaged tests), identity-mapped into L1's page
 * tables, so the host can replace, protect, migrate, move or delete them.
 *
 * L1 is a small generic hypervisor (nvmx_l1_main()): it enters L2 and then
 * handles every exit, counting them in struct nvmx_shared:
 *   VMCALL       an L2 request (nvmx_shared.cmd): rewrite the MSR bitmap,
 *                store or load the virtual TPR, or stop;
 *   MSR_READ/MSR_WRITE, APIC_ACCESS
 *                counted, the exit qualification kept, and L2 advanced past
 *                the instruction.
 * Any other exit reason is a guest assertion failure.  L2 shares L1's page
 * tables and memory, so it reads the counters directly to see whether an
 * instruction exited to L1, and it can exit straight to userspace with
 * GUEST_SYNC (L1 does not intercept port I/O): the vCPU then stays in guest
 * mode with vmcs02 pointing at the pages, which is where the host changes
 * them.
 *
 * L1 does not preserve L2's registers across an exit to L1, so every L2
 * instruction that may exit to L1 runs inside nvmx_l2_exit_insn(), which
 * saves L2's callee-saved registers on L2's own stack (RSP survives the exit
 * in vmcs12) and tells the compiler the rest are clobbered.
 *
 * Several vCPUs (nvmx_create_vm_vcpus()): each vCPU has its own shared page
 * and its own block of NVMX_SLOT_PAGES pages in the page slot (vCPU i's block
 * at nvmx_vcpu_pages_gpa(i)).  The guest finds its shared page by its stack:
 * the host records each vCPU's stack range (the selftest library gives every
 * vCPU a stack of its own) in nvmx_vcpu_tab[], and nvmx_sh is the entry
 * whose range holds the current RSP.  L2's stack is an array on L1's stack,
 * so the same lookup works in L2.  (FS/GS base cannot serve: L2 writes those
 * MSRs.)  A VM set up without the table (one vCPU) gets a single entry,
 * covering every address, from nvmx_l1_main().
 *
 * The page slot is 4 KiB anonymous memory by default (MADV_NOHUGEPAGE, so
 * that replacing one page does not split a THP); nvmx_add_page_slot_src()
 * can back it with THP or hugetlb pages instead, and then puts the pages at
 * NVMX_HUGE_OFFSET into the slot, i.e. on tail pages of a huge page.
 */
#ifndef SELFTEST_NVMX_NESTED_H
#define SELFTEST_NVMX_NESTED_H

#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <string.h>
#include <sys/mman.h>

#include "kvm_util.h"
#include "processor.h"
#include "vmx.h"
#include "hyperv.h"
#include "evmcs.h"

#include "nvmx_stats.h"

#define NVMX_PAGES_GPA		0xc0000000ul
#define NVMX_PAGES_SLOT		10
#define NVMX_SLOT_PAGES		4

/*
 * The pages of the test slot, in GPA order (per vCPU: a block of
 * NVMX_SLOT_PAGES).  Not the provider's page kinds: those are enum
 * nvmx_page in include/nvmx_gpc_shim.h (enum kvm_nvmx_page in KVM), of
 * which the tests use three.
 */
enum nvmx_slot_page {
	NVMX_PG_MSR_BITMAP,
	NVMX_PG_APIC_ACCESS,
	NVMX_PG_VAPIC,
	/* A second virtual-APIC page, for NVMX_USE_VAPIC_SWITCH. */
	NVMX_PG_VAPIC_ALT,
};

#define NVMX_APIC_TPR		0x80

/* The MSRs whose intercepts the tests flip (index = bit pair in a pattern). */
#define NVMX_NR_MSRS		4
static const uint32_t nvmx_msrs[NVMX_NR_MSRS] = {
	MSR_FS_BASE,		/* L0 passes these three through to L2 when */
	MSR_GS_BASE,		/* L1 does, so the merged bitmap in vmcs02 is */
	MSR_KERNEL_GS_BASE,	/* what decides; */
	MSR_IA32_SYSENTER_CS,	/* L0 intercepts this one and asks L1's bitmap */
};

/* Pattern bits: 2 * i = intercept reads of nvmx_msrs[i], 2 * i + 1 = writes. */
#define NVMX_RD(i)		(1ul << (2 * (i)))
#define NVMX_WR(i)		(1ul << (2 * (i) + 1))

enum nvmx_cmd {
	NVMX_CMD_NOP,
	NVMX_CMD_MSR_BITMAP,	/* arg: intercept pattern */
	NVMX_CMD_SET_VTPR,	/* arg: value for VTPR (offset 0x80) */
	NVMX_CMD_GET_VTPR,	/* L1 copies VTPR to vtpr */
	NVMX_CMD_SWITCH_VAPIC,	/* L1 points vmcs12 at the other vAPIC page */
	NVMX_CMD_DONE,		/* L1 leaves the loop and reports UCALL_DONE */
};

#define NVMX_USE_MSR_BITMAP	BIT(0)
#define NVMX_USE_APIC_ACCESS	BIT(1)
#define NVMX_USE_VAPIC		BIT(2)
#define NVMX_USE_EVMCS		BIT(3)
/*
 * With NVMX_USE_VAPIC: every round, L1 points VIRTUAL_APIC_PAGE_ADDR at the
 * other of two pages before it stores VTPR, so KVM must follow a changed
 * vmcs12 address (a cache keyed on the page kind alone would not).
 */
#define NVMX_USE_VAPIC_SWITCH	BIT(4)

/* One page in L1 memory, shared by the host (setup), L1 and L2. */
struct nvmx_shared {
	/* Set by the host. */
	uint64_t use;
	uint64_t page_gpa[NVMX_SLOT_PAGES];
	/* L2 -> L1 request, read by L1 on VMCALL. */
	uint64_t cmd;
	uint64_t arg;
	/* Exit counters and results, written by L1. */
	uint64_t nr_vmcall;
	uint64_t nr_msr_read;
	uint64_t nr_msr_write;
	uint64_t nr_apic_access;
	uint64_t apic_qual;
	uint64_t vtpr;
	/* The vAPIC page vmcs12 points at (NVMX_PG_VAPIC or _ALT), L1's. */
	uint64_t vapic_pg;
	/* Set by the host while L2 is parked: NVMX_L2_* flags. */
	uint64_t l2_flags;
};

/* L2 must not touch the APIC-access page after parking (slot deleted). */
#define NVMX_L2_NO_APIC_READ	BIT(0)

#define NVMX_MAX_VCPUS		4

/* One vCPU's stack range [stack_lo, stack_hi) and shared page (GVAs). */
struct nvmx_vcpu_ent {
	uint64_t stack_lo;
	uint64_t stack_hi;
	struct nvmx_shared *sh;
};

/* Filled by the host (synced to the guest) or, for one vCPU, by L1. */
static struct nvmx_vcpu_ent nvmx_vcpu_tab[NVMX_MAX_VCPUS];
static uint64_t nvmx_nr_vcpu_ents;

/* The guest's view of its vCPU's shared page, found by RSP. */
static inline struct nvmx_shared *nvmx_cur_shared(void)
{
	uint64_t rsp, i;

	__asm__ __volatile__("mov %%rsp, %0" : "=r"(rsp));
	for (i = 0; i < nvmx_nr_vcpu_ents; i++) {
		if (rsp >= nvmx_vcpu_tab[i].stack_lo && rsp < nvmx_vcpu_tab[i].stack_hi)
			return nvmx_vcpu_tab[i].sh;
	}
	GUEST_FAIL("RSP 0x%lx is on no registered vCPU stack (%lu entries)", rsp,
		   nvmx_nr_vcpu_ents);
	return NULL;
}

#define nvmx_sh		(nvmx_cur_shared())

/*
 * Run one instruction in L2 that may exit to L1: 128 bytes skip the red
 * zone, RBP/RBX/R12-R15 are saved on the stack, the rest is clobbered.
 */
#define nvmx_l2_exit_insn(insn, ...)						\
	__asm__ __volatile__("sub $128, %%rsp\n\t"				\
			     "push %%rbp\n\tpush %%rbx\n\tpush %%r12\n\t"	\
			     "push %%r13\n\tpush %%r14\n\tpush %%r15\n\t"	\
			     insn "\n\t"					\
			     "pop %%r15\n\tpop %%r14\n\tpop %%r13\n\t"		\
			     "pop %%r12\n\tpop %%rbx\n\tpop %%rbp\n\t"		\
			     "add $128, %%rsp"					\
			     __VA_ARGS__)

#define NVMX_CLOBBERS "rsi", "rdi", "r8", "r9", "r10", "r11", "memory", "cc"

/* Ask L1 to do @cmd (VMCALL). */
static inline void nvmx_l2_call(uint64_t cmd, uint64_t arg)
{
	nvmx_sh->cmd = cmd;
	nvmx_sh->arg = arg;
	nvmx_l2_exit_insn("vmcall", : : : "rax", "rcx", "rdx", NVMX_CLOBBERS);
}

/* RDMSR/WRMSR from L2; true if the instruction exited to L1. */
static inline bool nvmx_l2_rdmsr_exits(uint32_t msr)
{
	uint64_t before = READ_ONCE(nvmx_sh->nr_msr_read);
	uint64_t c = msr, a, d;

	nvmx_l2_exit_insn("rdmsr", : "+c"(c), "=a"(a), "=d"(d) : : NVMX_CLOBBERS);
	return READ_ONCE(nvmx_sh->nr_msr_read) != before;
}

static inline bool nvmx_l2_wrmsr_exits(uint32_t msr, uint64_t val)
{
	uint64_t before = READ_ONCE(nvmx_sh->nr_msr_write);
	uint64_t c = msr, a = (uint32_t)val, d = val >> 32;

	nvmx_l2_exit_insn("wrmsr", : "+c"(c), "+a"(a), "+d"(d) : : NVMX_CLOBBERS);
	return READ_ONCE(nvmx_sh->nr_msr_write) != before;
}

/*
 * 32-bit read or write of the APIC-access page at @offset, always encoded
 * in two bytes (8b 08 / 89 08), so L1 can skip it without relying on the
 * VM-exit instruction length.  Returns true if it exited to L1.
 */
static inline bool nvmx_l2_apic_read_exits(uint64_t offset, uint32_t *val)
{
	uint64_t before = READ_ONCE(nvmx_sh->nr_apic_access);
	uint64_t p = nvmx_sh->page_gpa[NVMX_PG_APIC_ACCESS] + offset, v = 0;

	nvmx_l2_exit_insn(".byte 0x8b, 0x08 /* mov (%%rax), %%ecx */",
			  : "+a"(p), "+c"(v) : : "rdx", NVMX_CLOBBERS);
	*val = v;
	return READ_ONCE(nvmx_sh->nr_apic_access) != before;
}

static inline bool nvmx_l2_apic_write_exits(uint64_t offset, uint32_t val)
{
	uint64_t before = READ_ONCE(nvmx_sh->nr_apic_access);
	uint64_t p = nvmx_sh->page_gpa[NVMX_PG_APIC_ACCESS] + offset, v = val;

	nvmx_l2_exit_insn(".byte 0x89, 0x08 /* mov %%ecx, (%%rax) */",
			  : "+a"(p), "+c"(v) : : "rdx", NVMX_CLOBBERS);
	return READ_ONCE(nvmx_sh->nr_apic_access) != before;
}

static inline uint64_t nvmx_l2_read_cr8(void)
{
	uint64_t cr8;

	__asm__ __volatile__("mov %%cr8, %0" : "=r"(cr8) : : "memory");
	return cr8;
}

static inline void nvmx_l2_write_cr8(uint64_t cr8)
{
	__asm__ __volatile__("mov %0, %%cr8" : : "r"(cr8) : "memory");
}

/* Stop L2 for good: L1 reports UCALL_DONE. */
static inline void nvmx_l2_done(void)
{
	nvmx_l2_call(NVMX_CMD_DONE, 0);
	GUEST_FAIL("L2 resumed after NVMX_CMD_DONE");
}

/* Rewrite the intercepts of nvmx_msrs[] in the MSR bitmap at @bitmap. */
static inline void nvmx_write_msr_bitmap(uint8_t *bitmap, uint64_t pattern)
{
	int i;

	for (i = 0; i < NVMX_NR_MSRS; i++) {
		uint32_t msr = nvmx_msrs[i];
		uint32_t base = msr >= 0xc0000000u ? 0x400 : 0;
		uint32_t bit = msr & 0x1fff;
		uint8_t *rd = bitmap + base + bit / 8;
		uint8_t *wr = bitmap + base + 0x800 + bit / 8;
		uint8_t mask = 1 << (bit % 8);

		*rd = (pattern & NVMX_RD(i)) ? (*rd | mask) : (*rd & ~mask);
		*wr = (pattern & NVMX_WR(i)) ? (*wr | mask) : (*wr & ~mask);
	}
}

static inline void nvmx_l1_enable_pages(void)
{
	struct nvmx_shared *sh = nvmx_sh;
	uint32_t ctl;

	ctl = vmreadz(CPU_BASED_VM_EXEC_CONTROL);
	if (sh->use & NVMX_USE_MSR_BITMAP)
		ctl |= CPU_BASED_USE_MSR_BITMAPS;
	if (sh->use & NVMX_USE_VAPIC)
		ctl |= CPU_BASED_TPR_SHADOW;
	if (sh->use & NVMX_USE_APIC_ACCESS)
		ctl |= CPU_BASED_ACTIVATE_SECONDARY_CONTROLS;
	GUEST_ASSERT(!vmwrite(CPU_BASED_VM_EXEC_CONTROL, ctl));

	if (sh->use & NVMX_USE_APIC_ACCESS) {
		ctl = vmreadz(SECONDARY_VM_EXEC_CONTROL);
		ctl |= SECONDARY_EXEC_VIRTUALIZE_APIC_ACCESSES;
		GUEST_ASSERT(!vmwrite(SECONDARY_VM_EXEC_CONTROL, ctl));
		GUEST_ASSERT(!vmwrite(APIC_ACCESS_ADDR,
				      sh->page_gpa[NVMX_PG_APIC_ACCESS]));
	}
	if (sh->use & NVMX_USE_MSR_BITMAP)
		GUEST_ASSERT(!vmwrite(MSR_BITMAP, sh->page_gpa[NVMX_PG_MSR_BITMAP]));
	if (sh->use & NVMX_USE_VAPIC) {
		sh->vapic_pg = NVMX_PG_VAPIC;
		GUEST_ASSERT(!vmwrite(VIRTUAL_APIC_PAGE_ADDR,
				      sh->page_gpa[NVMX_PG_VAPIC]));
		GUEST_ASSERT(!vmwrite(TPR_THRESHOLD, 0));
	}
	if (sh->use & NVMX_USE_EVMCS) {
		/* KVM may skip the merge while L1 reports the bitmap clean. */
		current_evmcs->hv_enlightenments_control.msr_bitmap = 1;
	}
}

/*
 * L1, with L2's VMCS current: give L2 the pages whose GPA is not 0: an MSR
 * bitmap; APIC-access virtualization with an APIC-access page; TPR shadow
 * with a virtual-APIC page (TPR threshold 0).
 */
static inline void nvmx_l1_set_pages(uint64_t msr_bitmap_gpa, uint64_t apic_access_gpa,
				     uint64_t vapic_gpa)
{
	uint32_t ctl;

	ctl = vmreadz(CPU_BASED_VM_EXEC_CONTROL);
	if (msr_bitmap_gpa)
		ctl |= CPU_BASED_USE_MSR_BITMAPS;
	if (vapic_gpa)
		ctl |= CPU_BASED_TPR_SHADOW;
	if (apic_access_gpa)
		ctl |= CPU_BASED_ACTIVATE_SECONDARY_CONTROLS;
	GUEST_ASSERT(!vmwrite(CPU_BASED_VM_EXEC_CONTROL, ctl));
	if (msr_bitmap_gpa)
		GUEST_ASSERT(!vmwrite(MSR_BITMAP, msr_bitmap_gpa));
	if (apic_access_gpa) {
		ctl = vmreadz(SECONDARY_VM_EXEC_CONTROL);
		ctl |= SECONDARY_EXEC_VIRTUALIZE_APIC_ACCESSES;
		GUEST_ASSERT(!vmwrite(SECONDARY_VM_EXEC_CONTROL, ctl));
		GUEST_ASSERT(!vmwrite(APIC_ACCESS_ADDR, apic_access_gpa));
	}
	if (vapic_gpa) {
		GUEST_ASSERT(!vmwrite(VIRTUAL_APIC_PAGE_ADDR, vapic_gpa));
		GUEST_ASSERT(!vmwrite(TPR_THRESHOLD, 0));
	}
}

/*
 * The L2 of the round-trip tests.  Each round reads CR8 (with TPR shadow,
 * VTPR[7:4] of the virtual-APIC page) into nvmx_l2_seen_cr8, writes
 * nvmx_l2_next_cr8 to it, and exits with VMCALL; with nvmx_l2_no_cr8 set
 * it only exits (the round trip without pages).  L2 runs on L1's page
 * tables, so both sides see these variables.
 */
static volatile uint64_t nvmx_l2_seen_cr8;
static volatile uint64_t nvmx_l2_next_cr8;
static volatile bool nvmx_l2_no_cr8;

static inline void nvmx_l2_cr8_loop(void)
{
	for (;;) {
		if (!nvmx_l2_no_cr8) {
			uint64_t cr8;

			__asm__ __volatile__("mov %%cr8, %0" : "=r"(cr8));
			nvmx_l2_seen_cr8 = cr8;
			cr8 = nvmx_l2_next_cr8;
			__asm__ __volatile__("mov %0, %%cr8" : : "r"(cr8));
		}
		__asm__ __volatile__("vmcall");
	}
}

/* VM-instruction error 7: VM entry with invalid control field(s). */
#define NVMX_VMXERR_ENTRY_INVALID_CONTROL	7

/*
 * Set by the host: the number of VMLAUNCHes nvmx_l1_early_vmfails() makes
 * fail before L1 enters L2 for real.
 */
static uint64_t nvmx_early_vmfails;
/* Set by the host: after them, L1 stops (GUEST_DONE) without entering L2. */
static uint64_t nvmx_early_vmfails_only;

/*
 * L1: make nvmx_early_vmfails VMLAUNCHes that only the processor refuses.
 * With TPR shadow and without APIC-access virtualization, bits 3:0 of the
 * TPR threshold must not exceed VTPR[7:4]; KVM does not check this (it
 * would have to read the virtual-APIC page) and leaves it to the hardware.
 * With kvm_intel.nested_early_check=1 that is the early hardware VM-entry,
 * which runs after the pages were mapped for vmcs02; without it, the late
 * VM-Fail of the real VM-entry.  L1 sees a VM-Fail with error 7 either way.
 * VTPR, the TPR threshold and the secondary controls are restored.
 */
static inline void nvmx_l1_early_vmfails(void)
{
	struct nvmx_shared *sh = nvmx_sh;
	volatile uint32_t *vtpr;
	uint32_t sec = 0, saved;
	uint64_t i, err;

	if (!nvmx_early_vmfails)
		return;
	GUEST_ASSERT(sh->use & NVMX_USE_VAPIC);
	vtpr = (uint32_t *)(sh->page_gpa[NVMX_PG_VAPIC] + NVMX_APIC_TPR);
	saved = *vtpr;
	*vtpr = 0;
	if (sh->use & NVMX_USE_APIC_ACCESS) {
		sec = vmreadz(SECONDARY_VM_EXEC_CONTROL);
		GUEST_ASSERT(!vmwrite(SECONDARY_VM_EXEC_CONTROL,
				      sec & ~SECONDARY_EXEC_VIRTUALIZE_APIC_ACCESSES));
	}
	GUEST_ASSERT(!vmwrite(TPR_THRESHOLD, 0xf));
	for (i = 0; i < nvmx_early_vmfails; i++) {
		__GUEST_ASSERT(vmlaunch(),
			       "VMLAUNCH %lu with TPR threshold 15 > VTPR[7:4] 0 entered L2", i);
		err = vmreadz(VM_INSTRUCTION_ERROR);
		__GUEST_ASSERT(err == NVMX_VMXERR_ENTRY_INVALID_CONTROL,
			       "VMLAUNCH %lu: VM-instruction error %lu, want %u", i, err,
			       NVMX_VMXERR_ENTRY_INVALID_CONTROL);
	}
	GUEST_ASSERT(!vmwrite(TPR_THRESHOLD, 0));
	if (sh->use & NVMX_USE_APIC_ACCESS)
		GUEST_ASSERT(!vmwrite(SECONDARY_VM_EXEC_CONTROL, sec));
	*vtpr = saved;
}

/* Host: is KVM's early hardware check of nested VM-entries on? */
static inline bool nvmx_early_check_on(void)
{
	FILE *f = fopen("/sys/module/kvm_intel/parameters/nested_early_check", "r");
	int c = f ? fgetc(f) : EOF;

	if (f)
		fclose(f);
	return c == 'Y' || c == '1';
}

static inline void nvmx_l1_skip(uint64_t len)
{
	GUEST_ASSERT(!vmwrite(GUEST_RIP, vmreadz(GUEST_RIP) + len));
}

/* Handle an L2 VMCALL; false when L2 asked to stop. */
static inline bool nvmx_l1_vmcall(void)
{
	struct nvmx_shared *sh = nvmx_sh;
	volatile uint32_t *vtpr;

	sh->nr_vmcall++;
	nvmx_l1_skip(3);
	switch (sh->cmd) {
	case NVMX_CMD_NOP:
		break;
	case NVMX_CMD_MSR_BITMAP:
		nvmx_write_msr_bitmap((uint8_t *)sh->page_gpa[NVMX_PG_MSR_BITMAP],
				      sh->arg);
		if (sh->use & NVMX_USE_EVMCS)
			current_evmcs->hv_clean_fields &=
				~HV_VMX_ENLIGHTENED_CLEAN_FIELD_MSR_BITMAP;
		break;
	case NVMX_CMD_SET_VTPR:
		vtpr = (uint32_t *)(sh->page_gpa[sh->vapic_pg] + NVMX_APIC_TPR);
		*vtpr = sh->arg;
		break;
	case NVMX_CMD_GET_VTPR:
		vtpr = (uint32_t *)(sh->page_gpa[sh->vapic_pg] + NVMX_APIC_TPR);
		sh->vtpr = *vtpr;
		break;
	case NVMX_CMD_SWITCH_VAPIC:
		sh->vapic_pg = sh->vapic_pg == NVMX_PG_VAPIC ? NVMX_PG_VAPIC_ALT :
							       NVMX_PG_VAPIC;
		GUEST_ASSERT(!vmwrite(VIRTUAL_APIC_PAGE_ADDR,
				      sh->page_gpa[sh->vapic_pg]));
		break;
	case NVMX_CMD_DONE:
		return false;
	default:
		GUEST_FAIL("unknown L2 request %lu", sh->cmd);
	}
	sh->cmd = NVMX_CMD_NOP;
	return true;
}

/*
 * L1: VMXON, a current vmcs12 for L2 at @l2_code with its stack at
 * @l2_stack_top, and the pages nvmx_sh->use asks for.
 */
static inline void nvmx_l1_prepare(struct vmx_pages *vmx, void *l2_code,
				   unsigned long *l2_stack_top)
{
	GUEST_ASSERT(prepare_for_vmx_operation(vmx));
	GUEST_ASSERT(load_vmcs(vmx));
	prepare_vmcs(vmx, l2_code, l2_stack_top);
	nvmx_l1_enable_pages();
}

/*
 * L1: tell KVM it is a Hyper-V guest, enable its VP assist page and make
 * VMPTRLD take eVMCSs from now on.  The host side is nvmx_vcpu_enable_evmcs().
 */
static inline void nvmx_l1_enable_evmcs(struct hyperv_test_pages *hv)
{
	wrmsr(HV_X64_MSR_GUEST_OS_ID, HYPERV_LINUX_OS_ID);
	enable_vp_assist(hv->vp_assist_gpa, hv->vp_assist);
	evmcs_enable();
}

/*
 * L1: enter L2 at @l2_code with the pages @sh->use asks for, handle its
 * exits until it asks to stop, then GUEST_DONE.  @hv is used only with
 * NVMX_USE_EVMCS.
 */
static inline void nvmx_l1_main(struct vmx_pages *vmx, struct hyperv_test_pages *hv,
				struct nvmx_shared *sh, void *l2_code,
				unsigned long *l2_stack_top)
{
	uint32_t reason;
	bool running = true;

	if (!nvmx_nr_vcpu_ents) {
		/* One vCPU, no table from the host: one entry for everything. */
		nvmx_vcpu_tab[0].stack_lo = 0;
		nvmx_vcpu_tab[0].stack_hi = ~0ul;
		nvmx_vcpu_tab[0].sh = sh;
		nvmx_nr_vcpu_ents = 1;
	}
	__GUEST_ASSERT(nvmx_sh == sh, "vCPU table gives shared page %p, L1 got %p",
		       nvmx_sh, sh);
	if (sh->use & NVMX_USE_EVMCS)
		nvmx_l1_enable_evmcs(hv);
	GUEST_ASSERT(prepare_for_vmx_operation(vmx));
	if (sh->use & NVMX_USE_EVMCS)
		GUEST_ASSERT(load_evmcs(hv));
	else
		GUEST_ASSERT(load_vmcs(vmx));
	prepare_vmcs(vmx, l2_code, l2_stack_top);
	nvmx_l1_enable_pages();
	nvmx_l1_early_vmfails();
	if (nvmx_early_vmfails_only)
		GUEST_DONE();

	GUEST_ASSERT(!vmlaunch());
	while (running) {
		if (sh->use & NVMX_USE_EVMCS)
			current_evmcs->hv_clean_fields |=
				HV_VMX_ENLIGHTENED_CLEAN_FIELD_MSR_BITMAP;
		reason = vmreadz(VM_EXIT_REASON);
		switch (reason) {
		case EXIT_REASON_VMCALL:
			running = nvmx_l1_vmcall();
			break;
		case EXIT_REASON_MSR_READ:
			sh->nr_msr_read++;
			nvmx_l1_skip(2);
			break;
		case EXIT_REASON_MSR_WRITE:
			sh->nr_msr_write++;
			nvmx_l1_skip(2);
			break;
		case EXIT_REASON_APIC_ACCESS:
			sh->nr_apic_access++;
			sh->apic_qual = vmreadz(EXIT_QUALIFICATION);
			nvmx_l1_skip(2);
			break;
		default:
			GUEST_FAIL("unexpected exit to L1: reason 0x%x, qualification 0x%lx",
				   reason, vmreadz(EXIT_QUALIFICATION));
		}
		if (running)
			GUEST_ASSERT(!vmresume());
	}
	GUEST_DONE();
}

/* L2's stack lives on L1's stack, in nvmx_l1_main()'s caller's frame. */
#define NVMX_L2_STACK_SIZE	256

/*
 * Define the test's l1_guest_code(): nvmx_l1_main() running L2 at
 * @l2_entry.  Every page-cache test has the same L1; only L2 differs.
 */
#define NVMX_DEFINE_L1_GUEST_CODE(l2_entry)					\
static void l1_guest_code(struct vmx_pages *vmx,				\
			  struct hyperv_test_pages *hv,				\
			  struct nvmx_shared *sh)				\
{										\
	unsigned long l2_stack[NVMX_L2_STACK_SIZE];				\
										\
	nvmx_l1_main(vmx, hv, sh, l2_entry, &l2_stack[NVMX_L2_STACK_SIZE]);	\
}

/* Offset of vCPU 0's block in a THP- or hugetlb-backed page slot. */
#define NVMX_HUGE_OFFSET	0x5000ul

/* Host: GPA of vCPU 0's block of pages (set by nvmx_add_page_slot_src()). */
static uint64_t nvmx_host_pages_gpa = NVMX_PAGES_GPA;
/* Host: size of the page slot in bytes. */
static uint64_t nvmx_host_slot_size = NVMX_SLOT_PAGES * 4096ul;

static inline uint64_t nvmx_vcpu_pages_gpa(int vcpu_i)
{
	return nvmx_host_pages_gpa + (uint64_t)vcpu_i * NVMX_SLOT_PAGES * getpagesize();
}

/*
 * Host: the page slot, with a block of NVMX_SLOT_PAGES pages for each of
 * @nr_vcpus vCPUs, mapped 1:1 for L1.  VM_MEM_SRC_ANONYMOUS: 4 KiB pages
 * (MADV_NOHUGEPAGE), the blocks from NVMX_PAGES_GPA on.  THP or hugetlb:
 * a slot of whole huge pages (2 MiB or more), the blocks from
 * NVMX_PAGES_GPA + NVMX_HUGE_OFFSET on, so no page is at a huge-page
 * boundary.  Whether THP really gave huge pages is for the caller to check.
 */
static inline void nvmx_add_page_slot_src(struct kvm_vm *vm,
					  enum vm_mem_backing_src_type src, int nr_vcpus)
{
	uint64_t size = (uint64_t)nr_vcpus * NVMX_SLOT_PAGES * getpagesize();
	uint64_t huge;
	void *hva;

	TEST_ASSERT(nr_vcpus >= 1 && nr_vcpus <= NVMX_MAX_VCPUS, "%d vCPUs", nr_vcpus);
	nvmx_host_pages_gpa = NVMX_PAGES_GPA;
	if (src != VM_MEM_SRC_ANONYMOUS) {
		huge = get_backing_src_pagesz(src);
		TEST_ASSERT(huge >= 0x200000, "backing page size 0x%lx", huge);
		size = (NVMX_HUGE_OFFSET + size + huge - 1) / huge * huge;
		nvmx_host_pages_gpa = NVMX_PAGES_GPA + NVMX_HUGE_OFFSET;
	}
	nvmx_host_slot_size = size;
	vm_userspace_mem_region_add(vm, src, NVMX_PAGES_GPA, NVMX_PAGES_SLOT,
				    size / getpagesize(), 0);
	hva = addr_gpa2hva(vm, NVMX_PAGES_GPA);
	/* 4 KiB pages, so that replacing one page does not split a THP. */
	if (src == VM_MEM_SRC_ANONYMOUS)
		madvise(hva, size, MADV_NOHUGEPAGE);
	memset(hva, 0, size);
	virt_map(vm, NVMX_PAGES_GPA, NVMX_PAGES_GPA, size / getpagesize());
}

/* Host: the page slot in ordinary anonymous memory, for one vCPU. */
static inline void nvmx_add_page_slot(struct kvm_vm *vm)
{
	nvmx_add_page_slot_src(vm, VM_MEM_SRC_ANONYMOUS, 1);
}

static inline void nvmx_fill_shared(struct nvmx_shared *sh, uint64_t use,
				    uint64_t base_gpa)
{
	int i;

	memset(sh, 0, sizeof(*sh));
	sh->use = use;
	for (i = 0; i < NVMX_SLOT_PAGES; i++)
		sh->page_gpa[i] = base_gpa + i * getpagesize();
}

/* Host: HVA of page @pg of vCPU @vcpu_i's block. */
static inline void *nvmx_vcpu_page_hva(struct kvm_vm *vm, int vcpu_i, enum nvmx_slot_page pg)
{
	return addr_gpa2hva(vm, nvmx_vcpu_pages_gpa(vcpu_i) + pg * getpagesize());
}

static inline uint32_t *nvmx_vcpu_vtpr_hva(struct kvm_vm *vm, int vcpu_i)
{
	return (uint32_t *)((uint8_t *)nvmx_vcpu_page_hva(vm, vcpu_i, NVMX_PG_VAPIC) +
			    NVMX_APIC_TPR);
}

/* Host: the same for the first (or only) vCPU. */
static inline void *nvmx_page_hva(struct kvm_vm *vm, enum nvmx_slot_page pg)
{
	return nvmx_vcpu_page_hva(vm, 0, pg);
}

static inline uint32_t *nvmx_vtpr_hva(struct kvm_vm *vm)
{
	return nvmx_vcpu_vtpr_hva(vm, 0);
}

/* The MSR-bitmap pattern and the APIC offset of iteration @i. */
static inline uint64_t nvmx_pattern(uint64_t i)
{
	return (i * 37 + 5) & 0xff;
}

static const uint16_t nvmx_apic_offsets[8] = {
	0x20, 0x30, 0xb0, 0xd0, 0xe0, 0xf0, 0x300, 0x310,
};

/*
 * One iteration of L2 using every page L1 enabled:
 *   MSR bitmap: L1 rewrites it with nvmx_pattern(i); at the next entry each
 *     RDMSR/WRMSR of nvmx_msrs[] must exit to L1 exactly when the pattern
 *     intercepts it;
 *   APIC-access page: a read and a write at nvmx_apic_offsets[i % 8] must
 *     exit with EXIT_REASON_APIC_ACCESS and that offset and access type
 *     (0 = linear read, 1 = linear write) in the exit qualification;
 *   virtual-APIC page: L1 stores VTPR, L2 must read it through CR8, and the
 *     CR8 value L2 writes must be what L1 then finds in the page; with the
 *     APIC-access page too, a read of its TPR offset must not exit and must
 *     return VTPR (TPR virtualization).
 */
static inline void nvmx_l2_exercise(uint64_t i)
{
	uint64_t use = nvmx_sh->use, pattern, cr8, want;
	uint32_t val, off;
	bool exited;
	int m;

	if (use & NVMX_USE_MSR_BITMAP) {
		pattern = nvmx_pattern(i);
		nvmx_l2_call(NVMX_CMD_MSR_BITMAP, pattern);
		for (m = 0; m < NVMX_NR_MSRS; m++) {
			exited = nvmx_l2_rdmsr_exits(nvmx_msrs[m]);
			__GUEST_ASSERT(exited == !!(pattern & NVMX_RD(m)),
				       "iteration %lu: RDMSR 0x%x %s L1, MSR bitmap pattern 0x%lx",
				       i, nvmx_msrs[m], exited ? "exited to" : "did not exit to",
				       pattern);
			exited = nvmx_l2_wrmsr_exits(nvmx_msrs[m], 0);
			__GUEST_ASSERT(exited == !!(pattern & NVMX_WR(m)),
				       "iteration %lu: WRMSR 0x%x %s L1, MSR bitmap pattern 0x%lx",
				       i, nvmx_msrs[m], exited ? "exited to" : "did not exit to",
				       pattern);
		}
	}
	if (use & NVMX_USE_APIC_ACCESS) {
		off = nvmx_apic_offsets[i % 8];
		__GUEST_ASSERT(nvmx_l2_apic_read_exits(off, &val),
			       "iteration %lu: read of APIC-access page offset 0x%x did not exit",
			       i, off);
		__GUEST_ASSERT((nvmx_sh->apic_qual & 0xffff) == off,
			       "APIC-access read exit qualification 0x%lx, want 0x%x",
			       nvmx_sh->apic_qual, off);
		__GUEST_ASSERT(nvmx_l2_apic_write_exits(off, 0),
			       "iteration %lu: write of APIC-access page offset 0x%x did not exit",
			       i, off);
		__GUEST_ASSERT((nvmx_sh->apic_qual & 0xffff) == (0x1000 | off),
			       "APIC-access write exit qualification 0x%lx, want 0x%x",
			       nvmx_sh->apic_qual, 0x1000 | off);
	}
	if (use & NVMX_USE_VAPIC) {
		if (use & NVMX_USE_VAPIC_SWITCH)
			nvmx_l2_call(NVMX_CMD_SWITCH_VAPIC, 0);
		want = i % 16;
		nvmx_l2_call(NVMX_CMD_SET_VTPR, want << 4);
		cr8 = nvmx_l2_read_cr8();
		__GUEST_ASSERT(cr8 == want,
			       "iteration %lu: L2 read CR8 %lu, L1 stored VTPR 0x%lx",
			       i, cr8, want << 4);
		if (use & NVMX_USE_APIC_ACCESS) {
			__GUEST_ASSERT(!nvmx_l2_apic_read_exits(NVMX_APIC_TPR, &val),
				       "iteration %lu: TPR read through the APIC-access page exited",
				       i);
			__GUEST_ASSERT(val == want << 4,
				       "iteration %lu: TPR read through the APIC-access page gave 0x%x, VTPR 0x%lx",
				       i, val, want << 4);
		}
		want = (i + 5) % 16;
		nvmx_l2_write_cr8(want);
		nvmx_l2_call(NVMX_CMD_GET_VTPR, 0);
		__GUEST_ASSERT(nvmx_sh->vtpr >> 4 == want,
			       "iteration %lu: L2 wrote CR8 %lu, L1 found VTPR 0x%lx",
			       i, want, nvmx_sh->vtpr);
	}
}

/* Iterations of nvmx_l2_exercise_loop(); set by the host (sync it). */
static uint64_t nvmx_l2_iters;

/* L2: nvmx_l2_iters rounds of nvmx_l2_exercise(), then stop. */
static inline void nvmx_l2_exercise_loop(void)
{
	uint64_t i;

	for (i = 0; i < nvmx_l2_iters; i++)
		nvmx_l2_exercise(i);
	nvmx_l2_done();
}

/* Host: L1 exits nvmx_l2_exercise(0..n-1) must have caused. */
static inline void nvmx_expected_exits(uint64_t use, uint64_t n,
				       struct nvmx_shared *want)
{
	uint64_t i, pattern;
	int m;

	memset(want, 0, sizeof(*want));
	for (i = 0; i < n; i++) {
		if (use & NVMX_USE_MSR_BITMAP) {
			pattern = nvmx_pattern(i);
			want->nr_vmcall++;
			for (m = 0; m < NVMX_NR_MSRS; m++) {
				want->nr_msr_read += !!(pattern & NVMX_RD(m));
				want->nr_msr_write += !!(pattern & NVMX_WR(m));
			}
		}
		if (use & NVMX_USE_APIC_ACCESS)
			want->nr_apic_access += 2;
		if (use & NVMX_USE_VAPIC)
			want->nr_vmcall += 2;
		if (use & NVMX_USE_VAPIC_SWITCH)
			want->nr_vmcall++;
	}
}

/*
 * The parked sequence of the invalidation and memslot tests.  The pages
 * start as: MSR bitmap intercepting RDMSR of nvmx_msrs[0] only, VTPR 0x30.
 *   1. L2 checks the start state and exits to userspace (SYNC_PARKED) with
 *      the vCPU in L2: the host changes the pages, typically to a bitmap
 *      intercepting RDMSR of nvmx_msrs[1] only and VTPR 0x90;
 *   2. L2 resumes without an exit to L1 in between, reads CR8 and reads the
 *      APIC-access page (SYNC_RESUMED);
 *   3. L2 exits to L1 once (a new nested VM-Enter) and reports the RDMSR
 *      exits and CR8 again (SYNC_NEXT_ENTRY).
 * Each report is GUEST_SYNC_ARGS(stage, cr8, a, b, 0): a and b are 1 when
 * the RDMSRs of nvmx_msrs[0] and [1] exited to L1; at SYNC_RESUMED a is
 * 1 when the APIC-access read exited, 0 when it did not, 2 when skipped.
 */
enum {
	NVMX_SYNC_PARKED = 1,
	NVMX_SYNC_RESUMED,
	NVMX_SYNC_NEXT_ENTRY,
};

#define NVMX_START_VTPR		0x30
#define NVMX_NEW_VTPR		0x90
#define NVMX_START_PATTERN	NVMX_RD(0)
#define NVMX_NEW_PATTERN	NVMX_RD(1)
#define NVMX_PROBE_OFFSET	0x20

static inline void nvmx_l2_parked_sequence(void)
{
	uint64_t a, b, cr8;
	uint32_t val;

	a = nvmx_l2_rdmsr_exits(nvmx_msrs[0]);
	b = nvmx_l2_rdmsr_exits(nvmx_msrs[1]);
	cr8 = nvmx_l2_read_cr8();
	GUEST_SYNC_ARGS(NVMX_SYNC_PARKED, cr8, a, b, 0);

	cr8 = nvmx_l2_read_cr8();
	if (READ_ONCE(nvmx_sh->l2_flags) & NVMX_L2_NO_APIC_READ)
		a = 2;
	else
		a = nvmx_l2_apic_read_exits(NVMX_PROBE_OFFSET, &val);
	GUEST_SYNC_ARGS(NVMX_SYNC_RESUMED, cr8, a, 0, 0);

	nvmx_l2_call(NVMX_CMD_NOP, 0);
	a = nvmx_l2_rdmsr_exits(nvmx_msrs[0]);
	b = nvmx_l2_rdmsr_exits(nvmx_msrs[1]);
	cr8 = nvmx_l2_read_cr8();
	GUEST_SYNC_ARGS(NVMX_SYNC_NEXT_ENTRY, cr8, a, b, 0);
}

/* Host: the index of @arg among @names[0..@n), or -1 (option parsing). */
static inline int nvmx_name_index(const char *const *names, int n, const char *arg)
{
	int i;

	for (i = 0; i < n; i++)
		if (names[i] && !strcmp(arg, names[i]))
			return i;
	return -1;
}

/* Host: the "<@field> N kB" value of the /proc/self/smaps VMA holding @addr, or -1. */
static inline long nvmx_smaps_kb(void *addr, const char *field)
{
	unsigned long lo, hi, a = (unsigned long)addr;
	char line[256];
	bool in = false;
	long kb = -1;
	FILE *f;

	f = fopen("/proc/self/smaps", "r");
	TEST_ASSERT(f, "/proc/self/smaps: %s", strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		/* A VMA line starts "lo-hi "; field lines have no '-' first. */
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 &&
		    strchr(line, '-') < strchr(line, ' ')) {
			in = a >= lo && a < hi;
			continue;
		}
		if (in && !strncmp(line, field, strlen(field))) {
			kb = strtol(line + strlen(field), NULL, 10);
			break;
		}
	}
	fclose(f);
	return kb;
}

/* Host: the PFN backing @hva in this process (0 if not present). */
static inline uint64_t nvmx_hva_to_pfn(void *hva)
{
	uint64_t ent = 0;
	int fd;

	fd = open("/proc/self/pagemap", O_RDONLY);
	TEST_ASSERT(fd >= 0, "/proc/self/pagemap: %s", strerror(errno));
	TEST_ASSERT(pread(fd, &ent, sizeof(ent),
			  (uintptr_t)hva / getpagesize() * sizeof(ent)) == sizeof(ent),
		    "pagemap read: %s", strerror(errno));
	close(fd);
	return (ent & (1ull << 63)) ? ent & ((1ull << 55) - 1) : 0;
}

#ifndef MADV_SOFT_OFFLINE
#define MADV_SOFT_OFFLINE	101
#endif

#define NVMX_SOFT_OFFLINE_TRIES	4

/*
 * Host: drain the per-CPU LRU batches.  A page sitting in one is off the
 * LRU, and soft-offlining it fails with EBUSY although nothing holds it.
 * mlock() of a page of our own drains this CPU's batches, drop_caches=1
 * (nothing to drop in an initramfs) every CPU's.
 */
static inline void nvmx_drain_lru_batches(void)
{
	uint8_t *page;
	int fd;

	page = mmap(NULL, getpagesize(), PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	TEST_ASSERT(page != MAP_FAILED, "mmap: %s", strerror(errno));
	page[0] = 1;
	if (!mlock(page, getpagesize()))
		munlock(page, getpagesize());
	munmap(page, getpagesize());
	fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
	if (fd >= 0) {
		if (write(fd, "1", 1) != 1)
			printf("# drop_caches: %s\n", strerror(errno));
		close(fd);
	}
}

/*
 * Host: print what the kernel logged about soft offline since @fd was
 * opened on /dev/kmsg (its reason for a page that did not move: isolation
 * failed with the page count, migration failed, THP split failed).
 */
static inline void nvmx_print_offline_log(int fd)
{
	char rec[1024], *msg;
	ssize_t n;

	while (fd >= 0) {
		n = read(fd, rec, sizeof(rec) - 1);
		if (n < 0 && errno == EPIPE)
			continue;
		if (n <= 0)
			break;
		rec[n] = 0;
		msg = strchr(rec, ';');
		msg = msg ? msg + 1 : rec;
		if (strstr(msg, "failed") || strstr(msg, "poison") || strstr(msg, "offline"))
			printf("# kernel: %s", msg);
	}
}

/*
 * Host: soft-offline (MADV_SOFT_OFFLINE) the page at @hva, which migrates
 * it to a new physical page.  Returns 0 if it now has a new PFN, EINVAL if
 * the kernel has no soft offline (CONFIG_MEMORY_FAILURE; the caller skips),
 * and otherwise -1 with the reason in @why.
 *
 * A page that KVM holds (stock's kvm_vcpu_map() while L2 runs) can never
 * move.  A page that nothing holds can still fail to move for a moment: it
 * may sit in a per-CPU LRU batch, or a passing reference (reclaim, the LRU
 * code, khugepaged) may make migration see one reference too many.  So the
 * batches are drained before each of up to NVMX_SOFT_OFFLINE_TRIES tries,
 * and the kernel's reasons are printed for each failed try.
 */
static inline int nvmx_soft_offline(void *hva, const char *name, char *why, size_t len)
{
	uint64_t before = nvmx_hva_to_pfn(hva), after = before;
	int try, ret = 0, err = 0, fd;

	fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
	if (fd >= 0 && lseek(fd, 0, SEEK_END) < 0) {
		close(fd);
		fd = -1;
	}
	for (try = 1; try <= NVMX_SOFT_OFFLINE_TRIES; try++) {
		nvmx_drain_lru_batches();
		ret = madvise(hva, getpagesize(), MADV_SOFT_OFFLINE);
		err = ret ? errno : 0;
		if (ret && err == EINVAL)
			break;
		after = nvmx_hva_to_pfn(hva);
		printf("# migrate: %s pfn 0x%lx -> 0x%lx (try %d: %s)\n", name, before,
		       after, try, ret ? strerror(err) : "ok");
		if (!ret && after && after != before)
			break;
		nvmx_print_offline_log(fd);
		usleep(10000);
	}
	if (fd >= 0)
		close(fd);
	if (ret && err == EINVAL)
		return EINVAL;
	if (!ret && after && after != before)
		return 0;
	snprintf(why, len, "%s not moved (%s, %d tries)", name,
		 ret ? strerror(err) : "same PFN", NVMX_SOFT_OFFLINE_TRIES);
	return -1;
}

/*
 * Host: MADV_DONTNEED the page at @hva, then fault a new page in by writing
 * @val at byte @off of it.  The freed page would come straight back as the
 * new one (the allocator reuses the page freed last), which would hide a
 * stale mapping: a scratch page, kept until the process exits, takes it
 * first.  The pfn must change; returns the new one, *@old the old one.
 */
static inline uint64_t nvmx_zap_page(void *hva, uint64_t off, uint32_t val, uint64_t *old)
{
	volatile uint8_t *scratch;
	uint64_t new;

	*old = nvmx_hva_to_pfn(hva);
	TEST_ASSERT(!madvise(hva, getpagesize(), MADV_DONTNEED),
		    "madvise(MADV_DONTNEED): %s", strerror(errno));
	scratch = mmap(NULL, getpagesize(), PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	TEST_ASSERT(scratch != MAP_FAILED, "mmap: %s", strerror(errno));
	*scratch = 1;
	*(volatile uint32_t *)((uint8_t *)hva + off) = val;
	new = nvmx_hva_to_pfn(hva);
	TEST_ASSERT(*old && new && *old != new, "the page at %p did not move (pfn 0x%lx -> 0x%lx)",
		    hva, *old, new);
	return new;
}

/*
 * Host: one kselftest result for the invalidation the cache must have
 * counted since @st0 (inval_memslot with @memslot, else inval_notifier), or
 * a skip without statistics.  Returns the number of failures.
 */
static inline int nvmx_report_inval(const char *what, bool stats, const char *path,
				    const struct nvmx_stats *st0, bool memslot)
{
	struct nvmx_stats st1;
	uint64_t before, after;

	if (!stats) {
		ksft_test_result_skip("%s: no nvmx_gpc statistics: stock KVM or pass-through provider\n",
				      what);
		return 0;
	}
	nvmx_stats_read(path, &st1);
	nvmx_stats_print("after", &st1);
	before = memslot ? st0->inval_memslot : st0->inval_notifier;
	after = memslot ? st1.inval_memslot : st1.inval_notifier;
	if (after > before) {
		ksft_test_result_pass("%s: %s %lu -> %lu\n", what,
				      memslot ? "inval_memslot" : "inval_notifier", before, after);
		return 0;
	}
	ksft_test_result_fail("%s: the cache saw no %s invalidation (%s %lu -> %lu)\n", what,
			      memslot ? "memslot" : "mmu_notifier",
			      memslot ? "inval_memslot" : "inval_notifier", before, after);
	return 1;
}

/*
 * L2 of the invalidation tests: with nvmx_l2_race_iters zero, the parked
 * sequence; otherwise that many rounds of reporting CR8 to the host
 * (NVMX_SYNC_RACE), exiting to L1 every 8th.
 */
#define NVMX_SYNC_RACE		10
static uint64_t nvmx_l2_race_iters;

static inline void nvmx_l2_park_or_race(void)
{
	uint64_t i;

	if (!nvmx_l2_race_iters) {
		nvmx_l2_parked_sequence();
	} else {
		for (i = 0; i < nvmx_l2_race_iters; i++) {
			GUEST_SYNC_ARGS(NVMX_SYNC_RACE, i, nvmx_l2_read_cr8(), 0, 0);
			if (i % 8 == 7)
				nvmx_l2_call(NVMX_CMD_NOP, 0);
		}
	}
	nvmx_l2_done();
}

/* Host: content of the pages at the start of the parked sequence. */
static inline void nvmx_write_start_pages(void *bitmap, void *vapic)
{
	nvmx_write_msr_bitmap(bitmap, NVMX_START_PATTERN);
	*(volatile uint32_t *)((uint8_t *)vapic + NVMX_APIC_TPR) = NVMX_START_VTPR;
}

static inline void nvmx_write_new_pages(void *bitmap, void *vapic)
{
	nvmx_write_msr_bitmap(bitmap, NVMX_NEW_PATTERN);
	*(volatile uint32_t *)((uint8_t *)vapic + NVMX_APIC_TPR) = NVMX_NEW_VTPR;
}

/* Host: run until the next ucall, which must be SYNC @stage; returns args. */
static inline void nvmx_run_to_sync(struct kvm_vcpu *vcpu, uint64_t stage,
				    struct ucall *uc)
{
	vcpu_run(vcpu);
	TEST_ASSERT_KVM_EXIT_REASON(vcpu, KVM_EXIT_IO);
	switch (get_ucall(vcpu, uc)) {
	case UCALL_ABORT:
		REPORT_GUEST_ASSERT(*uc);
		/* NOT REACHED */
	case UCALL_SYNC:
		TEST_ASSERT(uc->args[1] == stage, "got SYNC %lu, expected %lu",
			    uc->args[1], stage);
		break;
	default:
		TEST_FAIL("unexpected ucall %lu, expected SYNC %lu", uc->cmd, stage);
	}
}

static inline void nvmx_run_to_done(struct kvm_vcpu *vcpu)
{
	struct ucall uc;

	vcpu_run(vcpu);
	TEST_ASSERT_KVM_EXIT_REASON(vcpu, KVM_EXIT_IO);
	switch (get_ucall(vcpu, &uc)) {
	case UCALL_ABORT:
		REPORT_GUEST_ASSERT(uc);
		/* NOT REACHED */
	case UCALL_DONE:
		break;
	default:
		TEST_FAIL("unexpected ucall %lu, expected DONE", uc.cmd);
	}
}

/* Host: check the baseline at SYNC_PARKED. */
static inline void nvmx_check_parked(struct ucall *uc)
{
	TEST_ASSERT(uc->args[2] == NVMX_START_VTPR >> 4 && uc->args[3] == 1 &&
		    uc->args[4] == 0,
		    "start state wrong: CR8 %lu (want %u), RDMSR 0x%x exit %lu (want 1), RDMSR 0x%x exit %lu (want 0)",
		    uc->args[2], NVMX_START_VTPR >> 4, nvmx_msrs[0], uc->args[3],
		    nvmx_msrs[1], uc->args[4]);
}

/*
 * Host: report SYNC_RESUMED (@res) and SYNC_NEXT_ENTRY (@next) as three
 * kselftest results, the virtual-APIC one last; @what names the change.
 * Returns the number of failures.
 */
static inline int nvmx_report_resumed(const char *what, struct ucall *res,
				      struct ucall *next, uint32_t new_vtpr)
{
	uint64_t cr8 = res->args[2], apic = res->args[3];
	int fails = 0;

	if (apic == 2) {
		ksft_test_result_skip("%s: APIC-access page not probed\n", what);
	} else if (apic) {
		ksft_test_result_pass("%s: APIC-access read exited to L1 without an L1 entry in between\n",
				      what);
	} else {
		ksft_test_result_fail("%s: stale APIC-access page: L2's read of offset 0x%x did not exit to L1 (vmcs02 still holds the old page's address)\n",
				      what, NVMX_PROBE_OFFSET);
		fails++;
	}

	if (next->args[3] == 0 && next->args[4] == 1 &&
	    next->args[2] == new_vtpr >> 4) {
		ksft_test_result_pass("%s: at the next nested VM-Enter the MSR bitmap and VTPR are the new ones\n",
				      what);
	} else {
		ksft_test_result_fail("%s: stale page after the next nested VM-Enter: RDMSR 0x%x exit %lu (want 0), RDMSR 0x%x exit %lu (want 1), TPR 0x%lx (want 0x%x)\n",
				      what, nvmx_msrs[0], next->args[3], nvmx_msrs[1],
				      next->args[4], next->args[2] << 4, new_vtpr);
		fails++;
	}

	if (cr8 == new_vtpr >> 4) {
		ksft_test_result_pass("%s: L2 read the new TPR 0x%x without an exit to L1\n",
				      what, new_vtpr);
	} else {
		ksft_test_result_fail("%s: stale virtual-APIC page: L2 read TPR 0x%lx, host wrote 0x%x\n",
				      what, cr8 << 4, new_vtpr);
		fails++;
	}
	return fails;
}

/*
 * Host: give @vcpu Hyper-V's CPUID and enlightened VMCS, and allocate its
 * Hyper-V test pages; returns their GVA, L1's second argument for
 * nvmx_l1_enable_evmcs().
 */
static inline vm_vaddr_t nvmx_vcpu_enable_evmcs(struct kvm_vm *vm, struct kvm_vcpu *vcpu)
{
	vm_vaddr_t hv_gva;

	vcpu_set_hv_cpuid(vcpu);
	vcpu_enable_evmcs(vcpu);
	vcpu_alloc_hyperv_test_pages(vm, &hv_gva);
	return hv_gva;
}

/*
 * Host: option -v (1 to NVMX_MAX_VCPUS vCPUs) or -s (the page slot's
 * backing, as the selftest library names it) of the multi-vCPU tests;
 * false for a bad value or another option.
 */
static inline bool nvmx_vcpus_opt(int opt, const char *arg, int *nr_vcpus,
				  enum vm_mem_backing_src_type *src)
{
	switch (opt) {
	case 'v':
		*nr_vcpus = atoi(arg);
		return *nr_vcpus >= 1 && *nr_vcpus <= NVMX_MAX_VCPUS;
	case 's':
		*src = parse_backing_src_type(arg);
		return true;
	default:
		return false;
	}
}

/*
 * Host: create a VM with @nr_vcpus vCPUs running @l1_code and the page slot
 * backed by @src; vCPU i gets its own VMX pages, its own shared page @sh[i]
 * (using the pages @use names, from its block at nvmx_vcpu_pages_gpa(i))
 * and its entry in nvmx_vcpu_tab[].  With NVMX_USE_EVMCS each vCPU also
 * gets eVMCS and its Hyper-V pages (nvmx_vcpu_enable_evmcs()).  L1 is
 * called as l1_code(vmx, hv, sh), hv being 0 without eVMCS.  Every vCPU
 * may run L1; a test that wants some of them idle simply does not run them.
 */
static inline void nvmx_create_vm_vcpus(struct kvm_vm **vmp, struct kvm_vcpu **vcpus,
					int nr_vcpus, void *l1_code, uint64_t use,
					enum vm_mem_backing_src_type src,
					struct nvmx_shared **sh)
{
	vm_vaddr_t vmx_gva, hv_gva, sh_gva;
	struct kvm_regs regs;
	int i;

	TEST_ASSERT(nr_vcpus >= 1 && nr_vcpus <= NVMX_MAX_VCPUS, "%d vCPUs", nr_vcpus);
	*vmp = vm_create_with_vcpus(nr_vcpus, l1_code, vcpus);
	nvmx_add_page_slot_src(*vmp, src, nr_vcpus);
	memset(nvmx_vcpu_tab, 0, sizeof(nvmx_vcpu_tab));
	for (i = 0; i < nr_vcpus; i++) {
		vcpu_alloc_vmx(*vmp, &vmx_gva);
		hv_gva = 0;
		if (use & NVMX_USE_EVMCS)
			hv_gva = nvmx_vcpu_enable_evmcs(*vmp, vcpus[i]);
		sh_gva = vm_vaddr_alloc_page(*vmp);
		sh[i] = addr_gva2hva(*vmp, sh_gva);
		nvmx_fill_shared(sh[i], use, nvmx_vcpu_pages_gpa(i));
		vcpu_args_set(vcpus[i], 3, vmx_gva, hv_gva, sh_gva);

		/* The library's stack: DEFAULT_STACK_PGS pages below RSP. */
		vcpu_regs_get(vcpus[i], &regs);
		nvmx_vcpu_tab[i].stack_hi = (regs.rsp + getpagesize() - 1) &
					    ~(uint64_t)(getpagesize() - 1);
		nvmx_vcpu_tab[i].stack_lo = nvmx_vcpu_tab[i].stack_hi -
					    DEFAULT_STACK_PGS * getpagesize();
		nvmx_vcpu_tab[i].sh = (struct nvmx_shared *)sh_gva;
	}
	nvmx_nr_vcpu_ents = nr_vcpus;
	sync_global_to_guest(*vmp, nvmx_vcpu_tab);
	sync_global_to_guest(*vmp, nvmx_nr_vcpu_ents);
}

/*
 * Host thread: toggle the protection of @page without a pause, between
 * PROT_READ | PROT_WRITE and the same plus PROT_EXEC (neither KVM nor the
 * host ever faults on it, the contents stay), until @stop.  Every toggle
 * is an mmu_notifier invalidation of the page.
 */
struct nvmx_toggler {
	void *page;
	uint64_t toggles;	/* completed toggle pairs */
	bool paused;		/* no toggles while set */
	bool stop;
};

static inline void *nvmx_toggle_thread(void *arg)
{
	struct nvmx_toggler *t = arg;

	while (!__atomic_load_n(&t->stop, __ATOMIC_ACQUIRE)) {
		if (__atomic_load_n(&t->paused, __ATOMIC_ACQUIRE)) {
			sched_yield();
			continue;
		}
		TEST_ASSERT(!mprotect(t->page, getpagesize(), PROT_READ | PROT_WRITE | PROT_EXEC),
			    "mprotect: %s", strerror(errno));
		TEST_ASSERT(!mprotect(t->page, getpagesize(), PROT_READ | PROT_WRITE),
			    "mprotect: %s", strerror(errno));
		__atomic_add_fetch(&t->toggles, 1, __ATOMIC_RELEASE);
	}
	return NULL;
}

/* Host: create the VM with one vCPU and the page slot; returns the shared page. */
static inline struct nvmx_shared *nvmx_create_vm(struct kvm_vm **vmp, struct kvm_vcpu **vcpup,
						 void *l1_code, uint64_t use)
{
	struct kvm_vcpu *vcpus[1];
	struct nvmx_shared *sh[1];

	nvmx_create_vm_vcpus(vmp, vcpus, 1, l1_code, use, VM_MEM_SRC_ANONYMOUS, sh);
	*vcpup = vcpus[0];
	return sh[0];
}

/*
 * Create the test VM with all three pages in use and their start contents,
 * and run until L2 is parked in userspace (nvmx_l2_parked_sequence()) with
 * the pages mapped.  Returns the shared area; *@stats says whether the
 * module's statistics exist for this VM, and if so @path names them and
 * *@st0 holds their values at the park.
 */
static inline struct nvmx_shared *nvmx_create_parked_vm(struct kvm_vm **vmp,
							struct kvm_vcpu **vcpup,
							void *l1_code, struct ucall *uc,
							char *path, size_t len,
							bool *stats,
							struct nvmx_stats *st0)
{
	struct nvmx_shared *sh;

	sh = nvmx_create_vm(vmp, vcpup, l1_code,
			    NVMX_USE_MSR_BITMAP | NVMX_USE_APIC_ACCESS | NVMX_USE_VAPIC);
	nvmx_write_start_pages(nvmx_page_hva(*vmp, NVMX_PG_MSR_BITMAP),
			       nvmx_page_hva(*vmp, NVMX_PG_VAPIC));
	*stats = nvmx_stats_find(path, len);

	nvmx_run_to_sync(*vcpup, NVMX_SYNC_PARKED, uc);
	nvmx_check_parked(uc);
	if (*stats)
		nvmx_stats_read(path, st0);
	return sh;
}

#endif /* SELFTEST_NVMX_NESTED_H */
