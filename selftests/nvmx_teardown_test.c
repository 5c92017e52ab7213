// SPDX-License-Identifier: GPL-2.0-only
/*
 * nvmx_teardown_test: VM destruction while another thread invalidates the
 * memory behind the vAPIC page of a vCPU parked in L2.
 *
 * The page slot (MSR bitmap, APIC-access page, virtual-APIC page, see
 * selftests/nvmx_nested.h) is backed by one buffer the test maps once and
 * registers with KVM_SET_USER_MEMORY_REGION in every VM, so the buffer
 * outlives each VM.  A second host thread toggles the vAPIC page's
 * protection (PROT_READ | PROT_WRITE and PROT_READ | PROT_WRITE |
 * PROT_EXEC, so that neither KVM nor the host ever faults on it) without a
 * pause: every toggle is an mmu_notifier invalidation of the page.  Each of
 * -n iterations (default 20):
 *   - creates a VM with 2 vCPUs; vCPU 0 runs the nested L1 and parks L2
 *     (nvmx_l2_parked_sequence()) with the iteration's own VTPR, which L2
 *     must read through CR8;
 *   - the host writes another VTPR, L2 resumes without an exit to L1 and
 *     must read that one;
 *   - the VM is destroyed (kvm_vm_free()) with vCPU 0 still in L2.
 * No kernel log line with "BUG", "WARNING", "KASAN" or "general protection"
 * may appear from the start of the test on (the test bed's end-of-phase
 * check also fails the run on any kernel warning).  The test reports how
 * many of the destructions overlapped with toggles of the other thread.
 *
 * What it looks for (review finding F5): a kick chosen under the module's
 * VM lock and sent after dropping it can reach a vCPU that
 * kvm_destroy_vcpus() has already freed.  That window is only reachable
 * with the invalidating thread really running in parallel, i.e. with 2 or
 * more emulated CPUs (--cpus 2), and a use-after-free is only reliably
 * visible on a KASAN kernel; on one CPU and without KASAN the test mainly
 * checks that destruction under invalidations works and that every L2 saw
 * a current page.
 *
 * -f: the last references to each VM are dropped by a forked child, whose
 * mm is not the VM's.  kvm_arch_destroy_vm() deletes KVM's private
 * memslots only when it runs in the VM's mm, and those deletions
 * invalidate every cache before kvm_destroy_vcpus(); from another mm (a
 * VMM that forked, an fd passed over a socket) they are skipped, and the
 * caches are still valid when the vCPUs are freed.  The toggler is paused
 * for the last L2 run, so that L2's pages are valid and in use by vCPU 0
 * when the child drops the VM, and resumes as the child exits.
 *
 * With the test bed's nvmx_widen module loaded (debug kernel, make
 * bochs-widen on 2 CPUs, testbed/plans/widen.plan), every vCPU stays in
 * kvm->vcpu_array for delay_us after it was freed; the test then also
 * requires that some window was really widened (the module's hits).
 *
 * Expected on stock KVM: pass.  The old nvmx_gpc module (4e10b0e): pass
 * unless the race hits (then a KASAN report or an oops).  With -f,
 * nvmx_widen (500 ms) and a test-only 200 ms delay between choosing and
 * sending its kicks: "KASAN: slab-use-after-free in kvm_make_vcpu_request"
 * from the parent's mprotect(), on the kvm_vcpu the child's exit freed.
 * Without -f the same old module passes: the private-memslot deletions
 * in the VMM's own mm invalidate every cache before the vCPUs are freed,
 * so nothing is left to kick.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nvmx_klog.h"
#include "nvmx_nested.h"
#include "nvmx_stats.h"

#include "kselftest.h"

#define NR_VCPUS	2
#define SLOT_SIZE	(NVMX_SLOT_PAGES * 4096ul)
#define WIDEN_HITS	"/sys/module/nvmx_widen/parameters/hits"

static const char *const bad_log[] = {
	"BUG", "WARNING", "KASAN", "general protection", "Oops",
};

static void l2_guest_code(void)
{
	nvmx_l2_parked_sequence();
	nvmx_l2_done();
}

NVMX_DEFINE_L1_GUEST_CODE(l2_guest_code)


/* VTPR values of iteration @i at the park and after it: 1..15, never 0. */
static uint32_t park_vtpr(uint64_t i)
{
	return (1 + i % 15) << 4;
}

