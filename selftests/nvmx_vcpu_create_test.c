// SPDX-License-Identifier: GPL-2.0-only
/*
 * nvmx_vcpu_create_test: a failed KVM_CREATE_VCPU must leave nothing
 * behind in the page cache's per-VM state.
 *
 * KVM runs kvm_arch_vcpu_create() (and so the provider's vcpu_init) before
 * it checks for a duplicate vCPU id, so KVM_CREATE_VCPU with an id already
 * in use creates and destroys a whole vCPU.  The test parks L2 on vCPU 0 of
 * a nested VM (selftests/nvmx_nested.h: the vAPIC page is mapped), then
 *   - calls KVM_CREATE_VCPU with id 0 -n times (default 2000): each must
 *     fail with EEXIST;
 *   - creates vCPUs 1 and 2, which must succeed.
 * With the nvmx_gpc statistics, the "vcpus" line must equal the number of
 * live vCPUs: 1 after the park, 1 after the failed creations, 3 at the end;
 * a statistics file without that line fails.
 *
 * It also measures the cost of one invalidation of the vAPIC page: the
 * median TSC ticks of an mprotect(PROT_READ) + mprotect(PROT_READ |
 * PROT_WRITE) pair on it, before and after the failed creations.  Every
 * notifier invalidation walks the module's per-VM vCPU list, so a list that
 * grows with each failure makes it slower; the check is on the ratio
 * (after / before must stay below -r, default 3), which does not depend on
 * the emulator's speed.
 *
 * Expected on stock KVM: EEXIST and the ratio pass, the vcpus check SKIPs
 * (no statistics).  The old nvmx_gpc module (4e10b0e) has no "vcpus" line
 * (FAIL) and keeps one list entry per failed creation, which makes each
 * invalidation slower by a factor that grows with -n.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "nvmx_nested.h"
#include "nvmx_stats.h"

#include "kselftest.h"

#define NR_SAMPLES	15
#define NR_NEW_VCPUS	2

static void l2_guest_code(void)
{
	nvmx_l2_parked_sequence();
	nvmx_l2_done();
}

NVMX_DEFINE_L1_GUEST_CODE(l2_guest_code)

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Median TSC ticks of one mprotect() pair on @page. */
static uint64_t inval_cost(void *page)
{
	uint64_t t[NR_SAMPLES], t0;
	int i;

	for (i = 0; i < NR_SAMPLES; i++) {
		t0 = rdtsc();
		TEST_ASSERT(!mprotect(page, getpagesize(), PROT_READ), "mprotect: %s",
			    strerror(errno));
		TEST_ASSERT(!mprotect(page, getpagesize(), PROT_READ | PROT_WRITE),
			    "mprotect: %s", strerror(errno));
		t[i] = rdtsc() - t0;
	}
	qsort(t, NR_SAMPLES, sizeof(t[0]), cmp_u64);
	return t[NR_SAMPLES / 2];
}

/* The "vcpus" line, or -1 if there is none. */
static int64_t stats_vcpus(const char *path)
{
	uint64_t v;

	return nvmx_stats_get_key(path, "vcpus", &v) ? (int64_t)v : -1;
}

int main(int argc, char *argv[])
{
	uint64_t n = 2000, i, wrong = 0, first_errno = 0, cost0, cost1, t0, t1;
	int64_t vcpus_park = -1, vcpus_fail = -1, vcpus_end = -1;
	double max_ratio = 3.0, ratio;
	struct nvmx_stats st0;
	struct kvm_vcpu *vcpu;
	char path[PATH_MAX];
	struct kvm_vm *vm;
	struct ucall uc;
	void *vapic;
	bool stats;
	int opt, r;

	while ((opt = getopt(argc, argv, "n:r:h")) != -1) {
		switch (opt) {
		case 'n':
			n = strtoull(optarg, NULL, 0);
			break;
		case 'r':
			max_ratio = strtod(optarg, NULL);
			break;
		default:
			printf("usage: %s [-n failed creations] [-r max cost ratio]\n", argv[0]);
			return KSFT_FAIL;
		}
	}

	ksft_print_header();
	TEST_REQUIRE(kvm_cpu_has(X86_FEATURE_VMX));
	ksft_set_plan(3);

	nvmx_create_parked_vm(&vm, &vcpu, l1_guest_code, &uc, path, sizeof(path),
			      &stats, &st0);
	vapic = nvmx_page_hva(vm, NVMX_PG_VAPIC);
	if (stats)
		vcpus_park = stats_vcpus(path);
	cost0 = inval_cost(vapic);

	t0 = rdtsc();
	for (i = 0; i < n; i++) {
		r = ioctl(vm->fd, KVM_CREATE_VCPU, 0);
		if (r >= 0) {
			close(r);
			TEST_FAIL("KVM_CREATE_VCPU with the used id 0 succeeded");
		}
		if (errno != EEXIST && !wrong++)
			first_errno = errno;
	}
	t1 = rdtsc();
	if (stats)
		vcpus_fail = stats_vcpus(path);
	cost1 = inval_cost(vapic);

	for (i = 1; i <= NR_NEW_VCPUS; i++)
		vm_vcpu_add(vm, i, l1_guest_code);
	if (stats)
		vcpus_end = stats_vcpus(path);

	printf("# %lu failed KVM_CREATE_VCPU: %lu TSC ticks each\n", n, n ? (t1 - t0) / n : 0);
	if (!wrong)
		ksft_test_result_pass("%lu KVM_CREATE_VCPU with the used id 0 failed with EEXIST\n", n);
	else
		ksft_test_result_fail("%lu of %lu KVM_CREATE_VCPU with id 0 failed with another error than EEXIST (first: %s)\n",
				      wrong, n, strerror(first_errno));

	if (!stats) {
		ksft_test_result_skip("vcpus: no nvmx_gpc statistics: stock KVM or pass-through provider\n");
	} else if (vcpus_park == 1 && vcpus_fail == 1 && vcpus_end == 1 + NR_NEW_VCPUS) {
		ksft_test_result_pass("vcpus: %ld after the park, %ld after %lu failed creations, %ld with %d more vCPUs\n",
				      vcpus_park, vcpus_fail, n, vcpus_end, NR_NEW_VCPUS);
	} else if (vcpus_park < 0) {
		ksft_test_result_fail("vcpus: %s has no \"vcpus\" line\n", path);
	} else {
		ksft_test_result_fail("vcpus: %ld after the park (want 1), %ld after %lu failed creations (want 1), %ld with %d more vCPUs (want %d)\n",
				      vcpus_park, vcpus_fail, n, vcpus_end, NR_NEW_VCPUS,
				      1 + NR_NEW_VCPUS);
	}

	ratio = cost0 ? (double)cost1 / cost0 : 0;
	printf("# invalidation of the vAPIC page (mprotect pair, median of %d): %lu TSC ticks before, %lu after %lu failed creations (x%.2f)\n",
	       NR_SAMPLES, cost0, cost1, n, ratio);
	if (ratio < max_ratio)
		ksft_test_result_pass("invalidation cost x%.2f after %lu failed creations (%lu -> %lu TSC ticks)\n",
				      ratio, n, cost0, cost1);
	else
		ksft_test_result_fail("invalidation cost grew x%.2f after %lu failed creations (%lu -> %lu TSC ticks, limit x%.1f)\n",
				      ratio, n, cost0, cost1, max_ratio);

	kvm_vm_free(vm);
	ksft_finished();
}
