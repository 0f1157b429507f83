# Sourced by fetch-kernel.sh and build-module.sh.
#
# apt_suite_lists CACHE SUITE: a private apt sources list and lists
# directory for one Debian suite under CACHE/apt/SUITE (trixie-backports
# also sees trixie, whose packages its own depend on), refreshed when older
# than an hour. Sets APT_OPTS for apt-get / apt-cache. The host's own
# apt configuration and lists are never changed.
apt_suite_lists() {
	local cache=$1 suite=$2 dir s
	dir="$cache/apt/$suite"
	mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
	{
		for s in $suite $( [ "$suite" = trixie-backports ] && echo trixie ); do
			echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $s main"
		done
	} >"$dir/sources.list"
	APT_OPTS=(-o "Dir::Etc::sourcelist=$dir/sources.list" -o "Dir::Etc::sourceparts=-"
		-o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache"
		-o "Acquire::Check-Valid-Until=false" -o "Acquire::Languages=none")
	if [ -z "$(find "$dir/lists" -maxdepth 1 -name '*Packages*' -mmin -60 2>/dev/null)" ]; then
		apt-get "${APT_OPTS[@]}" update -q >&2
	fi
}
