#!/usr/bin/env bash
# Captures icmpmon did not write (issue 20.0): the test suite of tcpdump,
# from Debian's tcpdump source package (fetched at test time into an ignored
# cache; its captures are BSD-licensed and not kept in this repository),
# several hundred real, truncated and deliberately damaged pcap and pcapng
# files. For each one:
#  - icmpmon reads it within 30 s and 256 MiB, and never panics (exit 0,
#    or 1 with a message);
#  - what tcpdump (libpcap) reads, icmpmon reads too (exit 0);
#  - the ICMP/ICMPv6 messages icmpmon sees (its rows, and the messages cut
#    before their header ends, counted as short-icmp errors) equal tshark's count of
#    frames whose first IP header carries ICMP directly, on the link types
#    icmpmon decodes (Ethernet, Linux cooked, raw IP, BSD loopback), with
#    IP defragmentation off (icmpmon writes a message's first fragment).
# Needs tcpdump, tshark and GNU time (tests/setup-debian.sh), and the
# network to Debian's archive.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
cache=$repo/tests/corpus/cache
mkdir -p "$cache/apt/lists/partial" "$cache/apt/cache/archives/partial"

echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main" \
	>"$cache/apt/sources.list"
APT=(-o "Dir::Etc::sourcelist=$cache/apt/sources.list" -o "Dir::Etc::sourceparts=-"
	-o "Dir::State::Lists=$cache/apt/lists" -o "Dir::Cache=$cache/apt/cache"
	-o "Acquire::Languages=none" -o "APT::Sandbox::User=root")
if ! ls "$cache"/tcpdump_*.orig.tar.gz >/dev/null 2>&1; then
	apt-get "${APT[@]}" update -q >/dev/null || exit 1
	(cd "$cache" && apt-get "${APT[@]}" source --download-only -q tcpdump >/dev/null) || exit 1
fi
files=$cache/files
if [ ! -d "$files" ]; then
	mkdir -p "$files.tmp"
	tar -xzf "$cache"/tcpdump_*.orig.tar.gz -C "$files.tmp" --wildcards '*/tests/*.pcap*' || exit 1
	find "$files.tmp" -type f \( -name '*.pcap' -o -name '*.pcapng' \) -exec mv -t "$files.tmp" {} +
	find "$files.tmp" -mindepth 1 -type d -exec rm -rf {} +
	mv "$files.tmp" "$files"
fi

(cd "$repo" && cargo build --release --locked -q) || exit 1
bin=$repo/target/release/icmpmon
work=$(mktemp -d /tmp/icmpmon-corpus.XXXXXX)
trap 'rm -rf "$work"' EXIT

# tshark: frames whose link layer icmpmon decodes (or none: raw IPv4/IPv6
# link types) and whose first IP
# header (after VLAN tags, IPv6 extension headers) carries ICMP/ICMPv6.
icmp_re='^(eth:ethertype:(vlan:ethertype:)*|sll:ethertype:|sll2?:|raw:|null:|loop:)?(ip|ipv6(:ipv6\.(hopopts|routing|fraghdr|dstopts))*):icmp(v6)?(:|$)'

total=0 read_ok=0 refused=0 compared=0 fail=0
for f in "$files"/*; do
	total=$((total + 1))
	name=${f##*/}
	/usr/bin/time -f '%M' -o "$work/rss" timeout 30 \
		"$bin" --source "pcap:$f" --csv "$work/rows.csv" --no-attribution \
		>/dev/null 2>"$work/err"
	rc=$?
	rss=$(tail -n 1 "$work/rss" 2>/dev/null)
	case $rc in
	0) read_ok=$((read_ok + 1)) ;;
	1) refused=$((refused + 1)) ;;
	*)
		echo "CORPUS $name FAIL exit $rc: $(tail -n 3 "$work/err" | tr '\n' ' ')"
		fail=$((fail + 1))
		continue
		;;
	esac
	if [ "${rss:-0}" -gt $((256 * 1024)) ]; then
		echo "CORPUS $name FAIL peak RSS ${rss} KiB"
		fail=$((fail + 1))
	fi
	if tcpdump -nn -r "$f" >/dev/null 2>&1; then
		if [ "$rc" != 0 ]; then
			echo "CORPUS $name FAIL tcpdump reads it, icmpmon refuses it: $(grep -v summary "$work/err" | tail -n 2 | tr '\n' ' ')"
			fail=$((fail + 1))
			continue
		fi
	else
		# Refused by libpcap too (or damaged further on): nothing to compare.
		continue
	fi
	want=$(timeout 60 tshark -n -r "$f" -o ip.defragment:FALSE -o ipv6.defragment:FALSE \
		-T fields -e frame.protocols 2>/dev/null | grep -Ec "$icmp_re")
	# An ICMP message icmpmon sees is a row, or, cut before its 8-byte
	# header ends, a counted "short-icmp" parse error (tshark shows it
	# as a malformed ICMP frame).
	rows=$(($(wc -l <"$work/rows.csv") - 1))
	[ "$rows" -lt 0 ] && rows=0
	short=$(sed -n 's/.*parse error short-icmp: \([0-9]*\).*/\1/p' "$work/err")
	got=$((rows + ${short:-0}))
	compared=$((compared + 1))
	if [ "$got" != "$want" ]; then
		echo "CORPUS $name FAIL icmpmon $got ICMP rows, tshark $want"
		fail=$((fail + 1))
	fi
done
echo "corpus: $total captures: $read_ok read, $refused refused (by libpcap too), $compared compared with tshark"
echo "corpus: $((total - fail)) passed, $fail failed"
[ "$fail" = 0 ]
