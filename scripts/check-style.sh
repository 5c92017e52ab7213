#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Style gates a reviewer runs first: shellcheck on the scripts and the test
# bed's /init scripts, scripts/checkpatch.pl --strict on every patch file of
# the series as it is and on the test bed's C modules.
. "$(dirname "$0")/lib.sh"

[ -x "$KSRC/scripts/checkpatch.pl" ] || die "no patched source in $KSRC; run make kernel first"

shell_files=("$NVMX_ROOT"/scripts/*.sh "$NVMX_ROOT/testbed/init" "$NVMX_ROOT/testbed/l1/init"
	"$NVMX_ROOT/testbed/l1/run-l1" "$NVMX_ROOT/.ci/run")
step "shellcheck (${#shell_files[@]} files)" shellcheck -x -P "$NVMX_ROOT/scripts" "${shell_files[@]}"

# checkpatch [-f] FILE...: silent and 0 when every file is clean.  Run from
# the repository, as a reviewer runs "scripts/checkpatch.pl --strict
# patches/*.patch" on the files; then once more inside the kernel tree,
# which adds the tree-based checks.  Two of those cannot pass here and are
# ignored there: UNKNOWN_COMMIT_ID (the source tree has no git history to
# look the Fixes: commit up in) and FILE_PATH_CHANGES (patch 3 adds files
# under arch/x86/kvm/ and arch/x86/include/asm/kvm*, which the KVM x86
# entry of MAINTAINERS already covers; the cover letter says so).
checkpatch() {
	local out rc=0 f rel opts=()
	if [ "$1" = -f ]; then
		opts=(-f)
		shift
	fi
	for f in "$@"; do
		rel=${f#"$NVMX_ROOT"/}
		out=$(cd "$NVMX_ROOT" && "$KSRC/scripts/checkpatch.pl" --strict --show-types \
			"${opts[@]}" "$rel" 2>&1) || rc=1
		grep -q '^total: 0 errors, 0 warnings, 0 checks' <<<"$out" || { echo "$out"; rc=1; }
		out=$(cd "$KSRC" && ./scripts/checkpatch.pl --strict --show-types \
			--ignore UNKNOWN_COMMIT_ID,FILE_PATH_CHANGES "${opts[@]}" "$f" 2>&1) || rc=1
		grep -q '^total: 0 errors, 0 warnings, 0 checks' <<<"$out" ||
			{ echo "in the tree: $out"; rc=1; }
	done
	return $rc
}
mapfile -t series < <(series_patches)
step "checkpatch --strict (${#series[@]} patches)" checkpatch "${series[@]}"
step "checkpatch --strict -f (test-bed modules)" checkpatch -f "$NVMX_ROOT"/testbed/*/nvmx_*.c
# The bench report: its parser on a made-up log.
step "bench-report.py --selftest" /usr/bin/python3 -B "$NVMX_ROOT/scripts/bench-report.py" --selftest
