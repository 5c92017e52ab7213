/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * nvmx_stats.h: the nvmx_gpc module's statistics, for selftests.
 *
 * The file format and the list of statistics are the module's
 * include/nvmx_gpc_stats.h (scripts/build-selftests.sh copies it beside
 * this file).  Stock KVM and the pass-through provider have no statistics
 * file: nvmx_stats_find() then returns false and the caller reports its
 * statistics checks as skipped.
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

#include "nvmx_gpc_stats.h"

#define NVMX_STATS_DIR		"/sys/kernel/debug/nvmx_gpc"

/* One field per entry of NVMX_VM_STATS, named as its debugfs key. */
struct nvmx_stats {
#define NVMX_STAT_FIELD(NAME, name)	uint64_t name;
	NVMX_VM_STATS(NVMX_STAT_FIELD)
#undef NVMX_STAT_FIELD
};

#define NVMX_STAT_KEY(NAME, name)	{ #name, offsetof(struct nvmx_stats, name) },
static const struct {
	const char *key;
	size_t off;
} nvmx_stat_keys[] = {
	NVMX_VM_STATS(NVMX_STAT_KEY)
};
#undef NVMX_STAT_KEY

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
	size_t i;

	printf("# nvmx_gpc stats %s:", what);
	for (i = 0; i < ARRAY_SIZE(nvmx_stat_keys); i++)
		printf(" %s %lu", nvmx_stat_keys[i].key,
		       *(const uint64_t *)((const char *)st + nvmx_stat_keys[i].off));
	printf("\n");
}

/*
 * Per-vCPU counters: "vcpus <n>" and, for each vCPU index i, one
 * "vcpu<i>_<name>" line per entry of NVMX_VCPU_STATS.  An older module has
 * none of these lines.
 */
#define NVMX_STATS_MAX_VCPUS	8

struct nvmx_vcpu_stats {
	uint64_t vcpus;
#define NVMX_VCPU_STAT_FIELD(NAME, name)	uint64_t name[NVMX_STATS_MAX_VCPUS];
	NVMX_VCPU_STATS(NVMX_VCPU_STAT_FIELD)
#undef NVMX_VCPU_STAT_FIELD
	/* Bit i: every vcpu<i>_ line was present. */
	uint32_t seen;
	bool has_vcpus;
};

#define NVMX_VCPU_STAT_KEY(NAME, name)	{ #name, offsetof(struct nvmx_vcpu_stats, name) },
static const struct {
	const char *key;
	size_t off;
} nvmx_vcpu_stat_keys[] = {
	NVMX_VCPU_STATS(NVMX_VCPU_STAT_KEY)
};
#undef NVMX_VCPU_STAT_KEY

/*
 * Parse the per-vCPU lines of @path.  Returns true if the file has a
 * "vcpus" line and every vcpu<i>_ line for each i below it (and below
 * NVMX_STATS_MAX_VCPUS); false if the module reports no per-vCPU
 * statistics.
 */
static inline bool nvmx_stats_read_vcpus(const char *path, struct nvmx_vcpu_stats *vs)
{
	const size_t nkeys = ARRAY_SIZE(nvmx_vcpu_stat_keys);
	uint32_t found[NVMX_STATS_MAX_VCPUS] = {};
	unsigned long long val;
	char line[128], key[64], what[32];
	unsigned int i, n;
	size_t k;
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
		for (k = 0; k < nkeys; k++) {
			if (strcmp(what, nvmx_vcpu_stat_keys[k].key))
				continue;
			((uint64_t *)((char *)vs + nvmx_vcpu_stat_keys[k].off))[i] = val;
			found[i] |= 1u << k;
		}
	}
	fclose(f);
	for (i = 0; i < NVMX_STATS_MAX_VCPUS; i++)
		if (found[i] == (1u << nkeys) - 1)
			vs->seen |= 1u << i;
	if (!vs->has_vcpus || !vs->vcpus)
		return false;
	n = vs->vcpus < NVMX_STATS_MAX_VCPUS ? vs->vcpus : NVMX_STATS_MAX_VCPUS;
	return (vs->seen & ((1u << n) - 1)) == (1u << n) - 1;
}

/* Print the per-vCPU counters of vCPUs 0..@n-1 (kselftest comment). */
static inline void nvmx_vcpu_stats_print(const char *what, const struct nvmx_vcpu_stats *vs,
					 int n)
{
	size_t k;
	int i;

	printf("# nvmx_gpc stats %s: vcpus %lu", what, vs->vcpus);
	for (i = 0; i < n && i < NVMX_STATS_MAX_VCPUS; i++) {
		printf(" | vcpu%d", i);
		for (k = 0; k < ARRAY_SIZE(nvmx_vcpu_stat_keys); k++)
			printf(" %s %lu", nvmx_vcpu_stat_keys[k].key,
			       ((const uint64_t *)((const char *)vs +
						   nvmx_vcpu_stat_keys[k].off))[i]);
	}
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
