// SPDX-License-Identifier: GPL-2.0-only
/*
 * nvmx_oom_test: the non-blockable mmu_notifier path.  A VMM whose vCPU is
 * parked in L2 (TPR shadow and APIC-access page mapped, see
 * selftests/nvmx_nested.h) is killed, and its memory is reaped while its mm
 * still exists, which is when the mm core calls the notifiers with a
 * non-blockable range (process_mrelease() or the OOM reaper).
 *
 * A forked child is the VMM.  The parent keeps the child's mm alive past
 * the SIGKILL with ptrace: it seizes the child with PTRACE_O_TRACEEXIT, so
 * the killed child stops at PTRACE_EVENT_EXIT in do_exit(), before
 * exit_mm() (6.12's get_signal() dequeues the SIGKILL of a group exit
 * before do_group_exit(), so ptrace_stop() sees no fatal signal pending and
 * the stop happens).  Modes (-m):
 *   mrelease  the child also touches a 16 MiB ballast buffer; the parent
 *             kills it, waits for the exit stop and calls
 *             process_mrelease(pidfd_open(child)), which must return 0; the
 *             child's RssAnon (/proc/<pid>/status, still readable in the
 *             stop) must drop by at least half of the ballast: the reap
 *             really happened.
 *   memcg     the child runs in a cgroup v2 memory cgroup (cgroup2 is
 *             mounted on /sys/fs/cgroup if it is not yet) whose memory.max
 *             is set, after the park, to its memory.current plus 4 MiB; the
 *             child then allocates until the memcg OOM killer kills it.  It
 *             must die by SIGKILL, with memory.events counting an oom_kill,
 *             and the OOM reaper (2 s after the kill) must log "oom_reaper:
 *             reaped process <pid>".
 * In both modes the kernel log since the test started must contain none of
 * "callback failed", "WARNING", "unable to reap", "unbalanced
 * invalidate_range_end", "BUG:".  The memcg OOM report always includes a
 * stack dump ("Call Trace"), which the test bed's end-of-phase kernel log
 * check rejects; so when that check would otherwise pass (no suspicious
 * line since the log was last cleared), the memcg mode clears the kernel
 * log after its own check and says so.
 *
 * Expected on stock KVM: both modes pass (KVM's own notifier never fails).
 * The old nvmx_gpc module (4e10b0e) returns -EAGAIN from its non-blockable
 * invalidate_range_start while the vCPU has the vAPIC page in use, although
 * it also has invalidate_range_end: the mm core prints "callback failed
 * with -11 in non-blockable context" and WARNs, process_mrelease() returns
 * EAGAIN, and the OOM reaper gives up ("unable to reap").
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/klog.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "nvmx_klog.h"
#include "nvmx_nested.h"
#include "nvmx_stats.h"

#include "kselftest.h"

#ifndef __NR_pidfd_open
#define __NR_pidfd_open		434
#endif
#ifndef __NR_process_mrelease
#define __NR_process_mrelease	448
#endif
#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC	0x63677270
#endif

#define CGROUP_ROOT		"/sys/fs/cgroup"
#define BALLAST_SIZE		(16ul << 20)
#define MEMCG_HEADROOM		(4ul << 20)
#define ALLOC_CHUNK		(1ul << 20)
#define ALLOC_MAX		(512ul << 20)
/* Guest seconds the parent waits for the OOM reaper (it starts after 2 s). */
#define REAPER_WAIT_MS		8000

enum mode { MODE_MRELEASE, MODE_MEMCG, NR_MODES };

static const char *const mode_names[] = {
	[MODE_MRELEASE] = "mrelease",
	[MODE_MEMCG] = "memcg",
};

/* Lines that must not appear in the kernel log while the test runs. */
static const char *const bad_log[] = {
	"callback failed", "WARNING", "unable to reap",
	"unbalanced invalidate_range_end", "BUG:", "general protection", "Oops",
	"UBSAN", "circular locking",
};

/* What the test bed's end-of-phase check rejects (testbed/init). */
static const char *const harness_log[] = {
	"WARNING:", "BUG:", "Oops", "general protection", "Call Trace", "UBSAN",
	"circular locking",
};

