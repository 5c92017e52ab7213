// SPDX-License-Identifier: GPL-2.0
/*
 * nvmx_widen: a test-bed module, never part of nvmx_gpc.ko.  It widens a
 * race window inside KVM so that a test can hit it on an emulator.
 *
 * kvm_destroy_vcpus() frees each vCPU and only then removes it from
 * kvm->vcpu_array:
 *
 *	kvm_for_each_vcpu(i, vcpu, kvm) {
 *		kvm_vcpu_destroy(vcpu);		<- the vCPU is freed here
 *		xa_erase(&kvm->vcpu_array, i);	<- kvm_get_vcpu() finds it until here
 *	}
 *
 * Anything that looks a vCPU up by index in between (a reload kick sent by
 * a page provider's mmu_notifier, review finding F5) touches freed memory.
 * The window is a few instructions wide.  This module makes it delay_us
 * wide: a kretprobe on kvm_destroy_vcpus() records the destroying task,
 * and a kprobe on xa_erase() busy-waits when that task calls it.  The
 * delay runs with preemption disabled (kprobe handler), so the racing
 * thread must run on another CPU.
 *
 * hits counts the widened windows, so that a test can check that the
 * delay really happened.
 */
#include <linux/atomic.h>
#include <linux/delay.h>
#include <linux/kprobes.h>
#include <linux/module.h>
#include <linux/sched.h>

static unsigned int delay_us = 20000;
module_param(delay_us, uint, 0444);
MODULE_PARM_DESC(delay_us, "busy-wait after each vCPU is freed in kvm_destroy_vcpus() (us)");

static atomic_t hits = ATOMIC_INIT(0);
static int hits_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%d\n", atomic_read(&hits));
}

static const struct kernel_param_ops hits_ops = { .get = hits_get };
module_param_cb(hits, &hits_ops, NULL, 0444);
MODULE_PARM_DESC(hits, "number of widened windows so far");

/* The task inside kvm_destroy_vcpus(), if any. */
static struct task_struct *destroyer;

static int destroy_entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	WRITE_ONCE(destroyer, current);
	return 0;
}

static int destroy_return(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	cmpxchg(&destroyer, current, NULL);
	return 0;
}

static struct kretprobe destroy_probe = {
	.kp.symbol_name = "kvm_destroy_vcpus",
	.entry_handler = destroy_entry,
	.handler = destroy_return,
	.maxactive = 8,
};

static int erase_pre(struct kprobe *p, struct pt_regs *regs)
{
	unsigned int left = delay_us;

	if (READ_ONCE(destroyer) != current)
		return 0;
	atomic_inc(&hits);
	while (left) {
		unsigned int step = min(left, 1000u);

		udelay(step);
		left -= step;
	}
	return 0;
}

static struct kprobe erase_probe = {
	.symbol_name = "xa_erase",
	.pre_handler = erase_pre,
};

static int __init nvmx_widen_init(void)
{
	int ret;

	ret = register_kprobe(&erase_probe);
	if (ret) {
		pr_err("nvmx_widen: kprobe on xa_erase: %d\n", ret);
		return ret;
	}
	ret = register_kretprobe(&destroy_probe);
	if (ret) {
		pr_err("nvmx_widen: kretprobe on kvm_destroy_vcpus: %d\n", ret);
		unregister_kprobe(&erase_probe);
		return ret;
	}
	pr_info("nvmx_widen: %u us after each vCPU free in kvm_destroy_vcpus()\n", delay_us);
	return 0;
}

static void __exit nvmx_widen_exit(void)
{
	unregister_kretprobe(&destroy_probe);
	unregister_kprobe(&erase_probe);
	pr_info("nvmx_widen: %d windows widened\n", atomic_read(&hits));
}

module_init(nvmx_widen_init);
module_exit(nvmx_widen_exit);
MODULE_DESCRIPTION("nvmx-gpc test bed: widen KVM's vCPU-free window");
MODULE_LICENSE("GPL");
