# Shared by the benchmark scripts (sourced, not run).

# in_order R NAME...: the names, one a line, in their order in odd rounds
# R and reversed in even ones. A column that always ran second came out
# slower in an A/A run of scripts/bench-remote (the same build on both
# sides); alternating the order within rounds as well as the contenders
# across them leaves neither the first place nor the second to one of
# them.
in_order() {
	local r=$1; shift
	local a=("$@") i
	if [ $((r % 2)) = 1 ]; then
		printf '%s\n' "${a[@]}"
	else
		for ((i = ${#a[@]} - 1; i >= 0; i--)); do echo "${a[i]}"; done
	fi
}

# go_build OUT PKG: builds PKG into OUT as docs/deploy.md and the
# Dockerfile build the shipped binary: static (CGO_ENABLED=0) and with
# -trimpath, so that what is timed is what runs in production. A cgo
# build links libc through the dynamic loader, which every start of the
# binary pays, and `cowfs mount` starts it twice.
go_build() { CGO_ENABLED=0 go build -trimpath -o "$1" "$2"; }
