#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Boot the test image in an emulator, run a test plan inside, and report.
#
#   run-emulator.sh bochs|qemu [options]
#     --plan test|demo|smoke   test plan (default: test)
#     --phases LIST            stock,passthrough,cache,unloaded (default); e.g.
#                              "stock" runs stock KVM only, "cache" only the
#                              module with the page cache
#     --inject fail|hang       add a canary that fails or hangs (harness check)
#     --modargs A=1,B=2        extra nvmx_gpc module parameters (cache breakages)
#     --only T1,T2             run only these tests of the plan
#     --name NAME              results directory name (default: emulator-plan)
#     --cpus N                 emulated CPUs (default 1)
#     --append "WORDS"         extra kernel parameters, e.g.
#                              kvm_intel.nested_early_check=1
#     --image initrd|initrd-l1 the test image; initrd-l1 adds QEMU and the
#                              real L1 (testbed/l1/), for plans with l1_ tests
#     --total/--test/--silence SECONDS   host wall-time limits
#
# Bochs 2.7 emulates VMX (the nested tests run there); QEMU TCG does not and
# is only a fast boot/insmod/rmmod smoke test. Raw logs and the summary go to
# results/NAME/ in the repository; the exit status is the harness's.
. "$(dirname "$0")/lib.sh"

EMU=${1:-}
shift || true
PLAN=test PHASES=stock,passthrough,cache,unloaded INJECT='' NAME='' LIMITS=() CPUS=1 ONLY='' APPEND='' IMAGE=initrd
while [ $# -gt 0 ]; do
	case $1 in
	--plan) PLAN=$2; shift 2 ;;
	--phases) PHASES=$2; shift 2 ;;
	--inject) INJECT=$2; shift 2 ;;
	--only) ONLY=$2; shift 2 ;;
	--modargs) MODARGS=$2; shift 2 ;;
	--name) NAME=$2; shift 2 ;;
	--cpus) CPUS=$2; shift 2 ;;
	--append) APPEND=$2; shift 2 ;;
	--image) IMAGE=$2; shift 2 ;;
	--total|--test|--silence) LIMITS+=("$1" "$2"); shift 2 ;;
	*) die "unknown option $1" ;;
	esac
done
NAME=${NAME:-$EMU-$PLAN}
RES=$NVMX_ROOT/results/$NAME
rm -rf "$RES"
mkdir -p "$RES"
HARNESS=$NVMX_ROOT/tools/nvmx-harness/target/release/nvmx-harness
[ -x "$HARNESS" ] || die "harness not built (make harness)"

# mem=1G: the emulated machine has 2 GiB, and RAM above 1 GiB is left to
# /dev/mem as memory without struct page for the unmanaged-memory tests.
ARGS="console=ttyS0,115200 mitigations=off loglevel=5 panic=-1 mem=1G"
ARGS+=" PLAN=$PLAN PHASES=$PHASES"
[ -n "$INJECT" ] && ARGS+=" INJECT=$INJECT"
[ -n "$ONLY" ] && ARGS+=" ONLY=$ONLY"
[ -n "${MODARGS:-}" ] && ARGS+=" MODARGS=${MODARGS//,/+}"
[ -n "$APPEND" ] && ARGS+=" $APPEND"

case $EMU in
bochs)
	ISO=$("$NVMX_ROOT/scripts/mkimage.sh" iso "$NAME" "$ARGS" "$IMAGE")
	cat >"$RES/bochsrc" <<RC
display_library: rfb, options="timeout=0, hideIPS"
config_interface: textconfig
megs: 2048
romimage: file=/usr/share/bochs/BIOS-bochs-latest, options=fastboot
vgaromimage: file=/usr/share/vgabios/vgabios.bin
cpu: model=tigerlake, count=$CPUS, ips=100000000, reset_on_triple_fault=1, ignore_bad_msrs=1
pci: enabled=1, chipset=i440fx
ata0: enabled=1, ioaddr1=0x1f0, ioaddr2=0x3f0, irq=14
ata0-master: type=cdrom, path=$ISO, status=inserted
boot: cdrom
clock: sync=none, time0=utc
com1: enabled=1, mode=file, dev=$RES/serial.out
log: $RES/bochs.log
panic: action=fatal
error: action=report
info: action=report
debug: action=ignore
RC
	printf 'c\n' >"$RES/dbg.rc"
	CMD=(bochs-bin -q -f "$RES/bochsrc" -rc "$RES/dbg.rc")
	DEFAULT_LIMITS=(--total 3000 --test 900 --silence 600)
	;;
qemu)
	CMD=(qemu-system-x86_64 -accel tcg -cpu max -m 2G -smp "$CPUS" -display none -monitor none
		-no-reboot -serial "file:$RES/serial.out"
		-kernel "$KOBJ/arch/x86/boot/bzImage" -initrd "$OUT/image/$IMAGE.gz"
		-append "$ARGS")
	DEFAULT_LIMITS=(--total 300 --test 120 --silence 120)
	;;
*) die "usage: run-emulator.sh bochs|qemu [options]" ;;
esac

# One Bochs at a time on this machine (2 cores; Bochs's VNC display port),
# also across checkouts: wait for the other run instead of colliding.
if [ "$EMU" = bochs ]; then
	exec 9>/tmp/nvmx-gpc-bochs.lock
	if ! flock -n 9; then
		log "another Bochs run holds /tmp/nvmx-gpc-bochs.lock; waiting"
		flock 9
	fi
fi
log "booting $EMU ($CPUS CPU): plan=$PLAN phases=$PHASES${INJECT:+ inject=$INJECT} -> $RES"
rc=0
"$HARNESS" run --serial "$RES/serial.out" --results "$RES" \
	"${DEFAULT_LIMITS[@]}" "${LIMITS[@]}" -- "${CMD[@]}" || rc=$?
if [ "$EMU" = bochs ] && [ -f "$RES/bochs.log" ]; then
	# Bochs log lines start with the emulated tick count, e.g.
	# "06859681986p[ACPI  ] >>PANIC<< ACPI control: soft power off".
	ticks=$(grep -m1 'ACPI control: soft power off' "$RES/bochs.log" | grep -o '^[0-9]*' || true)
	if [ -n "$ticks" ]; then
		log "bochs powered off cleanly after $((10#$ticks)) emulated ticks"
	else
		log "bochs did not power off through ACPI (see $RES/bochs.log)"
	fi
fi
log "results in $RES (rc=$rc)"
exit "$rc"
