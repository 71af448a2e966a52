package main

import (
	"fmt"
	"math"
	"math/big"
	"strings"
)

// sizeHelp is what every size flag's help says of its unit.
const sizeHelp = "K, M, G, T are powers of 1024, as KiB, MiB, GiB, TiB; 1.5G is allowed"

// sizeUnits are the multipliers parseSize knows, each with and without
// "iB" ("M" and "MiB"). Powers of 1024, as du -h, free and fstab's
// tmpfs size= read them: a cache of "20G" is 20 GiB.
var sizeUnits = map[string]int64{
	"": 1, "B": 1,
	"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50,
}

// parseSize reads a size: 4096, 10k, 512M, 512MiB, 1.5G, 20GiB (K, M, G,
// T, P are powers of 1024; case does not matter; a fraction is rounded
// down to whole bytes). "" is 0. KB, MB, GB are refused: some tools read
// them as powers of 1000, others of 1024. A size past what an int64 holds
// is an error, not a wrapped-around number.
func parseSize(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		i = len(s)
	}
	num, unit := s[:i], strings.ToUpper(strings.TrimSpace(s[i:]))
	switch {
	case len(unit) == 3 && strings.HasSuffix(unit, "IB"):
		unit = unit[:1]
	case len(unit) == 2 && unit[1] == 'B' && unit[0] != 'I':
		return 0, fmt.Errorf("%q: write %s or %siB (powers of 1024), not %s, which some tools read as powers of 1000", s, unit[:1], unit[:1], unit)
	}
	mult, ok := sizeUnits[unit]
	if !ok || num == "" || strings.Count(num, ".") > 1 || num == "." {
		return 0, fmt.Errorf("%q is not a size (like 4096, 512M, 1.5G or 20GiB)", s)
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("%q is not a size (like 4096, 512M, 1.5G or 20GiB)", s)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	n := new(big.Int).Quo(r.Num(), r.Denom())
	if !n.IsInt64() {
		return 0, fmt.Errorf("%q is too large: at most %dT", s, int64(math.MaxInt64>>40))
	}
	return n.Int64(), nil
}

// humanBytes prints a size the way parseSize reads it back: "512 B",
// "1.5 KiB", "20.0 GiB" (one decimal, powers of 1024). Every size cowfs
// prints goes through it.
func humanBytes(n int64) string {
	const units = "KMGTPE"
	if n < 1<<10 && n > -1<<10 {
		return fmt.Sprintf("%d B", n)
	}
	f, u := float64(n)/(1<<10), 0
	for math.Abs(f) >= 1<<10 && u < len(units)-1 {
		f /= 1 << 10
		u++
	}
	return fmt.Sprintf("%.1f %ciB", f, units[u])
}
