# Sourced by the root test scripts: ok/ko/check print one
# "$CHECK_KIND NAME PASS|FAIL DETAIL" line per check and count them in
# $pass and $fail.
pass=0
fail=0
ok() { echo "$CHECK_KIND $1 PASS $2"; pass=$((pass + 1)); }
ko() { echo "$CHECK_KIND $1 FAIL $2"; fail=$((fail + 1)); }
# check NAME DETAIL COMMAND...: PASS when COMMAND succeeds.
check() {
	local name=$1 detail=$2
	shift 2
	if "$@"; then ok "$name" "$detail"; else ko "$name" "$detail"; fi
}