static uint32_t resume_vtpr(uint64_t i)
{
	return (1 + (i + 7) % 15) << 4;
}

/* One VM; returns false with @why if L2 did not see a current page. */
/* -f: drop the VM's last references from a forked child. */
static bool fork_close;

/*
 * Close the parent's references to @vm (the vCPU fds and their kvm_run
 * mappings, the VM fd) and let a child that inherited them exit, so that
 * KVM destroys the VM in the child, while @t toggles again.  The library's
 * struct kvm_vm and the guest memory are left behind (the fds are gone).
 */
static void destroy_from_child(struct kvm_vm *vm, struct kvm_vcpu **vcpus,
			       struct nvmx_toggler *t)
{
	int go[2], status, mmap_sz, i;
	pid_t pid;
	char c = 0;

	TEST_ASSERT(!pipe(go), "pipe: %s", strerror(errno));
	pid = fork();
	TEST_ASSERT(pid >= 0, "fork: %s", strerror(errno));
	if (!pid) {
		close(go[1]);
		(void)!read(go[0], &c, 1);
		_exit(0);
	}
	close(go[0]);
	mmap_sz = __kvm_ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, NULL);
	TEST_ASSERT(mmap_sz > 0, "KVM_GET_VCPU_MMAP_SIZE: %d", mmap_sz);
	for (i = 0; i < NR_VCPUS; i++) {
		munmap(vcpus[i]->run, mmap_sz);
		close(vcpus[i]->fd);
	}
	close(vm->fd);
	__atomic_store_n(&t->paused, false, __ATOMIC_RELEASE);
	TEST_ASSERT(write(go[1], &c, 1) == 1, "write: %s", strerror(errno));
	close(go[1]);
	TEST_ASSERT(waitpid(pid, &status, 0) == pid && WIFEXITED(status), "child");
}

static bool one_vm(uint64_t i, uint8_t *buf, struct nvmx_toggler *t, uint64_t *overlap,
		   char *why, size_t len)
{
	struct kvm_vcpu *vcpus[NR_VCPUS];
	vm_vaddr_t vmx_gva, sh_gva;
	volatile uint32_t *vtpr;
	struct nvmx_shared *sh;
	struct kvm_vm *vm;
	struct ucall uc;
	uint64_t before;
	bool ok = true;

	vm = vm_create_with_vcpus(NR_VCPUS, l1_guest_code, vcpus);
	vcpu_alloc_vmx(vm, &vmx_gva);
	vm_set_user_memory_region(vm, NVMX_PAGES_SLOT, 0, NVMX_PAGES_GPA, SLOT_SIZE, buf);
	virt_map(vm, NVMX_PAGES_GPA, NVMX_PAGES_GPA, NVMX_SLOT_PAGES);
	sh_gva = vm_vaddr_alloc_page(vm);
	sh = addr_gva2hva(vm, sh_gva);
	nvmx_fill_shared(sh, NVMX_USE_MSR_BITMAP | NVMX_USE_APIC_ACCESS | NVMX_USE_VAPIC,
			 NVMX_PAGES_GPA);
	vcpu_args_set(vcpus[0], 3, vmx_gva, 0, sh_gva);

	/* The buffer still holds the last VM's pages: start afresh. */
	memset(buf, 0, SLOT_SIZE);
	nvmx_write_msr_bitmap(buf + NVMX_PG_MSR_BITMAP * getpagesize(), NVMX_START_PATTERN);
	vtpr = (uint32_t *)(buf + NVMX_PG_VAPIC * getpagesize() + NVMX_APIC_TPR);
	*vtpr = park_vtpr(i);

	nvmx_run_to_sync(vcpus[0], NVMX_SYNC_PARKED, &uc);
	if (uc.args[2] != park_vtpr(i) >> 4 || uc.args[3] != 1 || uc.args[4] != 0) {
		snprintf(why, len, "iteration %lu: at the park L2 read TPR 0x%lx (want 0x%x), RDMSR exits %lu/%lu (want 1/0)",
			 i, uc.args[2] << 4, park_vtpr(i), uc.args[3], uc.args[4]);
		ok = false;
	}
	*vtpr = resume_vtpr(i);
	if (fork_close)
		__atomic_store_n(&t->paused, true, __ATOMIC_RELEASE);
	nvmx_run_to_sync(vcpus[0], NVMX_SYNC_RESUMED, &uc);
	if (ok && uc.args[2] != resume_vtpr(i) >> 4) {
		snprintf(why, len, "iteration %lu: resumed L2 read TPR 0x%lx, the host wrote 0x%x",
			 i, uc.args[2] << 4, resume_vtpr(i));
		ok = false;
	}

	/* Destroy the VM with vCPU 0 in L2, the vAPIC page in use. */
	before = __atomic_load_n(&t->toggles, __ATOMIC_ACQUIRE);
	if (fork_close)
		destroy_from_child(vm, vcpus, t);
	else
		kvm_vm_free(vm);
	if (__atomic_load_n(&t->toggles, __ATOMIC_ACQUIRE) != before)
		(*overlap)++;
	return ok;
}

