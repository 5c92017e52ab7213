/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * nvmx_stats.h: the nvmx_gpc module's per-VM statistics, for selftests.
 *
 * With the page cache loaded, every VM bound to it has a debugfs file
 * /sys/kernel/debug/nvmx_gpc/<pid>-<n> (<pid>: the VM creator, <n>: a
 * module-wide serial) with one "key value" line per counter.  Stock KVM and
 * a pass-through provider have no such file: nvmx_stats_find() then returns
 * false and the caller reports its statistics checks as skipped.
 */
#ifndef SELFTEST_NVMX_STATS_H
#define SELFTEST_NVMX_STATS_H

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"

#define NVMX_STATS_DIR		"/sys/kernel/debug/nvmx_gpc"

struct nvmx_stats {
	uint64_t hits;
	uint64_t misses;
	uint64_t refreshes;
	uint64_t retries;
	uint64_t inval_notifier;
	uint64_t inval_memslot;
	uint64_t inval_teardown;
	uint64_t memremap;
	uint64_t memunmap;
	uint64_t reloads;
};

#define NVMX_STAT(key)	{ #key, offsetof(struct nvmx_stats, key) }
static const struct {
	const char *key;
	size_t off;
} nvmx_stat_keys[] = {
	NVMX_STAT(hits), NVMX_STAT(misses), NVMX_STAT(refreshes),
	NVMX_STAT(retries), NVMX_STAT(inval_notifier), NVMX_STAT(inval_memslot),
	NVMX_STAT(inval_teardown), NVMX_STAT(memremap), NVMX_STAT(memunmap),
	NVMX_STAT(reloads),
};

/*
 * Find the statistics file of the newest VM this process created (largest
 * <n> among "<getpid()>-<n>").  Call it after creating the VM and before
 * freeing it.  Returns false if there is none.
 */
static inline bool nvmx_stats_find(char *path, size_t len)
{
	long best = -1, n;
	struct dirent *d;
	char prefix[32];
	char *end;
	DIR *dir;

	dir = opendir(NVMX_STATS_DIR);
	if (!dir)
		return false;
	snprintf(prefix, sizeof(prefix), "%d-", getpid());
	while ((d = readdir(dir))) {
		if (strncmp(d->d_name, prefix, strlen(prefix)))
			continue;
		n = strtol(d->d_name + strlen(prefix), &end, 10);
		if (*end || n < 0 || n <= best)
			continue;
		best = n;
		snprintf(path, len, "%s/%s", NVMX_STATS_DIR, d->d_name);
	}
	closedir(dir);
	return best >= 0;
}

/* Parse @path; every key must be present, unknown keys are ignored. */
static inline void nvmx_stats_read(const char *path, struct nvmx_stats *st)
{
	unsigned long long val;
	unsigned int seen = 0;
	char line[128], key[64];
	size_t i;
	FILE *f;

	f = fopen(path, "r");
	TEST_ASSERT(f, "cannot open %s: %s", path, strerror(errno));
	memset(st, 0, sizeof(*st));
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%63s %llu", key, &val) != 2)
			continue;
		for (i = 0; i < ARRAY_SIZE(nvmx_stat_keys); i++) {
			if (strcmp(key, nvmx_stat_keys[i].key))
				continue;
			*(uint64_t *)((char *)st + nvmx_stat_keys[i].off) = val;
			seen |= 1u << i;
		}
	}
	fclose(f);
	TEST_ASSERT(seen == (1u << ARRAY_SIZE(nvmx_stat_keys)) - 1,
		    "%s lacks counters (found mask 0x%x)", path, seen);
}

/* Print all counters on one line (kselftest comment). */
static inline void nvmx_stats_print(const char *what, const struct nvmx_stats *st)
{
	printf("# nvmx_gpc stats %s: hits %lu misses %lu refreshes %lu retries %lu "
	       "inval_notifier %lu inval_memslot %lu inval_teardown %lu "
	       "memremap %lu memunmap %lu reloads %lu\n", what,
	       st->hits, st->misses, st->refreshes, st->retries,
	       st->inval_notifier, st->inval_memslot, st->inval_teardown,
	       st->memremap, st->memunmap, st->reloads);
}

