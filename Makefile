# SPDX-License-Identifier: GPL-2.0
#
# nvmx-gpc: the two entry points are `make demo` and `make test`.
# Build trees live in $(NVMX_CACHE) (default ~/.cache/nvmx-gpc), never in
# the repository; see scripts/lib.sh.

.NOTPARALLEL:
.PHONY: all demo test setup kernel module selftests harness image \
	check-harness check-model check-style smoke bochs-test harness-selfcheck cache-selfcheck \
	bochs-smp bochs-earlycheck bochs-l1 bochs-debug bochs-widen bench clean-results

export NVMX_T0 := $(shell date +%s)
S := scripts
# Which runs of the plan: stock (no module), passthrough (the hook layer with
# the stock mapping), cache (the page cache), unloaded (after rmmod).
PHASES ?= stock,passthrough,cache,unloaded

all: image harness

setup:
	@$(S)/setup.sh

kernel: setup
	@$(S)/build-kernel.sh

module: kernel
	@$(S)/build-module.sh

selftests: kernel
	@$(S)/build-selftests.sh

harness:
	@echo ">> nvmx-harness (release build)"
	@cargo build --quiet --release --manifest-path tools/nvmx-harness/Cargo.toml

image: module selftests
	@$(S)/mkimage.sh initramfs

# Rust host tooling: formatting, Clippy with warnings as errors, unit and
# end-to-end tests of the harness.
check-harness:
	@echo ">> nvmx-harness: cargo fmt --check, clippy -D warnings, cargo test"
	@cargo fmt --manifest-path tools/nvmx-harness/Cargo.toml -- --check
	@cargo clippy --quiet --manifest-path tools/nvmx-harness/Cargo.toml --all-targets -- -D warnings
	@cargo test --quiet --manifest-path tools/nvmx-harness/Cargo.toml

# The cache state machine (rust/cache/state.rs) in userspace: formatting,
# Clippy, unit tests and the exhaustive interleaving model check (~30 s).
# shellcheck on the scripts, checkpatch --strict on the patch files.
check-style: kernel
	@$(S)/check-style.sh

check-model:
	@echo ">> tools/nvmx-model: cargo fmt --check, clippy -D warnings, cargo test"
	@cargo fmt --manifest-path tools/nvmx-model/Cargo.toml -- --check
	@cargo clippy --quiet --manifest-path tools/nvmx-model/Cargo.toml --all-targets -- -D warnings
	@cargo test --quiet --manifest-path tools/nvmx-model/Cargo.toml

# QEMU TCG (no VMX): boot, insmod, rmmod, no kernel warnings.
smoke: image harness
	@$(S)/run-emulator.sh qemu --plan smoke --phases passthrough,cache,unloaded

# The harness must turn a failing test and a hung test into a red run.
harness-selfcheck: image harness
	@$(S)/expect-failure.sh

# The page-cache tests must catch deliberately broken caches (test-only
# module parameters): stale pages, and a memremap per round trip.
cache-selfcheck: image harness
	@$(S)/expect-cache-failure.sh

# Bochs with VMX: the full plan, stock / module / after rmmod.
bochs-test: image harness
	@$(S)/run-emulator.sh bochs --plan test --phases $(PHASES)

# The page-cache tests on two emulated CPUs, so that the invalidating host
# thread and the vCPU really run at the same time (stock vs cache).
bochs-smp: image harness
	@$(S)/run-emulator.sh bochs --plan dev --phases stock,cache --cpus 2 --name bochs-smp

# kvm_intel.nested_early_check=1: every nested VM-entry goes through the
# hardware first; the early-failing VM-entries must leave nothing mapped.
bochs-earlycheck: image harness
	@$(S)/run-emulator.sh bochs --plan earlycheck --phases stock,passthrough,cache \
		--append kvm_intel.nested_early_check=1 --name bochs-earlycheck

# A real L1 hypervisor: QEMU in the emulated host boots our kernel as L1
# (2 vCPUs, THP-backed), which runs memslot_perf_test's map test in L2,
# with the module in L0 (testbed/l1/, testbed/plans/l1.plan).
bochs-l1: image harness
	@$(S)/run-emulator.sh bochs --plan l1 --phases cache --image initrd-l1 --name bochs-l1

# The memory-debugging kernel (testbed/config/debug.fragment: KASAN, lockdep,
# atomic-sleep checks, kmemleak; a clang build, because 6.12 allows Rust with
# KASAN only there): the page-cache tests with the module.  Any KASAN,
# lockdep, atomic-sleep or kmemleak report fails the run (testbed/init's
# dmesg-clean and kmemleak-clean).  Its own build trees, keyed on the
# fragments (scripts/lib.sh).
bochs-debug: harness
	@NVMX_DEBUG=1 $(MAKE) --no-print-directory image
	@NVMX_DEBUG=1 $(S)/run-emulator.sh bochs --plan dev --phases cache --name bochs-debug

# Not in make test: the F5 reproduction tool.  The debug kernel on 2 CPUs,
# VM teardown from a forked child under invalidations, with the test bed's
# nvmx_widen.ko holding each freed vCPU in kvm->vcpu_array for 500 ms
# (testbed/plans/widen.plan).  It caught 4e10b0e's kick after free; with
# the widening, the teardown also hangs on stock KVM (see the plan).
bochs-widen: harness
	@NVMX_DEBUG=1 $(MAKE) --no-print-directory image
	@NVMX_DEBUG=1 $(S)/run-emulator.sh bochs --plan widen --phases cache --cpus 2 \
		--name bochs-widen

demo: image harness
	@$(S)/run-emulator.sh bochs --plan demo --phases $(PHASES)

# Stock vs module, side by side: the L2 round trip and memslot_perf_test
# under the real L1; tables, results/bench/bench.tsv and bench.png.
bench: image harness
	@$(S)/bench.sh

test: check-harness check-model check-style smoke harness-selfcheck bochs-test \
	bochs-smp bochs-earlycheck bochs-l1 cache-selfcheck bochs-debug
	@echo "make test: all stages passed"

clean-results:
	rm -rf results
