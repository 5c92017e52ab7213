// SPDX-License-Identifier: GPL-2.0
/*
 * nvmx_physmem: a test-bed module, never part of nvmx_gpc.ko.  It lets a
 * VMM back guest RAM with host memory that has no struct page.
 *
 * The emulated host boots with mem= below its RAM; the RAM above is not
 * managed by the kernel.  /dev/mem reaches it, but QEMU 7.2's
 * memory-backend-file maps a file from offset 0 and has no offset=, and
 * offset 0 of /dev/mem is the host's own RAM.  This module exposes one
 * physical range [base, base + size) as /dev/nvmx_physmem, whose offset 0
 * is base: mmap() maps it with remap_pfn_range() (VM_PFNMAP | VM_IO, no
 * struct page), and lseek(SEEK_END) reports size, so that QEMU neither
 * truncates the "file" nor maps past its end.
 *
 * The range must not intersect System RAM and must have no memmap; the
 * module refuses to load otherwise.  Every mapping of the range shares
 * the same memory (there is no allocation and no zeroing on open).
 */
#include <linux/fs.h>
#include <linux/ioport.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>

static unsigned long long base;
module_param(base, ullong, 0444);
MODULE_PARM_DESC(base, "physical start of the range (page aligned, above mem=)");

static unsigned long long size;
module_param(size, ullong, 0444);
MODULE_PARM_DESC(size, "length of the range in bytes (page aligned)");

static loff_t physmem_llseek(struct file *file, loff_t offset, int whence)
{
	return fixed_size_llseek(file, offset, whence, size);
}

static int physmem_mmap(struct file *file, struct vm_area_struct *vma)
{
	unsigned long len = vma->vm_end - vma->vm_start;
	u64 off = (u64)vma->vm_pgoff << PAGE_SHIFT;

	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	if (off > size || len > size - off)
		return -EINVAL;
	return remap_pfn_range(vma, vma->vm_start, (base + off) >> PAGE_SHIFT,
			       len, vma->vm_page_prot);
}

static const struct file_operations physmem_fops = {
	.owner = THIS_MODULE,
	.llseek = physmem_llseek,
	.mmap = physmem_mmap,
};

static struct miscdevice physmem_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "nvmx_physmem",
	.fops = &physmem_fops,
	.mode = 0600,
};

static int __init physmem_init(void)
{
	if (!size || !PAGE_ALIGNED(base) || !PAGE_ALIGNED(size) ||
	    base + size < base) {
		pr_err("nvmx_physmem: base=%#llx size=%#llx: need a non-empty page-aligned range\n",
		       base, size);
		return -EINVAL;
	}
	if (region_intersects(base, size, IORESOURCE_SYSTEM_RAM,
			      IORES_DESC_NONE) != REGION_DISJOINT) {
		pr_err("nvmx_physmem: [%#llx, %#llx) intersects System RAM; boot with mem= below it\n",
		       base, base + size);
		return -EINVAL;
	}
	if (pfn_valid(PHYS_PFN(base)) || pfn_valid(PHYS_PFN(base + size - 1))) {
		pr_err("nvmx_physmem: [%#llx, %#llx) has struct pages\n", base, base + size);
		return -EINVAL;
	}
	pr_info("nvmx_physmem: /dev/nvmx_physmem is [%#llx, %#llx), no struct page\n",
		base, base + size);
	return misc_register(&physmem_dev);
}

static void __exit physmem_exit(void)
{
	misc_deregister(&physmem_dev);
}

module_init(physmem_init);
module_exit(physmem_exit);
MODULE_DESCRIPTION("nvmx-gpc test bed: RAM above mem= as an mmap()able device");
MODULE_LICENSE("GPL");