static void l2_guest_code(void)
{
	nvmx_l2_parked_sequence();
	nvmx_l2_done();
}

NVMX_DEFINE_L1_GUEST_CODE(l2_guest_code)

/* --- The child VMM. --- */

enum {
	MSG_GO = 'g',		/* parent -> child: start (after the cgroup move) */
	MSG_ALLOC = 'a',	/* parent -> child: allocate until killed */
	MSG_READY_STATS = 'S',	/* child -> parent: parked, nvmx_gpc statistics */
	MSG_READY = 'R',	/* child -> parent: parked, no statistics */
};

static void touch(void *p, size_t size)
{
	size_t off;

	for (off = 0; off < size; off += getpagesize())
		((volatile char *)p)[off] = 1;
}

static void __noreturn child_main(enum mode mode, int rfd, int wfd)
{
	struct nvmx_stats st0;
	struct kvm_vcpu *vcpu;
	struct kvm_vm *vm;
	char path[PATH_MAX], msg;
	struct ucall uc;
	size_t total;
	bool stats;
	void *p;

	TEST_ASSERT(read(rfd, &msg, 1) == 1 && msg == MSG_GO, "child: no start message");
	nvmx_create_parked_vm(&vm, &vcpu, l1_guest_code, &uc, path, sizeof(path),
			      &stats, &st0);
	if (mode == MODE_MRELEASE) {
		p = mmap(NULL, BALLAST_SIZE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		TEST_ASSERT(p != MAP_FAILED, "mmap: %s", strerror(errno));
		touch(p, BALLAST_SIZE);
	}
	msg = stats ? MSG_READY_STATS : MSG_READY;
	TEST_ASSERT(write(wfd, &msg, 1) == 1, "child: write: %s", strerror(errno));

	if (mode == MODE_MRELEASE) {
		for (;;)
			pause();
	}
	TEST_ASSERT(read(rfd, &msg, 1) == 1 && msg == MSG_ALLOC, "child: no alloc message");
	for (total = 0; total < ALLOC_MAX; total += ALLOC_CHUNK) {
		p = mmap(NULL, ALLOC_CHUNK, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			break;
		touch(p, ALLOC_CHUNK);
	}
	/* Not OOM-killed: the parent reports exit status 3. */
	_exit(3);
}

/* --- Parent helpers. --- */

static long status_kb(pid_t pid, const char *key)
{
	char path[64], line[256];
	long kb = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, key, strlen(key)) && line[strlen(key)] == ':')
			kb = strtol(line + strlen(key) + 1, NULL, 10);
	}
	fclose(f);
	return kb;
}

/*
 * Wait for the traced child to stop at PTRACE_EVENT_EXIT (true), passing on
 * any other stop; false, with *@status, if it ended without that stop.
 */
static bool wait_exit_stop(pid_t pid, int *status)
{
	for (;;) {
		TEST_ASSERT(waitpid(pid, status, __WALL) == pid, "waitpid: %s", strerror(errno));
		if (!WIFSTOPPED(*status))
			return false;
		if (*status >> 8 == (SIGTRAP | (PTRACE_EVENT_EXIT << 8)))
			return true;
		/* A signal-delivery or group stop: let it go on. */
		TEST_ASSERT(!ptrace(PTRACE_CONT, pid, 0, WSTOPSIG(*status)),
			    "PTRACE_CONT: %s", strerror(errno));
	}
}

/* Let the exit-stopped child finish; returns its final wait status. */
static int finish_child(pid_t pid)
{
	int status;

	TEST_ASSERT(!ptrace(PTRACE_CONT, pid, 0, 0), "PTRACE_CONT: %s", strerror(errno));
	for (;;) {
		TEST_ASSERT(waitpid(pid, &status, __WALL) == pid, "waitpid: %s",
			    strerror(errno));
		if (!WIFSTOPPED(status))
			return status;
		ptrace(PTRACE_CONT, pid, 0, 0);
	}
}

static void describe_status(int status, char *buf, size_t len)
{
	if (WIFEXITED(status))
		snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(status),
			 strsignal(WTERMSIG(status)));
	else
		snprintf(buf, len, "wait status 0x%x", status);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

