#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Check that the patch series is bisectable: apply the patches of patches/ (not the cover letter) one at a
# time to a separate source tree and build vmlinux after each one, with the
# same configuration and KCFLAGS=-Werror as build-kernel.sh.
#
# Layout under $NVMX_CACHE (nothing of build-kernel.sh's trees is touched):
#   bisect-src-$KVER/   copy of the pristine tree, patched one patch at a time
#   bisect-obj-$KEY/    its O= build directory
#
# The first build is a full one (about 10 min); later runs restore the files
# the series touches from the pristine tree and rebuild incrementally.
# Usage: scripts/check-bisect.sh [FIRST]   (FIRST: 1-based patch to start the
# builds at; earlier patches are applied without building.)
. "$(dirname "$0")/lib.sh"

FIRST=${1:-1}
KSRC=$NVMX_CACHE/bisect-src-$KVER
KOBJ=$NVMX_CACHE/bisect-obj-$KEY
export KSRC KOBJ

STAMP=$KSRC/.nvmx-bisect-files

copy_pristine() {
	cp -a "$KSRC_PRISTINE" "$KSRC.tmp"
	mv "$KSRC.tmp" "$KSRC"
}

# Put every file any patch touches back to its pristine state.
restore_tree() {
	local f
	for f in "$@"; do
		if [ -e "$KSRC_PRISTINE/$f" ]; then
			cp "$KSRC_PRISTINE/$f" "$KSRC/$f"
			touch "$KSRC/$f"
		else
			rm -f "$KSRC/$f"
		fi
	done
}

build_vmlinux() {
	kmake -s -j"$(nproc)" KCFLAGS=-Werror vmlinux
}

mkdir -p "$NVMX_CACHE"
mapfile -t PATCHES < <(series_patches)
[ ${#PATCHES[@]} -gt 0 ] || die "no patches in $NVMX_ROOT/patches"

if [ ! -d "$KSRC_PRISTINE" ]; then
	step "extract pristine $KVER source" extract_source "$KSRC_PRISTINE"
fi
if [ ! -d "$KSRC" ]; then
	step "copy pristine tree to $KSRC" copy_pristine
fi
# Files the previous run or this series touches.
mapfile -t FILES < <({ cat "$STAMP" 2>/dev/null || true; touched_files "${PATCHES[@]}"; } | sort -u)
step "restore ${#FILES[@]} touched files" restore_tree "${FILES[@]}"
touched_files "${PATCHES[@]}" >"$STAMP"
step "configure $KOBJ" configure_kernel

i=0
for p in "${PATCHES[@]}"; do
	i=$((i + 1))
	name=$(basename "$p")
	if ! patch -d "$KSRC" -p1 --batch --forward --fuzz=0 --no-backup-if-mismatch \
		-r - -s <"$p"; then
		die "BISECT: patch $i ($name) does not apply on top of patches 1..$((i - 1))"
	fi
	if [ "$i" -lt "$FIRST" ]; then
		log "applied $name (not built)"
		continue
	fi
	if ! step "build vmlinux with patches 1..$i ($name)" build_vmlinux; then
		die "BISECT: the tree does not build with patches 1..$i; first bad patch: $name"
	fi
done
log "bisect check passed: every prefix of the ${#PATCHES[@]} patches builds"
