# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=bash
# shellcheck disable=SC2034 # settings used by the scripts that source this
# Shared settings and helpers for the nvmx-gpc build and run scripts.
# Sourced, never executed.

set -euo pipefail

NVMX_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export NVMX_ROOT

# Everything large lives outside the repository.
NVMX_CACHE=${NVMX_CACHE:-$HOME/.cache/nvmx-gpc}
export NVMX_CACHE

# Pinned inputs. The build depends on these exact versions; setup.sh
# refuses to continue when one of them is no longer in the archive.
KVER=6.12.117
LINUX_SOURCE_PKG=linux-source-6.12
LINUX_SOURCE_VER=6.12.117-1~deb12u1
LINUX_SOURCE_TARBALL=/usr/src/linux-source-6.12.tar.xz
RUSTC_WEB_VER=1.96.0+dfsg1-1~deb12u2
BINDGEN_VER=0.69.5
LLVM_VER=19

# Tools installed from crates.io live beside (not inside) the build cache,
# so a second checkout with its own NVMX_CACHE shares them.
NVMX_TOOLS=${NVMX_TOOLS:-$HOME/.cache/nvmx-gpc/tools}
BINDGEN=$NVMX_TOOLS/bindgen-$BINDGEN_VER/bin/bindgen
export LIBCLANG_PATH=/usr/lib/llvm-$LLVM_VER/lib

# Passed on every kernel and module make: the rustup toolchain that comes
# first on PATH has no rust-src and a different rustc version.
RUST_VARS=(RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc HOSTRUSTC=/usr/bin/rustc
	BINDGEN="$BINDGEN" CLIPPY_DRIVER=/usr/bin/clippy-driver)
# The memory-debugging kernel (NVMX_DEBUG=1, testbed/config/debug.fragment) has
# KASAN, which Rust supports only in a clang build; its module must be
# built with the same compiler.
if [ "${NVMX_DEBUG:-0}" = 1 ]; then
	RUST_VARS+=("LLVM=-$LLVM_VER")
fi

NVMX_T0=${NVMX_T0:-$(date +%s)}
export NVMX_T0

# Elapsed wall time since the top-level command started, as [mm:ss].
nvmx_stamp() {
	local d=$(( $(date +%s) - NVMX_T0 ))
	printf '[%02d:%02d]' $((d / 60)) $((d % 60))
}

log() { printf '%s %s\n' "$(nvmx_stamp)" "$*" >&2; }
die() { printf '%s ERROR: %s\n' "$(nvmx_stamp)" "$*" >&2; exit 1; }

# step NAME CMD...: run CMD, print its name and how long it took.
step() {
	local name=$1 t0 rc=0
	shift
	t0=$(date +%s)
	log ">> $name"
	"$@" || rc=$?
	if [ "$rc" -ne 0 ]; then
		log "!! $name failed (rc=$rc) after $(( $(date +%s) - t0 ))s"
		return "$rc"
	fi
	log "<< $name done in $(( $(date +%s) - t0 ))s"
}

# Hash of everything that determines the kernel build configuration.
# Patches are deliberately not part of it: a changed patch is applied to
# the existing tree and rebuilt incrementally (see build-kernel.sh).
config_key() {
	{
		echo "$KVER $LINUX_SOURCE_VER rustc=$RUSTC_WEB_VER bindgen=$BINDGEN_VER"
		cat "$NVMX_ROOT/testbed/config/kernel.fragment"
		if [ "${NVMX_DEBUG:-0}" = 1 ]; then
			cat "$NVMX_ROOT/testbed/config/debug.fragment"
		fi
	} | sha256sum | cut -c1-12
}

# series_patches: the patches of the series in order, one per line; the
# cover letter (0000-cover-letter.patch) is not one of them.
series_patches() {
	local p
	for p in "$NVMX_ROOT"/patches/[0-9][0-9][0-9][0-9]-*.patch; do
		[ -f "$p" ] && [ "${p##*/}" != 0000-cover-letter.patch ] && echo "$p"
	done
	return 0
}

patches_key() {
	series_patches | xargs -r cat | sha256sum | cut -c1-12
}

KEY=$(config_key)
KSRC=$NVMX_CACHE/src-$KVER
KSRC_PRISTINE=$NVMX_CACHE/pristine-$KVER
KOBJ=$NVMX_CACHE/obj-$KEY
OUT=$NVMX_CACHE/out-$KEY
export KSRC KOBJ OUT

