#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Build the patched host kernel out of tree, incrementally.
#
# Layout under $NVMX_CACHE:
#   pristine-$KVER/   Debian's linux-source tree as shipped (never modified)
#   src-$KVER/        the same tree with patches/ applied
#   obj-$KEY/         O= build directory, $KEY = hash(source version, rustc,
#                     bindgen, config fragments)
#
# When the patch series changes, only the files the old or the new series
# touch are restored from the pristine tree and patched again; their mtime
# changes, so make rebuilds just what depends on them.
. "$(dirname "$0")/lib.sh"

APPLIED_STAMP=$KSRC/.nvmx-applied

extract() {
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

apply_patches() {
	local want have f
	want=$(patches_key)
	have=$(head -n1 "$APPLIED_STAMP" 2>/dev/null || echo none)
	if [ "$want" = "$have" ]; then
		log "patch series unchanged ($want)"
		return 0
	fi
	local -a patches=()
	mapfile -t patches < <(ls "$NVMX_ROOT"/patches/*.patch 2>/dev/null | sort)
	log "patch series changed ($have -> $want): ${#patches[@]} patches"

	# Restore every file the previous or the new series touches.
	local -a files=()
	mapfile -t files < <({ tail -n +2 "$APPLIED_STAMP" 2>/dev/null; touched_files "${patches[@]}"; } | sort -u)
	for f in "${files[@]}"; do
		if [ -e "$KSRC_PRISTINE/$f" ]; then
			cp "$KSRC_PRISTINE/$f" "$KSRC/$f"
		else
			rm -f "$KSRC/$f"
		fi
	done
	rm -f "$APPLIED_STAMP"

	local p
	for p in "${patches[@]}"; do
		log "applying $(basename "$p")"
		if ! patch -d "$KSRC" -p1 --batch --forward --fuzz=0 --no-backup-if-mismatch \
			-r - -s <"$p"; then
			die "patch $(basename "$p") does not apply cleanly to $KVER; fix the series"
		fi
	done
	# Give every restored or patched file a fresh mtime so make rebuilds
	# objects that depend on a file the new series no longer changes.
	for f in "${files[@]}"; do
		[ -e "$KSRC/$f" ] && touch "$KSRC/$f"
	done
	{ echo "$want"; printf '%s\n' "${files[@]}"; } >"$APPLIED_STAMP"
}

configure() {
	local frag=("$NVMX_ROOT/config/kernel.fragment")
	[ "${NVMX_DEBUG:-0}" = 1 ] && frag+=("$NVMX_ROOT/config/debug.fragment")
	if [ -f "$KOBJ/.config" ] && [ -f "$KOBJ/.nvmx-configured" ]; then
		return 0
	fi
	mkdir -p "$KOBJ"
	kmake -s tinyconfig >/dev/null
	(cd "$KSRC" && scripts/kconfig/merge_config.sh -m -O "$KOBJ" "$KOBJ/.config" "${frag[@]}" >/dev/null)
	kmake -s olddefconfig >/dev/null
	# Every option the fragments ask for must have survived olddefconfig;
	# CONFIG_RUST in particular disappears silently when a tool is missing.
	local line bad=0
	while IFS= read -r line; do
		case $line in
		CONFIG_*=*) grep -qxF "$line" "$KOBJ/.config" || { log "config: wanted $line"; bad=1; } ;;
		"# CONFIG_"*" is not set")
			local opt=${line#\# }
			opt=${opt%% *}
			grep -q "^$opt=[ym]" "$KOBJ/.config" && { log "config: wanted $line"; bad=1; } ;;
		esac
	done < <(cat "${frag[@]}")
	[ $bad = 0 ] || die "kernel configuration does not match the fragments (see above)"
	touch "$KOBJ/.nvmx-configured"
}

mkdir -p "$NVMX_CACHE"
if [ ! -d "$KSRC_PRISTINE" ]; then
	step "extract pristine $KVER source" extract "$KSRC_PRISTINE"
fi
if [ ! -d "$KSRC" ]; then
	step "extract working $KVER source" extract "$KSRC"
fi
step "apply patches/" apply_patches
step "configure $KOBJ" configure
step "kernel build (about 10 min from scratch)" kmake -s -j"$(nproc)" KCFLAGS=-Werror
step "kernel uapi headers" kmake -s headers
ls -l "$KOBJ/arch/x86/boot/bzImage" >&2
