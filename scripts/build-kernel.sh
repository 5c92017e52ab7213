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

apply_patches() {
	local want have f
	want=$(patches_key)
	have=$(head -n1 "$APPLIED_STAMP" 2>/dev/null || echo none)
	if [ "$want" = "$have" ]; then
		log "patch series unchanged ($want)"
		return 0
	fi
	local -a patches=()
	mapfile -t patches < <(series_patches)
	log "patch series changed ($have -> $want): ${#patches[@]} patches"

	# Restore every file the previous or the new series touches.
	local -a files=()
	mapfile -t files < <({ tail -n +2 "$APPLIED_STAMP" 2>/dev/null; touched_files "${patches[@]}"; } | sort -u)
	for f in "${files[@]}"; do
		[ -n "$f" ] || continue
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
		[ -n "$f" ] && [ -e "$KSRC/$f" ] && touch "$KSRC/$f"
	done
	{ echo "$want"; printf '%s\n' "${files[@]}"; } >"$APPLIED_STAMP"
}

mkdir -p "$NVMX_CACHE"
if [ ! -d "$KSRC_PRISTINE" ]; then
	step "extract pristine $KVER source" extract_source "$KSRC_PRISTINE"
fi
if [ ! -d "$KSRC" ]; then
	step "extract working $KVER source" extract_source "$KSRC"
fi
step "apply patches/" apply_patches
step "configure $KOBJ" configure_kernel
step "kernel build (about 10 min from scratch)" kmake -s -j"$(nproc)" KCFLAGS=-Werror
step "kernel uapi headers" kmake -s headers
ls -l "$KOBJ/arch/x86/boot/bzImage" >&2
