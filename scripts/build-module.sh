#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Build the nvmx-gpc module against the project's kernel tree, with Clippy
# and with every C and Rust warning an error, after a rustfmt check.
. "$(dirname "$0")/lib.sh"

[ -f "$KOBJ/vmlinux" ] || die "no built kernel in $KOBJ; run scripts/build-kernel.sh first"
MOD=$OUT/module
mkdir -p "$MOD/include"
# M= builds write into the module directory, so build in a copy.
# rsync keeps mtimes, so an unchanged file is not rebuilt.
rsync -a --delete --exclude include/ --exclude '*.o' --exclude '*.ko' --exclude '*.cmd' \
	--exclude '*_gen.rs' --exclude '*.mod*' --exclude '*.order' --exclude '*.symvers' \
	--exclude '*.d' --exclude target/ --exclude model/ "$NVMX_ROOT/rust/" "$MOD/"
rsync -a --delete "$NVMX_ROOT/include/" "$MOD/include/"

step "rustfmt --check" /usr/bin/rustfmt --check --edition 2021 \
	--config-path "$KSRC/.rustfmt.toml" "$NVMX_ROOT"/rust/*.rs
step "module build (clippy, -Werror, -Dwarnings)" \
	make -s -C "$KOBJ" M="$MOD" "${RUST_VARS[@]}" CLIPPY=1 \
	KCFLAGS=-Werror KRUSTFLAGS=-Dwarnings modules
ls -l "$MOD/nvmx_gpc.ko" >&2