static void write_file(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY);

	TEST_ASSERT(fd >= 0, "open %s: %s", path, strerror(errno));
	TEST_ASSERT(write(fd, val, strlen(val)) == (ssize_t)strlen(val),
		    "write '%s' to %s: %s", val, path, strerror(errno));
	close(fd);
}

static bool read_file(const char *path, char *buf, size_t len)
{
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY);
	if (fd < 0)
		return false;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return false;
	buf[n] = 0;
	return true;
}

static uint64_t memcg_key(const char *file, const char *key)
{
	char buf[4096], *p;

	TEST_ASSERT(read_file(file, buf, sizeof(buf)), "read %s: %s", file, strerror(errno));
	if (!key)
		return strtoull(buf, NULL, 10);
	for (p = buf; p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (!strncmp(p, key, strlen(key)) && p[strlen(key)] == ' ')
			return strtoull(p + strlen(key) + 1, NULL, 10);
	}
	return 0;
}

/* Mount cgroup2 if needed and make a memory cgroup; false: skip (@why). */
static bool memcg_setup(char *cg, size_t len, bool *mounted, char *why, size_t wlen)
{
	char buf[512];
	struct statfs sfs;

	*mounted = false;
	if (statfs(CGROUP_ROOT, &sfs) || sfs.f_type != CGROUP2_SUPER_MAGIC) {
		if (mount("none", CGROUP_ROOT, "cgroup2", 0, NULL)) {
			snprintf(why, wlen, "cannot mount cgroup2 on %s: %s", CGROUP_ROOT,
				 strerror(errno));
			return false;
		}
		*mounted = true;
	}
	if (!read_file(CGROUP_ROOT "/cgroup.controllers", buf, sizeof(buf)) ||
	    !strstr(buf, "memory")) {
		snprintf(why, wlen, "no memory controller in %s/cgroup.controllers (CONFIG_MEMCG)",
			 CGROUP_ROOT);
		return false;
	}
	write_file(CGROUP_ROOT "/cgroup.subtree_control", "+memory");
	snprintf(cg, len, CGROUP_ROOT "/nvmx_oom_test.%d", getpid());
	TEST_ASSERT(!mkdir(cg, 0755), "mkdir %s: %s", cg, strerror(errno));
	return true;
}

/*
 * The memcg OOM report has a stack dump that the test bed's end-of-phase
 * check rejects.  Clear the log if nothing else there would fail it: the
 * part before the test (still in the buffer since the last clear) holds
 * none of its patterns, and our own window passed the stricter check.
 */
static void clear_oom_report(const char *before)
{
	char line[256];

	if (nvmx_find_line(before, harness_log, ARRAY_SIZE(harness_log), line, sizeof(line))) {
		printf("# not clearing the kernel log: it had \"%s\" before the test\n", line);
		return;
	}
	if (klogctl(5 /* SYSLOG_ACTION_CLEAR */, NULL, 0) < 0)
		printf("# cannot clear the kernel log: %s\n", strerror(errno));
	else
		printf("# cleared the kernel log: the memcg OOM report's stack dump (\"Call Trace\") is expected\n");
}

static char *klog_read_all(void)
{
	int size = klogctl(10 /* SYSLOG_ACTION_SIZE_BUFFER */, NULL, 0), n;
	char *buf;

	TEST_ASSERT(size > 0, "klogctl size: %s", strerror(errno));
	buf = calloc(1, size + 1);
	TEST_ASSERT(buf, "calloc");
	n = klogctl(3 /* SYSLOG_ACTION_READ_ALL */, buf, size);
	TEST_ASSERT(n >= 0, "klogctl read: %s", strerror(errno));
	buf[n] = 0;
	return buf;
}

