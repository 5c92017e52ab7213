// SPDX-License-Identifier: GPL-2.0-only
/*
 * nvmx_trace_test: the nvmx_gpc trace events say what the page cache did.
 *
 * With every event of the nvmx_gpc trace system enabled (tracefs), L2 is
 * parked with the MSR bitmap, APIC-access and virtual-APIC pages mapped
 * (nvmx_create_parked_vm()).  The host then MADV_DONTNEEDs the
 * virtual-APIC page alone, writes VTPR 0x90 into a new page
 * (nvmx_zap_page(), which makes sure the pfn changes), and lets L2
 * run the rest of nvmx_l2_parked_sequence().  The events in the trace
 * buffer must tell that story, for vCPU 0:
 *   1. the first nested VM-Enter misses and refreshes each of the three
 *      pages;
 *   2. the later entries before the park hit;
 *   3. an invalidation by the mmu_notifier covers the virtual-APIC page's
 *      HVA and kicks a vCPU;
 *   4. the kick names vCPU 0 and the virtual-APIC page's gfn;
 *   5. after the kick, the vCPU reloads that page: a reload, then a miss
 *      because the cache is invalid, then a refresh at the page's new pfn
 *      (from /proc/self/pagemap).
 * And L2 must read the new VTPR without an exit to L1, so the events
 * describe a cache that worked.
 *
 * SKIP without the nvmx_gpc statistics (stock KVM, the pass-through
 * provider) or without its trace events (a kernel without
 * CONFIG_TRACING).  A cache that ignores invalidations (break_invalidation)
 * fails 3 to 5.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "nvmx_nested.h"
#include "nvmx_stats.h"

#include "kselftest.h"

static void l2_guest_code(void)
{
	nvmx_l2_parked_sequence();
	nvmx_l2_done();
}

NVMX_DEFINE_L1_GUEST_CODE(l2_guest_code)

#define NR_RESULTS	6

static const char *const tracefs_dirs[] = {
	"/sys/kernel/tracing",
	"/sys/kernel/debug/tracing",
};

static const char *tracefs;

static void tracefs_write(const char *file, const char *val)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", tracefs, file);
	fd = open(path, O_WRONLY | O_TRUNC);
	TEST_ASSERT(fd >= 0, "open %s: %s", path, strerror(errno));
	TEST_ASSERT(write(fd, val, strlen(val)) == (ssize_t)strlen(val), "write %s: %s", path,
		    strerror(errno));
	close(fd);
}

/* The tracefs directory with the nvmx_gpc events, or NULL. */
static const char *find_events(void)
{
	char path[PATH_MAX];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(tracefs_dirs); i++) {
		snprintf(path, sizeof(path), "%s/events/nvmx_gpc/enable", tracefs_dirs[i]);
		if (!access(path, W_OK))
			return tracefs_dirs[i];
	}
	return NULL;
}

/* One event of the trace buffer, the fields this test looks at. */
struct event {
	char name[16];
	unsigned int vcpu;
	char page[16];
	unsigned long long gfn, pfn, start, end;
	char reason[24], cause[16];
	unsigned int kicks;
};

#define MAX_EVENTS	4096

/* On the heap: the test's static data is loaded into the guest too. */
static struct event *events;
static int nr_events;

/*
 * Parse one line of the "trace" file; false if it is no nvmx_gpc event.  A
 * line that names an event but does not parse fails the test.
 */
static bool parse_event(const char *line, struct event *e)
{
	const char *p = strstr(line, " nvmx_gpc_"), *q;
	unsigned int caches;

	if (!p)
		return false;
	memset(e, 0, sizeof(*e));
	TEST_ASSERT(sscanf(p, " nvmx_gpc_%15[a-z]:", e->name) == 1 && (p = strchr(p, ':')),
		    "unparsable nvmx_gpc event: %s", line);
	p++;
	if (!strcmp(e->name, "invalidate")) {
		TEST_ASSERT(sscanf(p, " %15s 0x%llx-0x%llx caches %u kicks %u", e->cause,
				   &e->start, &e->end, &caches, &e->kicks) == 5,
			    "unparsable invalidate event: %s", line);
		return true;
	}
	TEST_ASSERT(sscanf(p, " vcpu %u %15s gfn 0x%llx", &e->vcpu, e->page, &e->gfn) == 3,
		    "unparsable %s event: %s", e->name, line);
	if (!strcmp(e->name, "refresh"))
		TEST_ASSERT((q = strstr(p, " pfn ")) && sscanf(q, " pfn 0x%llx", &e->pfn) == 1,
			    "refresh event without a pfn: %s", line);
	if (!strcmp(e->name, "miss"))
		TEST_ASSERT((q = strstr(p, " reason ")) &&
			    sscanf(q, " reason %23s", e->reason) == 1,
			    "miss event without a reason: %s", line);
	return true;
}

