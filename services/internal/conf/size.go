package conf

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ByteSize is a size in bytes. A configuration writes it as a plain number
// of bytes or with a unit: B, KB, MB, GB, TB (powers of 1000) or KiB, MiB,
// GiB, TiB (powers of 1024), case-insensitive, e.g. 512MiB, 10GiB, 1GB.
type ByteSize int64

var sizeUnits = map[string]int64{
	"":    1,
	"b":   1,
	"kb":  1e3,
	"mb":  1e6,
	"gb":  1e9,
	"tb":  1e12,
	"kib": 1 << 10,
	"mib": 1 << 20,
	"gib": 1 << 30,
	"tib": 1 << 40,
}

// ParseByteSize reads a size: an integer, optionally followed by a unit
// (see ByteSize). "-1" is accepted as JetStream's "unlimited"; other
// negative sizes are read as written, for Validate to refuse.
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	i := 0
	if i < len(t) && t[i] == '-' {
		i++
	}
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := sizeUnits[unit]
	if num == "" || num == "-" || !ok {
		return 0, fmt.Errorf("%q is not a size (bytes, or a number with B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)", s)
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n > math.MaxInt64/mult || n < math.MinInt64/mult {
		return 0, fmt.Errorf("%q is too large a size", s)
	}
	return ByteSize(n * mult), nil
}

// String writes the size with the largest binary unit that divides it.
func (b ByteSize) String() string {
	for _, u := range []string{"TiB", "GiB", "MiB", "KiB"} {
		m := sizeUnits[strings.ToLower(u)]
		if b != 0 && b%ByteSize(m) == 0 {
			return strconv.FormatInt(int64(b)/m, 10) + u
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// UnmarshalText parses the environment's form, the same as the file's.
func (b *ByteSize) UnmarshalText(text []byte) error {
	v, err := ParseByteSize(string(text))
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// UnmarshalYAML parses a scalar: a plain integer or a size with a unit.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a size must be a scalar, like 10GiB", n.Line)
	}
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %v", n.Line, err)
	}
	*b = v
	return nil
}

// MarshalYAML writes the size as String does.
func (b ByteSize) MarshalYAML() (any, error) { return b.String(), nil }

// ByteSizes are sizes by name, e.g. a byte limit per stream. In the
// environment they are written "NAME=SIZE,NAME=SIZE" (SHADOW=50GiB,REJECTED=1GiB).
type ByteSizes map[string]ByteSize

// UnmarshalText parses the environment's form, NAME=SIZE pairs separated
// by commas; it replaces what the file set.
func (m *ByteSizes) UnmarshalText(text []byte) error {
	out := ByteSizes{}
	for _, part := range strings.Split(string(text), ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, size, ok := strings.Cut(part, "=")
		if !ok || strings.TrimSpace(name) == "" {
			return fmt.Errorf("%q is not NAME=SIZE", part)
		}
		v, err := ParseByteSize(size)
		if err != nil {
			return fmt.Errorf("%s: %w", strings.TrimSpace(name), err)
		}
		out[strings.TrimSpace(name)] = v
	}
	*m = out
	return nil
}

// Names returns the names, sorted, so problems are reported in a stable
// order.
func (m ByteSizes) Names() []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
