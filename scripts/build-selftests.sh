#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Build the upstream nested VMX selftests the test plan runs, plus the
# project's own tests in selftests/, statically, with the kernel's KVM
# selftest library and the uapi headers of the project's kernel.
. "$(dirname "$0")/lib.sh"

[ -d "$KOBJ/usr/include/linux" ] || die "no uapi headers in $KOBJ/usr; run scripts/build-kernel.sh first"

UPSTREAM=(vmx_tsc_adjust_test vmx_apic_access_test vmx_close_while_nested_test
	vmx_set_nested_state_test state_test vmx_msrs_test vmx_invalid_nested_guest_state
	vmx_dirty_log_test nested_exceptions_test smm_test hyperv_evmcs
	vmx_preemption_timer_test)
KVM_ST=$KSRC/tools/testing/selftests/kvm
mkdir -p "$OUT/selftests"

# Our tests build inside the kernel's selftest tree, next to the upstream
# ones, so they use the same library, flags and headers (our shared
# selftests/*.h are copied next to them too, and so is the module's
# include/nvmx_gpc_stats.h, the list of its statistics).  A copy is replaced only when
# its content differs, and then gets a new mtime: make rebuilds exactly
# what changed, also when another checkout built these trees last (a
# symlink's target mtime can be older than that checkout's build).
place() {
	if [ -L "$2" ] || ! cmp -s "$1" "$2"; then
		rm -f "$2"
		cp "$1" "$2"
	fi
}
OURS=()
for h in "$NVMX_ROOT"/selftests/*.h "$NVMX_ROOT/include/nvmx_gpc_stats.h"; do
	[ -e "$h" ] && place "$h" "$KVM_ST/x86_64/$(basename "$h")"
done
for c in "$NVMX_ROOT"/selftests/*.c; do
	name=$(basename "$c" .c)
	place "$c" "$KVM_ST/x86_64/$name.c"
	OURS+=("$name")
done

# For the real L1 (testbed/l1/): upstream memslot_perf_test with the test
# bed's Bochs patch (testbed/l1/memslot_perf_test-bochs.patch), built from
# a patched copy; the upstream file stays as it is.
L1_TESTS=(memslot_perf_test_bochs)
patched=$(mktemp)
patch -s -o "$patched" "$KVM_ST/memslot_perf_test.c" \
	<"$NVMX_ROOT/testbed/l1/memslot_perf_test-bochs.patch" ||
	die "testbed/l1/memslot_perf_test-bochs.patch does not apply"
place "$patched" "$KVM_ST/x86_64/memslot_perf_test_bochs.c"
rm -f "$patched"

progs=()
for t in "${UPSTREAM[@]}" "${OURS[@]}" "${L1_TESTS[@]}"; do
	progs+=("x86_64/$t")
done

step "selftests build (${#progs[@]} programs)" \
	make -s -C "$KVM_ST" OUTPUT="$OUT/selftests" -j"$(nproc)" \
	KHDR_INCLUDES="-isystem $KOBJ/usr/include" USERLDFLAGS=-static \
	TEST_GEN_PROGS_x86_64="${progs[*]}" TEST_GEN_PROGS_EXTENDED_x86_64= \
	"${progs[@]/#/$OUT/selftests/}"
printf '%s\n' "${UPSTREAM[@]}" >"$OUT/selftests/upstream.list"
printf '%s\n' "${OURS[@]}" >"$OUT/selftests/ours.list"
printf '%s\n' "${L1_TESTS[@]}" >"$OUT/selftests/l1.list"
