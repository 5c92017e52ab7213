#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Install everything the build and the emulated test bed need, from the
# package registries only. Idempotent: a second run installs nothing.
. "$(dirname "$0")/lib.sh"

# Packages whose exact version the build depends on.
PINNED=(
	"$LINUX_SOURCE_PKG=$LINUX_SOURCE_VER"
	"rustc-web=$RUSTC_WEB_VER"
	"rust-web-src=$RUSTC_WEB_VER"
	"libstd-rust-web-dev=$RUSTC_WEB_VER"
	"rustfmt-web=$RUSTC_WEB_VER"
	"rust-web-clippy=$RUSTC_WEB_VER"
)
# Packages where any bookworm version works.
UNPINNED=(
	"libclang-$LLVM_VER-dev" "clang-$LLVM_VER" "lld-$LLVM_VER" "llvm-$LLVM_VER"
	bochs bochsbios vgabios bochs-term
	isolinux syslinux syslinux-common xorriso
	busybox-static qemu-system-x86
	make gcc bc flex bison cpio xz-utils rsync kmod patch
	libelf-dev libssl-dev dwarves python3 python3-ply python3-matplotlib perl shellcheck
)

missing=()
for p in "${PINNED[@]}"; do
	name=${p%%=*} ver=${p#*=}
	have=$(dpkg-query -W -f='${Status} ${Version}' "$name" 2>/dev/null || true)
	[ "$have" = "install ok installed $ver" ] || missing+=("$p")
done
for p in "${UNPINNED[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
		missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
	log "installing ${#missing[@]} packages: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	step "apt-get update" apt-get update -qq
	for p in "${missing[@]}"; do
		case $p in
		*=*)
			name=${p%%=*} ver=${p#*=}
			if ! apt-cache madison "$name" | awk '{print $3}' | grep -qxF "$ver"; then
				die "pinned package $name=$ver is not in the archive any more" \
					"(have: $(apt-cache madison "$name" | awk '{print $3}' | tr '\n' ' '));" \
					"update the pin in scripts/lib.sh and re-check the build"
			fi ;;
		esac
	done
	step "apt-get install" apt-get install -y -qq --no-install-recommends \
		"${missing[@]}" >/dev/null
else
	log "all packages present"
fi

if [ ! -x "$BINDGEN" ]; then
	command -v cargo >/dev/null || die "cargo is needed to install bindgen-cli"
	step "cargo install bindgen-cli $BINDGEN_VER (about 3 min)" \
		cargo install --quiet bindgen-cli --version "$BINDGEN_VER" --locked \
		--root "$NVMX_TOOLS/bindgen-$BINDGEN_VER"
fi
"$BINDGEN" --version | grep -qF "$BINDGEN_VER" || die "unexpected bindgen: $("$BINDGEN" --version)"
/usr/bin/rustc --version | grep -qF "${RUSTC_WEB_VER%%+*}" ||
	die "unexpected /usr/bin/rustc: $(/usr/bin/rustc --version)"
[ -f "$LIBCLANG_PATH/libclang.so" ] || die "libclang not found in $LIBCLANG_PATH"
[ -f "$LINUX_SOURCE_TARBALL" ] || die "$LINUX_SOURCE_TARBALL missing"
log "toolchain ready: $(/usr/bin/rustc --version), $("$BINDGEN" --version)"
