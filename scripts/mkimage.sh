#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Pack the test image: an initramfs with busybox, /init, the test plans, the
# module and the static selftests; plus a bootable ISO for Bochs.
#   mkimage.sh            -> $OUT/image/initrd.gz
#   mkimage.sh iso NAME "KERNEL ARGS"  -> $OUT/image/NAME.iso
# NVMX_MODULE_KO=path packs that nvmx_gpc.ko instead of the one just built
# (e.g. an older build, to show that a new test fails on the old code).
. "$(dirname "$0")/lib.sh"

IMG=$OUT/image
mkdir -p "$IMG"

initramfs() {
	local root=$IMG/root
	rm -rf "$root"
	mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,mods,tests,plans}
	cp /bin/busybox "$root/bin/busybox"
	ln -s busybox "$root/bin/sh"
	cp "$NVMX_ROOT/testbed/init" "$root/init"
	cp "$NVMX_ROOT"/testbed/plans/*.plan "$root/plans/"
	cp "${NVMX_MODULE_KO:-$OUT/module/nvmx_gpc.ko}" "$root/mods/nvmx_gpc.ko"
	# The build with the test-only break_* parameters, for MODARGS runs.
	mkdir -p "$root/mods/knobs"
	cp "$OUT/module-knobs/nvmx_gpc.ko" "$root/mods/knobs/nvmx_gpc.ko"
	# The test bed's race-widening module, on kernels with kprobes.
	if [ -f "$OUT/widen/nvmx_widen.ko" ]; then
		cp "$OUT/widen/nvmx_widen.ko" "$root/mods/nvmx_widen.ko"
	fi
	local t
	while read -r t; do
		strip -o "$root/tests/$t" "$OUT/selftests/x86_64/$t"
	done < <(cat "$OUT/selftests/upstream.list" "$OUT/selftests/ours.list")
	(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$IMG/initrd.gz.tmp"
	mv "$IMG/initrd.gz.tmp" "$IMG/initrd.gz"
	ls -l "$IMG/initrd.gz" >&2
}

iso() {
	local name=$1 append=$2 dir=$IMG/iso-$1
	rm -rf "$dir"
	mkdir -p "$dir"
	cp "$KOBJ/arch/x86/boot/bzImage" "$dir/vmlinuz"
	cp "$IMG/initrd.gz" "$dir/initrd.gz"
	cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 "$dir/"
	cat >"$dir/isolinux.cfg" <<CFG
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  INITRD /initrd.gz
  APPEND $append
CFG
	xorriso -as mkisofs -quiet -o "$IMG/$name.iso" -b isolinux.bin -c boot.cat \
		-no-emul-boot -boot-load-size 4 -boot-info-table "$dir/" 2>/dev/null
	rm -rf "$dir"
	echo "$IMG/$name.iso"
}

case ${1:-initramfs} in
initramfs) step "initramfs" initramfs ;;
iso) iso "$2" "$3" ;;
*) die "usage: mkimage.sh [initramfs | iso NAME 'KERNEL ARGS']" ;;
esac