kmake() {
	make -C "$KSRC" O="$KOBJ" "${RUST_VARS[@]}" "$@"
}

# extract_source DST: unpack Debian's linux-source tarball as DST.
extract_source() {
	local dst=$1 tmp
	tmp=$(mktemp -d "$NVMX_CACHE/extract.XXXXXX")
	tar -C "$tmp" -xJf "$LINUX_SOURCE_TARBALL"
	mv "$tmp/linux-source-6.12" "$dst"
	rmdir "$tmp"
}

# Files a patch series touches, one per line, relative to the tree.
touched_files() {
	[ $# -gt 0 ] || return 0
	sed -n -e 's|^--- a/\([^[:space:]]*\).*|\1|p' -e 's|^+++ b/\([^[:space:]]*\).*|\1|p' "$@" |
		sort -u
}

# configure_kernel: tinyconfig plus the fragments into $KOBJ, once per $KOBJ.
configure_kernel() {
	local frag=("$NVMX_ROOT/testbed/config/kernel.fragment")
	[ "${NVMX_DEBUG:-0}" = 1 ] && frag+=("$NVMX_ROOT/testbed/config/debug.fragment")
	if [ -f "$KOBJ/.config" ] && [ -f "$KOBJ/.nvmx-configured" ]; then
		return 0
	fi
	mkdir -p "$KOBJ"
	kmake -s tinyconfig >/dev/null
	(cd "$KSRC" && scripts/kconfig/merge_config.sh -m -O "$KOBJ" "$KOBJ/.config" "${frag[@]}" >/dev/null)
	kmake -s olddefconfig >/dev/null
	# Every option the fragments ask for must have survived olddefconfig;
	# CONFIG_RUST in particular disappears silently when a tool is missing.
	# A later fragment overrides an earlier one, option by option.
	local line bad=0
	while IFS= read -r line; do
		case $line in
		CONFIG_*=*) grep -qxF "$line" "$KOBJ/.config" || { log "config: wanted $line"; bad=1; } ;;
		"# CONFIG_"*" is not set")
			local opt=${line#\# }
			opt=${opt%% *}
			grep -q "^$opt=[ym]" "$KOBJ/.config" && { log "config: wanted $line"; bad=1; } ;;
		esac
	done < <(cat "${frag[@]}" | awk '
		/^CONFIG_[A-Za-z0-9_]*=/ { o = $0; sub(/=.*/, "", o) }
		/^# CONFIG_[A-Za-z0-9_]* is not set/ { o = $2 }
		/^(CONFIG_|# CONFIG_.* is not set)/ { last[o] = $0; if (!(o in seen)) { seen[o] = 1; order[n++] = o } }
		END { for (i = 0; i < n; i++) print last[order[i]] }')
	[ $bad = 0 ] || die "kernel configuration does not match the fragments (see above)"
	touch "$KOBJ/.nvmx-configured"
}

# results_json DIR QUERY [ARGS...]: read DIR/results.json, the harness's
# machine-readable result (tools/nvmx-harness/src/log.rs, Log::json), so
# that no script depends on the wording of summary.txt.
#   tests STATUS [PHASE]  phase/name of each test with STATUS, one a line
#   show PHASE/NAME       "STATUS phase/name: reason" of that test
#   tally                 "P passed, F failed, S skipped" and the XFAILs
results_json() {
	local dir=$1
	shift
	[ -f "$dir/results.json" ] || die "$dir/results.json missing (did the harness run?)"
	/usr/bin/python3 - "$dir/results.json" "$@" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
query, args = sys.argv[2], sys.argv[3:]
tests = r["tests"]
if query == "tests":
    for t in tests:
        if t["status"] == args[0] and (len(args) < 2 or t["phase"] == args[1]):
            print(f"{t['phase']}/{t['name']}")
elif query == "show":
    for t in tests:
        if f"{t['phase']}/{t['name']}" == args[0]:
            print(f"{t['status']} {args[0]}: {t['reason']}")
elif query == "tally":
    c = r["counts"]
    print(f"{c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped, "
          f"{c['xfail']} xfail; success={str(r['success']).lower()}")
else:
    sys.exit(f"results_json: unknown query {query}")
PY
}