static void read_trace(void)
{
	char path[PATH_MAX], line[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/trace", tracefs);
	f = fopen(path, "r");
	TEST_ASSERT(f, "open %s: %s", path, strerror(errno));
	events = calloc(MAX_EVENTS, sizeof(*events));
	TEST_ASSERT(events, "calloc");
	nr_events = 0;
	while (fgets(line, sizeof(line), f) && nr_events < MAX_EVENTS) {
		if (line[0] != '#' && parse_event(line, &events[nr_events])) {
			printf("# %s", line);
			nr_events++;
		}
	}
	fclose(f);
	printf("# %d nvmx_gpc events in the trace buffer\n", nr_events);
}

/*
 * The index of the first event at or after @from named @name (for vCPU 0
 * and @page, if @page is not NULL) with @gfn (if not 0), or -1.
 */
static int find(int from, const char *name, const char *page, uint64_t gfn)
{
	int i;

	for (i = from < 0 ? 0 : from; i < nr_events; i++) {
		if (strcmp(events[i].name, name))
			continue;
		if (page && (events[i].vcpu || strcmp(events[i].page, page)))
			continue;
		if (gfn && events[i].gfn != gfn)
			continue;
		return i;
	}
	return -1;
}

int main(int argc, char *argv[])
{
	uint64_t vapic_gfn, old_pfn, new_pfn;
	int first, hit, inval, kick, reload, miss, refresh;
	struct ucall uc, res, next;
	struct nvmx_stats st0;
	struct kvm_vcpu *vcpu;
	char path[PATH_MAX];
	struct kvm_vm *vm;
	uint8_t *vapic;
	bool stats;

	ksft_print_header();
	TEST_REQUIRE(kvm_cpu_has(X86_FEATURE_VMX));
	ksft_set_plan(NR_RESULTS);

	tracefs = find_events();
	if (tracefs) {
		tracefs_write("events/nvmx_gpc/enable", "1");
		tracefs_write("trace", "");
	}
	nvmx_create_parked_vm(&vm, &vcpu, l1_guest_code, &uc, path, sizeof(path), &stats,
			      &st0);
	if (!stats || !tracefs) {
		if (tracefs)
			tracefs_write("events/nvmx_gpc/enable", "0");
		kvm_vm_free(vm);
		ksft_exit_skip("%s\n", !stats ?
			       "no nvmx_gpc statistics: stock KVM or pass-through provider" :
			       "no nvmx_gpc trace events (kernel without CONFIG_TRACING?)");
	}

	vapic = nvmx_page_hva(vm, NVMX_PG_VAPIC);
	vapic_gfn = (nvmx_host_pages_gpa + NVMX_PG_VAPIC * getpagesize()) >> 12;
	new_pfn = nvmx_zap_page(vapic, NVMX_APIC_TPR, NVMX_NEW_VTPR, &old_pfn);
	printf("# virtual-APIC page: gfn 0x%lx hva %p pfn 0x%lx -> 0x%lx\n", vapic_gfn, vapic,
	       old_pfn, new_pfn);

	nvmx_run_to_sync(vcpu, NVMX_SYNC_RESUMED, &res);
	nvmx_run_to_sync(vcpu, NVMX_SYNC_NEXT_ENTRY, &next);
	nvmx_run_to_done(vcpu);
	tracefs_write("events/nvmx_gpc/enable", "0");
	read_trace();

	first = find(0, "refresh", "virtual_apic", vapic_gfn);
	miss = find(0, "miss", "virtual_apic", vapic_gfn);
	ksft_test_result(first >= 0 && miss >= 0 && miss < first && events[first].pfn == old_pfn &&
			 find(0, "refresh", "msr_bitmap", 0) >= 0 &&
			 find(0, "refresh", "apic_access", 0) >= 0,
			 "the first nested VM-Enter missed and refreshed the three pages (virtual-APIC at pfn 0x%llx)\n",
			 first >= 0 ? events[first].pfn : 0ull);

	hit = find(first, "hit", "virtual_apic", vapic_gfn);
	ksft_test_result(hit > first && find(first, "hit", "apic_access", 0) > first,
			 "the entries after the first hit\n");

	for (inval = find(first, "invalidate", NULL, 0); inval >= 0;
	     inval = find(inval + 1, "invalidate", NULL, 0)) {
		if (!strcmp(events[inval].cause, "mmu_notifier") &&
		    events[inval].start <= (uintptr_t)vapic && (uintptr_t)vapic < events[inval].end &&
		    events[inval].kicks)
			break;
	}
	ksft_test_result(inval > first,
			 "an mmu_notifier invalidation covered the virtual-APIC page and kicked\n");

	kick = find(first, "kick", "virtual_apic", vapic_gfn);
	ksft_test_result(kick > first, "the kick named vCPU 0 and the virtual-APIC page\n");

	reload = find(kick, "reload", "virtual_apic", vapic_gfn);
	miss = find(reload, "miss", "virtual_apic", vapic_gfn);
	refresh = find(miss, "refresh", "virtual_apic", vapic_gfn);
	ksft_test_result(kick >= 0 && reload > kick && miss > reload &&
			 !strcmp(events[miss].reason, "invalid") && refresh > miss &&
			 events[refresh].pfn == new_pfn && new_pfn != old_pfn,
			 "then a reload, a miss (invalid) and a refresh at the new pfn 0x%lx\n",
			 new_pfn);

	ksft_test_result(res.args[2] == NVMX_NEW_VTPR >> 4,
			 "L2 read the new TPR 0x%x without an exit to L1 (read 0x%lx)\n",
			 NVMX_NEW_VTPR, res.args[2] << 4);

	kvm_vm_free(vm);
	free(events);
	ksft_finished();
}