/* The nvmx_widen module's count of widened windows; false if not loaded. */
static bool widen_hits(uint64_t *hits)
{
	FILE *f = fopen(WIDEN_HITS, "r");
	bool ok;

	if (!f)
		return false;
	ok = fscanf(f, "%lu", hits) == 1;
	fclose(f);
	return ok;
}

int main(int argc, char *argv[])
{
	uint64_t n = 20, i, overlap = 0, stale = 0, hits0 = 0, hits1 = 0;
	char why[256] = "", first[256] = "";
	struct nvmx_toggler t = {};
	pthread_t thr;
	uint8_t *buf;
	struct nvmx_klog klog;
	bool widen;
	int opt;

	while ((opt = getopt(argc, argv, "fn:h")) != -1) {
		switch (opt) {
		case 'f':
			fork_close = true;
			break;
		case 'n':
			n = strtoull(optarg, NULL, 0);
			break;
		default:
			printf("usage: %s [-f] [-n iterations]\n", argv[0]);
			return KSFT_FAIL;
		}
	}

	ksft_print_header();
	TEST_REQUIRE(kvm_cpu_has(X86_FEATURE_VMX));
	widen = widen_hits(&hits0);
	ksft_set_plan(widen ? 4 : 3);
	nvmx_klog_start(&klog);
	printf("# %ld CPUs online\n", sysconf(_SC_NPROCESSORS_ONLN));

	buf = mmap(NULL, SLOT_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	TEST_ASSERT(buf != MAP_FAILED, "mmap: %s", strerror(errno));
	madvise(buf, SLOT_SIZE, MADV_NOHUGEPAGE);
	t.page = buf + NVMX_PG_VAPIC * getpagesize();
	TEST_ASSERT(!pthread_create(&thr, NULL, nvmx_toggle_thread, &t), "pthread_create");

	for (i = 0; i < n; i++) {
		if (!one_vm(i, buf, &t, &overlap, first, sizeof(first)) && !stale++)
			snprintf(why, sizeof(why), "%s", first);
	}
	__atomic_store_n(&t.stop, true, __ATOMIC_RELEASE);
	pthread_join(thr, NULL);
	printf("# %lu VMs, %lu protection toggles of the vAPIC page, %lu destructions overlapped a toggle\n",
	       n, t.toggles, overlap);

	if (!stale)
		ksft_test_result_pass("%lu VMs: L2 read the current VTPR at the park and after the resume every time\n",
				      n);
	else
		ksft_test_result_fail("%lu of %lu VMs saw a stale vAPIC page; first: %s\n",
				      stale, n, why);

	if (!nvmx_klog_find(&klog, bad_log, ARRAY_SIZE(bad_log), first, sizeof(first)))
		ksft_test_result_pass("kernel log clean over %lu VM destructions under invalidation\n",
				      n);
	else
		ksft_test_result_fail("bad kernel log line: \"%.200s\"\n", first);

	if (overlap)
		ksft_test_result_pass("%lu of %lu destructions overlapped with invalidations\n",
				      overlap, n);
	else
		ksft_test_result_skip("no destruction overlapped with an invalidation (one emulated CPU?)\n");

	if (widen) {
		TEST_ASSERT(widen_hits(&hits1), "nvmx_widen went away");
		if (hits1 > hits0)
			ksft_test_result_pass("nvmx_widen: %lu vCPU-free windows widened\n",
					      hits1 - hits0);
		else
			ksft_test_result_fail("nvmx_widen is loaded but widened no window (kvm_destroy_vcpus() not probed?)\n");
	}

	munmap(buf, SLOT_SIZE);
	ksft_finished();
}