/*
 * Per-vCPU counters of the fixed module: "vcpus <n>" and, for each vCPU
 * index i, "vcpu<i>_kicks", "vcpu<i>_refreshes" and "vcpu<i>_hits".  An
 * older module has none of these lines.
 */
#define NVMX_STATS_MAX_VCPUS	8

struct nvmx_vcpu_stats {
	uint64_t vcpus;
	uint64_t kicks[NVMX_STATS_MAX_VCPUS];
	uint64_t refreshes[NVMX_STATS_MAX_VCPUS];
	uint64_t hits[NVMX_STATS_MAX_VCPUS];
	/* Bit i: vcpu<i>_kicks was present. */
	uint32_t seen;
	bool has_vcpus;
};

/*
 * Parse the per-vCPU lines of @path.  Returns true if the file has a
 * "vcpus" line and a vcpu<i>_kicks line for every i below it (and below
 * NVMX_STATS_MAX_VCPUS); false if the module reports no per-vCPU
 * statistics.
 */
static inline bool nvmx_stats_read_vcpus(const char *path, struct nvmx_vcpu_stats *vs)
{
	unsigned long long val;
	char line[128], key[64], what[32];
	unsigned int i, n;
	FILE *f;

	f = fopen(path, "r");
	TEST_ASSERT(f, "cannot open %s: %s", path, strerror(errno));
	memset(vs, 0, sizeof(*vs));
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%63s %llu", key, &val) != 2)
			continue;
		if (!strcmp(key, "vcpus")) {
			vs->vcpus = val;
			vs->has_vcpus = true;
			continue;
		}
		if (sscanf(key, "vcpu%u_%31s", &i, what) != 2 || i >= NVMX_STATS_MAX_VCPUS)
			continue;
		if (!strcmp(what, "kicks")) {
			vs->kicks[i] = val;
			vs->seen |= 1u << i;
		} else if (!strcmp(what, "refreshes")) {
			vs->refreshes[i] = val;
		} else if (!strcmp(what, "hits")) {
			vs->hits[i] = val;
		}
	}
	fclose(f);
	if (!vs->has_vcpus || !vs->vcpus)
		return false;
	n = vs->vcpus < NVMX_STATS_MAX_VCPUS ? vs->vcpus : NVMX_STATS_MAX_VCPUS;
	return (vs->seen & ((1u << n) - 1)) == (1u << n) - 1;
}

/* Print the per-vCPU counters of vCPUs 0..@n-1 (kselftest comment). */
static inline void nvmx_vcpu_stats_print(const char *what, const struct nvmx_vcpu_stats *vs,
					 int n)
{
	int i;

	printf("# nvmx_gpc stats %s: vcpus %lu", what, vs->vcpus);
	for (i = 0; i < n && i < NVMX_STATS_MAX_VCPUS; i++)
		printf(" | vcpu%d kicks %lu refreshes %lu hits %lu", i, vs->kicks[i],
		       vs->refreshes[i], vs->hits[i]);
	printf("\n");
}

/*
 * One "key value" line of @path, e.g. "vcpus" or "vcpu0_kicks" (lines the
 * old module does not have).  Returns false if the file has no such line.
 */
static inline bool nvmx_stats_get_key(const char *path, const char *want, uint64_t *val)
{
	unsigned long long v;
	char line[128], key[64];
	bool found = false;
	FILE *f;

	f = fopen(path, "r");
	TEST_ASSERT(f, "cannot open %s: %s", path, strerror(errno));
	while (!found && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%63s %llu", key, &v) == 2 && !strcmp(key, want)) {
			*val = v;
			found = true;
		}
	}
	fclose(f);
	return found;
}

#endif /* SELFTEST_NVMX_STATS_H */
