// SPDX-License-Identifier: GPL-2.0-only
/*
 * nvmx_module_pin_test: a VM bound to the nvmx_gpc page provider pins the
 * provider module, so it cannot be unloaded under a running L2.
 *
 * With nvmx_gpc loaded, the test creates a VM whose L1 enters L2 with the
 * APIC-access and virtual-APIC pages in use; L2 then exits straight to
 * userspace (port I/O that L1 does not intercept), so the vCPU sits in guest
 * mode with the provider's mappings live.  While it does:
 *   - the module's reference count must be above its value before the VM;
 *   - delete_module(O_NONBLOCK) must fail with EBUSY or EWOULDBLOCK and the
 *     module must still be listed in /proc/modules.
 * L2 then runs to completion, the VM is freed, and the reference count must
 * be back where it started.
 *
 * Without the module loaded there is nothing to test: SKIP.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kvm_util.h"
#include "processor.h"
#include "vmx.h"

#include "nvmx_nested.h"

#include "kselftest.h"

#define MODULE_NAME	"nvmx_gpc"
#define REFCNT_PATH	"/sys/module/" MODULE_NAME "/refcnt"

static void l2_guest_code(void)
{
	/* Exit to userspace from L2: L1 does not intercept port I/O. */
	GUEST_SYNC(2);
	__asm__ __volatile__("vmcall");
}

static void l1_guest_code(struct vmx_pages *vmx_pages, uint64_t vapic_gpa)
{
#define L2_GUEST_STACK_SIZE 64
	unsigned long l2_guest_stack[L2_GUEST_STACK_SIZE];

	GUEST_ASSERT(prepare_for_vmx_operation(vmx_pages));
	GUEST_ASSERT(load_vmcs(vmx_pages));
	prepare_vmcs(vmx_pages, l2_guest_code,
		     &l2_guest_stack[L2_GUEST_STACK_SIZE]);

	nvmx_l1_set_pages(0, vmx_pages->apic_access_gpa, vapic_gpa);

	GUEST_SYNC(1);
	GUEST_ASSERT(!vmlaunch());
	GUEST_ASSERT_EQ(vmreadz(VM_EXIT_REASON), EXIT_REASON_VMCALL);
	GUEST_DONE();
}

static long read_refcnt(void)
{
	long v = -1;
	FILE *f;

	f = fopen(REFCNT_PATH, "r");
	TEST_ASSERT(f, "%s: %s", REFCNT_PATH, strerror(errno));
	TEST_ASSERT(fscanf(f, "%ld", &v) == 1, "cannot parse %s", REFCNT_PATH);
	fclose(f);
	return v;
}

static bool module_listed(void)
{
	char line[256];
	bool found = false;
	FILE *f;

	f = fopen("/proc/modules", "r");
	TEST_ASSERT(f, "/proc/modules: %s", strerror(errno));
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, MODULE_NAME " ", strlen(MODULE_NAME) + 1))
			found = true;
	fclose(f);
	return found;
}

int main(int argc, char *argv[])
{
	long before, during, after;
	vm_vaddr_t vmx_gva, vapic;
	struct vmx_pages *vmx;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	struct ucall uc;
	bool done = false;
	int ret, err;

	ksft_print_header();
	TEST_REQUIRE(kvm_cpu_has(X86_FEATURE_VMX));
	__TEST_REQUIRE(access(REFCNT_PATH, R_OK) == 0,
		       MODULE_NAME " is not loaded: nothing pins it");
	ksft_set_plan(3);

	before = read_refcnt();
	vm = vm_create_with_one_vcpu(&vcpu, l1_guest_code);
	vmx = vcpu_alloc_vmx(vm, &vmx_gva);
	prepare_virtualize_apic_accesses(vmx, vm);
	vapic = vm_vaddr_alloc_page(vm);
	vcpu_args_set(vcpu, 2, vmx_gva, addr_gva2gpa(vm, vapic));

	while (!done) {
		vcpu_run(vcpu);
		TEST_ASSERT_KVM_EXIT_REASON(vcpu, KVM_EXIT_IO);
		switch (get_ucall(vcpu, &uc)) {
		case UCALL_ABORT:
			REPORT_GUEST_ASSERT(uc);
			/* NOT REACHED */
		case UCALL_SYNC:
			if (uc.args[1] != 2)
				break;
			/* L2 is live, with its APIC pages mapped. */
			during = read_refcnt();
			TEST_ASSERT(during > before,
				    "refcnt %ld with a VM bound, %ld before", during, before);
			ksft_test_result_pass("a bound VM holds a module reference\n");

			ret = syscall(__NR_delete_module, MODULE_NAME, O_NONBLOCK);
			err = errno;
			TEST_ASSERT(ret == -1 && (err == EBUSY || err == EWOULDBLOCK),
				    "delete_module returned %d (%s) while L2 runs",
				    ret, strerror(err));
			TEST_ASSERT(module_listed(), MODULE_NAME " vanished under a running L2");
			ksft_test_result_pass("rmmod refused while L2 runs (%s)\n",
					      strerror(err));
			break;
		case UCALL_DONE:
			done = true;
			break;
		default:
			TEST_FAIL("unexpected ucall %lu", uc.cmd);
		}
	}
	kvm_vm_free(vm);

	after = read_refcnt();
	TEST_ASSERT(after == before, "refcnt %ld after the VM is gone, %ld before",
		    after, before);
	ksft_test_result_pass("the reference is dropped with the VM\n");
	ksft_finished();
}
