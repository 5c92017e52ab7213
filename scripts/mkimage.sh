#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Pack the test image: an initramfs with busybox, /init, the test plans, the
# module and the static selftests; plus a bootable ISO for Bochs.
#   mkimage.sh            -> $OUT/image/initrd.gz, and initrd-l1.gz: the same
#                            plus QEMU and the real L1 (testbed/l1/)
#   mkimage.sh iso NAME "KERNEL ARGS" [IMAGE]  -> $OUT/image/NAME.iso
#                            (IMAGE: initrd, the default, or initrd-l1)
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
	pack "$root" initrd.gz
	# The real-L1 image: 20-odd MB more, so a separate one, for the runs
	# that boot L1 (run-emulator.sh --image initrd-l1).
	l1_guest
	l1_host "$root"
	pack "$root" initrd-l1.gz
}

# pack DIR NAME: DIR as a gzip'd cpio archive $IMG/NAME.
pack() {
	(cd "$1" && find . | cpio -o -H newc --quiet | gzip -1) >"$IMG/$2.tmp"
	mv "$IMG/$2.tmp" "$IMG/$2"
	ls -l "$IMG/$2" >&2
}

# L1's own initramfs: busybox, testbed/l1/init, the L1 test programs.
l1_guest() {
	local root=$IMG/l1-root t
	rm -rf "$root"
	mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp}
	cp /bin/busybox "$root/bin/busybox"
	ln -s busybox "$root/bin/sh"
	cp "$NVMX_ROOT/testbed/l1/init" "$root/init"
	while read -r t; do
		strip -o "$root/$t" "$OUT/selftests/x86_64/$t"
	done <"$OUT/selftests/l1.list"
	pack "$root" l1-initrd.gz
}

# l1_host ROOT: add what L0 needs to run L1 to the test image at ROOT:
# Debian's QEMU with the shared libraries ldd finds, the firmware files
# of qemu-system-data (QEMU looks for them beside its binary, in
# ../share/qemu), L1's kernel (this build's bzImage) and initramfs,
# run-l1 and the test bed's nvmx_physmem.ko.
l1_host() {
	local root=$1 qemu lib f
	qemu=$(command -v qemu-system-x86_64) || die "qemu-system-x86_64 not installed"
	mkdir -p "$root/usr/bin" "$root/l1"
	cp "$qemu" "$root/usr/bin/"
	while read -r lib; do
		cp --parents -L "$lib" "$root/"
	done < <(ldd "$qemu" | grep -o '/[^ ]*')
	while read -r f; do
		[ -f "$f" ] && cp --parents -L "$f" "$root/"
	done < <(dpkg -L qemu-system-data | grep '^/usr/share/qemu/')
	cp "$KOBJ/arch/x86/boot/bzImage" "$root/l1/bzImage"
	cp "$IMG/l1-initrd.gz" "$root/l1/initrd.gz"
	cp "$NVMX_ROOT/testbed/l1/run-l1" "$root/bin/run-l1"
	cp "$OUT/physmem/nvmx_physmem.ko" "$root/mods/nvmx_physmem.ko"
}

iso() {
	local name=$1 append=$2 image=${3:-initrd} dir=$IMG/iso-$1
	rm -rf "$dir"
	mkdir -p "$dir"
	cp "$KOBJ/arch/x86/boot/bzImage" "$dir/vmlinuz"
	cp "$IMG/$image.gz" "$dir/initrd.gz"
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
iso) iso "$2" "$3" "${4:-initrd}" ;;
*) die "usage: mkimage.sh [initramfs | iso NAME 'KERNEL ARGS' [initrd|initrd-l1]]" ;;
esac
