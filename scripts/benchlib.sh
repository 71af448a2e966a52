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