static void run(enum mode mode)
{
	int to_child[2], to_parent[2], status, fails = 0;
	char cg[PATH_MAX], file[PATH_MAX + 32], why[256], line[256], buf[64];
	char *log_before = NULL;
	bool mounted = false, has_memcg = false;
	long rss0, rss1;
	struct nvmx_klog k;
	pid_t pid;
	char msg;

	nvmx_klog_start(&k);
	if (mode == MODE_MEMCG) {
		if (!memcg_setup(cg, sizeof(cg), &mounted, why, sizeof(why)))
			ksft_exit_skip("memcg: %s\n", why);
		has_memcg = true;
		log_before = klog_read_all();
	}

	TEST_ASSERT(!pipe(to_child) && !pipe(to_parent), "pipe: %s", strerror(errno));
	fflush(stdout);
	pid = fork();
	TEST_ASSERT(pid >= 0, "fork: %s", strerror(errno));
	if (!pid) {
		close(to_child[1]);
		close(to_parent[0]);
		child_main(mode, to_child[0], to_parent[1]);
	}
	close(to_child[0]);
	close(to_parent[1]);

	if (has_memcg) {
		snprintf(file, sizeof(file), "%s/cgroup.procs", cg);
		snprintf(buf, sizeof(buf), "%d", pid);
		write_file(file, buf);
	}
	msg = MSG_GO;
	TEST_ASSERT(write(to_child[1], &msg, 1) == 1, "write: %s", strerror(errno));
	if (read(to_parent[0], &msg, 1) != 1) {
		waitpid(pid, &status, 0);
		describe_status(status, why, sizeof(why));
		TEST_FAIL("the child VMM did not park L2: it %s", why);
	}
	printf("# child %d: L2 parked, %s\n", pid, msg == MSG_READY_STATS ?
	       "nvmx_gpc statistics present" : "no nvmx_gpc statistics (stock KVM or pass-through)");

	TEST_ASSERT(!ptrace(PTRACE_SEIZE, pid, 0, PTRACE_O_TRACEEXIT),
		    "PTRACE_SEIZE: %s", strerror(errno));

	if (mode == MODE_MRELEASE) {
		int pidfd;
		long ret;

		rss0 = status_kb(pid, "RssAnon");
		TEST_ASSERT(!kill(pid, SIGKILL), "kill: %s", strerror(errno));
		if (!wait_exit_stop(pid, &status)) {
			describe_status(status, why, sizeof(why));
			ksft_exit_skip("mrelease: the SIGKILLed child did not stop at PTRACE_EVENT_EXIT (it %s): cannot keep its mm alive\n",
				       why);
		}
		rss1 = status_kb(pid, "RssAnon");
		TEST_ASSERT(rss1 >= 0, "no RssAnon for the exit-stopped child: its mm is gone");
		printf("# child stopped at PTRACE_EVENT_EXIT, RssAnon %ld kB (%ld kB before the kill)\n",
		       rss1, rss0);
		rss0 = rss1;

		pidfd = syscall(__NR_pidfd_open, pid, 0);
		TEST_ASSERT(pidfd >= 0, "pidfd_open: %s", strerror(errno));
		ret = syscall(__NR_process_mrelease, pidfd, 0);
		if (ret && errno == ENOSYS)
			ksft_exit_skip("process_mrelease: ENOSYS\n");
		rss1 = status_kb(pid, "RssAnon");
		if (!ret) {
			ksft_test_result_pass("mrelease: process_mrelease() returned 0\n");
		} else {
			ksft_test_result_fail("mrelease: process_mrelease() failed: %s (a notifier refused the non-blockable invalidation)\n",
					      strerror(errno));
			fails++;
		}
		if (rss1 >= 0 && rss0 - rss1 >= (long)(BALLAST_SIZE >> 11)) {
			ksft_test_result_pass("mrelease: the reap freed the VMM's memory: RssAnon %ld kB -> %ld kB\n",
					      rss0, rss1);
		} else {
			ksft_test_result_fail("mrelease: no reap: RssAnon %ld kB -> %ld kB, want a drop of at least %lu kB\n",
					      rss0, rss1, BALLAST_SIZE >> 11);
			fails++;
		}
		close(pidfd);
		status = finish_child(pid);
	} else {
		uint64_t cur, max, ooms;
		bool reaped = false;
		char want[64];
		long waited;

		snprintf(file, sizeof(file), "%s/memory.current", cg);
		cur = memcg_key(file, NULL);
		max = cur + MEMCG_HEADROOM;
		snprintf(file, sizeof(file), "%s/memory.max", cg);
		snprintf(buf, sizeof(buf), "%lu", max);
		write_file(file, buf);
		printf("# memcg: memory.current %lu kB, memory.max %lu kB\n", cur >> 10, max >> 10);

		msg = MSG_ALLOC;
		TEST_ASSERT(write(to_child[1], &msg, 1) == 1, "write: %s", strerror(errno));
		if (!wait_exit_stop(pid, &status)) {
			describe_status(status, why, sizeof(why));
			if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
				ksft_exit_skip("memcg: the OOM-killed child did not stop at PTRACE_EVENT_EXIT: cannot keep its mm alive for the reaper\n");
			TEST_FAIL("memcg: the child was not OOM-killed: it %s", why);
		}
		rss0 = status_kb(pid, "RssAnon");
		snprintf(want, sizeof(want), "oom_reaper: reaped process %d ", pid);
		for (waited = 0; waited < REAPER_WAIT_MS && !reaped; waited += 200) {
			sleep_ms(200);
			nvmx_klog_update(&k);
			reaped = k.buf && strstr(k.buf, want);
			if (k.buf && strstr(k.buf, "unable to reap"))
				break;
		}
		rss1 = status_kb(pid, "RssAnon");
		printf("# memcg: child exit-stopped, RssAnon %ld kB -> %ld kB after %ld ms\n",
		       rss0, rss1, waited);
		snprintf(file, sizeof(file), "%s/memory.events", cg);
		ooms = memcg_key(file, "oom_kill");
		status = finish_child(pid);
		describe_status(status, why, sizeof(why));
		if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL && ooms) {
			ksft_test_result_pass("memcg: the VMM was OOM-killed (SIGKILL, oom_kill %lu)\n",
					      ooms);
		} else {
			ksft_test_result_fail("memcg: the VMM %s, memory.events oom_kill %lu\n",
					      why, ooms);
			fails++;
		}
		if (reaped) {
			ksft_test_result_pass("memcg: the OOM reaper reaped the VMM's mm\n");
		} else {
			ksft_test_result_fail("memcg: the OOM reaper did not reap the VMM (no \"%s\" after %ld ms)\n",
					      want, waited);
			fails++;
		}
	}
	if (mode == MODE_MRELEASE) {
		describe_status(status, why, sizeof(why));
		TEST_ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
			    "the child %s, expected SIGKILL", why);
	}

	nvmx_klog_update(&k);
	if (nvmx_find_line(k.buf, bad_log, ARRAY_SIZE(bad_log), line, sizeof(line))) {
		ksft_test_result_fail("%s: kernel log: \"%s\"\n", mode_names[mode], line);
		fails++;
	} else {
		ksft_test_result_pass("%s: kernel log clean (no notifier failure, warning or reaper failure)\n",
				      mode_names[mode]);
		if (has_memcg)
			clear_oom_report(log_before);
	}

	if (has_memcg) {
		if (rmdir(cg))
			printf("# rmdir %s: %s\n", cg, strerror(errno));
		if (mounted)
			umount(CGROUP_ROOT);
	}
	free(log_before);
	free(k.buf);
	close(k.fd);
	close(to_child[1]);
	close(to_parent[0]);
}

int main(int argc, char *argv[])
{
	int opt, m = MODE_MRELEASE;

	while ((opt = getopt(argc, argv, "m:h")) != -1) {
		if (opt != 'm')
			goto usage;
		for (m = 0; m < NR_MODES; m++)
			if (!strcmp(optarg, mode_names[m]))
				break;
		if (m == NR_MODES)
			goto usage;
	}

	ksft_print_header();
	TEST_REQUIRE(kvm_cpu_has(X86_FEATURE_VMX));
	TEST_REQUIRE(!geteuid());
	ksft_set_plan(3);
	run(m);
	ksft_finished();

usage:
	printf("usage: %s [-m mrelease|memcg]\n", argv[0]);
	return KSFT_FAIL;
}
