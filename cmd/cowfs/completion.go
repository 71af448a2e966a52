package main

import (
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/cow/statedir"
)

// Dynamic completion (cowfs completion bash|zsh|fish installs it): cobra
// runs the hidden "cowfs __complete ARGS..." at each TAB, which calls
// these with the arguments so far.

// registerCompletions sets how each command's arguments complete.
func registerCompletions(root *cobra.Command, g *globals) {
	dirs := func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return nil, cobra.ShellCompDirectiveFilterDirs
	}
	for path, f := range map[string]cobra.CompletionFunc{
		"mount":          dirs,
		"snapshot":       completeMounts,
		"status":         completeMounts,
		"unmount":        completeMounts,
		"restore":        completeSnapshots(g, 1, true, true),
		"verify":         completeSnapshots(g, 1, true, false),
		"push":           completeSnapshots(g, 1, false, false),
		"snapshots rm":   completeSnapshots(g, 1, true, false),
		"snapshots diff": completeSnapshots(g, 2, true, false),
	} {
		c, _, err := root.Find(strings.Fields(path))
		if err != nil || c == root {
			panic("completion for a command that does not exist: " + path)
		}
		c.ValidArgsFunction = f
	}
}

// completeMounts completes the first argument with the cowfs mounts this
// machine has (whoever's state they are of).
func completeMounts(_ *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []string
	for _, m := range cowfsMounts() {
		if strings.HasPrefix(m.dir, prefix) {
			out = append(out, m.dir)
		}
	}
	sort.Strings(out)
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeSnapshots returns a completion function that completes the
// first n arguments with snapshot names of the state (with the pushed
// ones, as pushed/NAME, if pushed is set); after them, directories if
// dirAfter is set, else nothing.
func completeSnapshots(g *globals, n int, pushed, dirAfter bool) cobra.CompletionFunc {
	return func(_ *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
		if len(args) >= n {
			if dirAfter {
				return nil, cobra.ShellCompDirectiveFilterDirs
			}
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return snapshotNames(g.state, prefix, pushed), cobra.ShellCompDirectiveNoFileComp
	}
}

// snapshotNames lists the state's snapshot names that start with prefix;
// none if the state cannot be read (a completion says nothing).
func snapshotNames(state, prefix string, pushed bool) []string {
	// refs.Open would make a state directory that does not exist.
	if _, err := os.Stat(statedir.RefsDir(state)); err != nil {
		return nil
	}
	d, err := refs.Open(statedir.RefsDir(state))
	if err != nil {
		return nil
	}
	var out []string
	list, _ := d.List()
	for _, s := range list {
		out = append(out, s.Name)
	}
	if pushed {
		list, _ = d.Pushed().List()
		for _, s := range list {
			out = append(out, refs.PushedPrefix+s.Name)
		}
	}
	var match []string
	for _, n := range out {
		if strings.HasPrefix(n, prefix) {
			match = append(match, n)
		}
	}
	sort.Strings(match)
	return match
}
