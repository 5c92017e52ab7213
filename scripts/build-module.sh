#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Build the nvmx-gpc module against the project's kernel tree, with Clippy
# and with every C and Rust warning an error, after a rustfmt check.
#
# Two builds of the same sources:
#   $OUT/module/nvmx_gpc.ko        the default build, what users load; it has
#                                  no test-only parameter
#   $OUT/module-knobs/nvmx_gpc.ko  NVMX_TEST_KNOBS=1: adds the break_*
#                                  parameters that scripts/expect-cache-failure.sh
#                                  uses to prove the tests catch broken caches
. "$(dirname "$0")/lib.sh"

[ -f "$KOBJ/vmlinux" ] || die "no built kernel in $KOBJ; run scripts/build-kernel.sh first"

# build DIR [MAKE VARS...]: M= builds write into the module directory, so
# build in a copy; rsync keeps mtimes, so an unchanged file is not rebuilt.
build() {
	local mod=$1
	shift
	mkdir -p "$mod/include"
	rm -f "$mod/nvmx_gpc.ko"
	rsync -a --delete --exclude include/ --exclude '*.o' --exclude '*.ko' --exclude '*.cmd' \
		--exclude '*_gen.rs' --exclude '*.mod*' --exclude '*.order' --exclude '*.symvers' \
		--exclude '*.d' --exclude target/ --exclude model/ "$NVMX_ROOT/rust/" "$mod/"
	rsync -a --delete "$NVMX_ROOT/include/" "$mod/include/"
	make -s -C "$KOBJ" M="$mod" "${RUST_VARS[@]}" CLIPPY=1 \
		KCFLAGS=-Werror KRUSTFLAGS=-Dwarnings "$@" modules || return 1
	ls -l "$mod/nvmx_gpc.ko" >&2
}

step "rustfmt --check" /usr/bin/rustfmt --check --edition 2021 \
	--config-path "$KSRC/.rustfmt.toml" "$NVMX_ROOT"/rust/*.rs "$NVMX_ROOT"/rust/ffi/*.rs
step "module build (clippy, -Werror, -Dwarnings)" build "$OUT/module"
step "module build with test knobs" build "$OUT/module-knobs" NVMX_TEST_KNOBS=1
if modinfo -p "$OUT/module/nvmx_gpc.ko" | grep -q '^break_'; then
	die "the default build has test-only parameters: $(modinfo -p "$OUT/module/nvmx_gpc.ko" | grep '^break_' | tr '\n' ' ')"
fi

# The layout a user builds from: the top-level Kbuild, make -C <kernel
# build> M=<copy of the repository root>.
build_from_root() {
	local dir=$OUT/from-root
	mkdir -p "$dir"
	rsync -a --delete --exclude target/ --exclude model/ --exclude '*_gen.rs' \
		"$NVMX_ROOT/Kbuild" "$NVMX_ROOT/rust" "$NVMX_ROOT/include" "$dir/"
	make -s -C "$KOBJ" M="$dir" "${RUST_VARS[@]}" modules || return 1
	ls -l "$dir/rust/nvmx_gpc.ko" >&2
}
step "module build from the top-level Kbuild" build_from_root

# The test bed's own modules (never part of nvmx_gpc.ko), each in
# testbed/NAME/ with its Kbuild: build_testbed NAME -> $OUT/NAME/nvmx_NAME.ko.
build_testbed() {
	local dir=$OUT/$1
	mkdir -p "$dir"
	rsync -a "$NVMX_ROOT/testbed/$1/" "$dir/"
	make -s -C "$KOBJ" M="$dir" "${RUST_VARS[@]}" KCFLAGS=-Werror modules || return 1
	ls -l "$dir/nvmx_$1.ko" >&2
}
# nvmx_physmem: RAM above mem= as a file QEMU can map (the real-L1 runs).
step "test-bed module nvmx_physmem" build_testbed physmem
# nvmx_widen widens a race window inside KVM with kprobes, so only kernels
# with CONFIG_KPROBES (the debug kernel, testbed/config/debug.fragment) get it.
if grep -q '^CONFIG_KPROBES=y' "$KOBJ/.config"; then
	step "test-bed module nvmx_widen (kprobes)" build_testbed widen
else
	rm -rf "$OUT/widen"
fi
