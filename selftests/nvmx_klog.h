/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * nvmx_klog.h: the kernel log since a test started (/dev/kmsg), for the
 * nvmx-gpc selftests that must see no notifier failure, warning or KASAN
 * report while they run.  nvmx_klog_start() skips the test if /dev/kmsg
 * cannot be read.
 */
#ifndef SELFTEST_NVMX_KLOG_H
#define SELFTEST_NVMX_KLOG_H

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"
#include "kselftest.h"

struct nvmx_klog {
	int fd;
	char *buf;
	size_t len, cap;
};

static inline void nvmx_klog_start(struct nvmx_klog *k)
{
	memset(k, 0, sizeof(*k));
	k->fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
	if (k->fd < 0)
		ksft_exit_skip("cannot open /dev/kmsg: %s\n", strerror(errno));
	TEST_ASSERT(lseek(k->fd, 0, SEEK_END) >= 0, "lseek /dev/kmsg: %s", strerror(errno));
}

/* Append the messages logged since the last call, one per line. */
static inline void nvmx_klog_update(struct nvmx_klog *k)
{
	char rec[2048], *msg, *nl;
	ssize_t n;
	size_t l;

	for (;;) {
		n = read(k->fd, rec, sizeof(rec) - 1);
		if (n < 0 && errno == EPIPE)
			continue;	/* records overwritten; go on with the next */
		if (n <= 0)
			break;
		rec[n] = 0;
		msg = strchr(rec, ';');
		msg = msg ? msg + 1 : rec;
		nl = strchr(msg, '\n');
		if (nl)
			*nl = 0;
		l = strlen(msg);
		if (k->len + l + 2 > k->cap) {
			k->cap = (k->len + l + 2) * 2;
			k->buf = realloc(k->buf, k->cap);
			TEST_ASSERT(k->buf, "realloc");
		}
		memcpy(k->buf + k->len, msg, l);
		k->len += l;
		k->buf[k->len++] = '\n';
		k->buf[k->len] = 0;
	}
}

/* The first line of @text holding one of @pats, copied to @line; or false. */
static inline bool nvmx_find_line(const char *text, const char *const *pats, size_t n,
		      char *line, size_t len)
{
	const char *p, *start, *end;
	size_t i;

	for (i = 0; text && i < n; i++) {
		p = strstr(text, pats[i]);
		if (!p)
			continue;
		for (start = p; start > text && start[-1] != '\n'; start--)
			;
		end = strchrnul(p, '\n');
		snprintf(line, len, "%.*s", (int)(end - start), start);
		return true;
	}
	return false;
}

/*
 * Read what was logged since the last call; true if a line holds one of
 * @pats, the first such line copied to @line.
 */
static inline bool nvmx_klog_find(struct nvmx_klog *k, const char *const *pats,
				  size_t n, char *line, size_t len)
{
	nvmx_klog_update(k);
	return nvmx_find_line(k->buf, pats, n, line, len);
}

#endif /* SELFTEST_NVMX_KLOG_H */
