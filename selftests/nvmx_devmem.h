/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * nvmx_devmem.h: memory without struct page for the nvmx-gpc selftests.
 *
 * The test host boots with mem= below the machine's RAM; the RAM above is
 * not managed by the kernel and is reachable through /dev/mem.  A memslot
 * backed by such a mapping is memory KVM maps with memremap() rather than
 * through the direct map.  Mapping System RAM this way would corrupt the
 * host, so the range is checked against /proc/iomem first.
 */
#ifndef SELFTEST_NVMX_DEVMEM_H
#define SELFTEST_NVMX_DEVMEM_H

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kvm_util.h"
#include "processor.h"

/* True if [start, end) overlaps a "System RAM" line of /proc/iomem. */
static inline bool nvmx_overlaps_system_ram(uint64_t start, uint64_t end)
{
	unsigned long long lo, hi;
	char line[256];
	bool hit = false;
	FILE *f;

	f = fopen("/proc/iomem", "r");
	TEST_ASSERT(f, "cannot open /proc/iomem: %s", strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		if (strstr(line, "System RAM") &&
		    sscanf(line, " %llx-%llx", &lo, &hi) == 2 && lo < end && start <= hi)
			hit = true;
	}
	fclose(f);
	return hit;
}

/*
 * Back @npages at @gpa (memslot @slot) with zeroed host physical memory at
 * @phys that the host kernel does not manage, and map it 1:1 into the
 * guest's page tables.  Skips the test if that memory is not available.
 * Returns the host mapping.
 */
static inline void *nvmx_add_devmem_slot(struct kvm_vm *vm, uint32_t slot,
					uint64_t gpa, uint64_t npages, uint64_t phys)
{
	size_t size = npages * getpagesize();
	void *hva;
	int fd;

	__TEST_REQUIRE(!nvmx_overlaps_system_ram(phys, phys + size),
		       "0x%lx is System RAM: boot the host with mem= below it", phys);
	fd = open("/dev/mem", O_RDWR);
	__TEST_REQUIRE(fd >= 0, "/dev/mem: %s", strerror(errno));
	hva = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, phys);
	__TEST_REQUIRE(hva != MAP_FAILED, "mmap /dev/mem at 0x%lx: %s", phys,
		       strerror(errno));
	close(fd);
	memset(hva, 0, size);

	vm_set_user_memory_region(vm, slot, 0, gpa, size, hva);
	virt_map(vm, gpa, gpa, npages);
	return hva;
}

/*
 * Kernel mappings (vmalloc area: memremap(), ioremap()) of host physical
 * memory in [@phys, @phys + @size), from /proc/vmallocinfo; the first one
 * is copied to @first.
 */
static inline int nvmx_kernel_aliases(uint64_t phys, uint64_t size, char *first,
				      size_t len)
{
	unsigned long long start, end, size_b, pa;
	char line[512], *p;
	int n = 0;
	FILE *f;

	f = fopen("/proc/vmallocinfo", "r");
	TEST_ASSERT(f, "cannot open /proc/vmallocinfo: %s", strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		p = strstr(line, "phys=");
		/*
		 * The addresses may be hashed (%pK): the extent is the size
		 * column, which includes the guard page.
		 */
		if (!p || sscanf(line, "%llx-%llx %llu", &start, &end, &size_b) != 3 ||
		    sscanf(p, "phys=%llx", &pa) != 1)
			continue;
		if (pa < phys + size && phys < pa + size_b) {
			if (!n++)
				snprintf(first, len, "%s", line);
		}
	}
	fclose(f);
	return n;
}

#endif /* SELFTEST_NVMX_DEVMEM_H */
