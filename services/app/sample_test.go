package app

import (
	"os"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestSampleConfig keeps deploy/otawatch.yaml honest: it is valid, and it
// names every key the configuration has, so a new key cannot go undocumented.
func TestSampleConfig(t *testing.T) {
	const sample = "../../deploy/otawatch.yaml"
	if _, err := LoadConfig(sample, nil); err != nil {
		t.Fatalf("the shipped sample does not load:\n%v", err)
	}
	defaults, err := LoadConfig("", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := yaml.Marshal(defaults)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(sample)
	if err != nil {
		t.Fatal(err)
	}
	var all, documented yaml.Node
	if err := yaml.Unmarshal(b, &all); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &documented); err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, k := range keyPaths(&documented, "") {
		have[k] = true
	}
	for _, k := range keyPaths(&all, "") {
		if !have[k] {
			t.Errorf("deploy/otawatch.yaml lacks key %s", k)
		}
	}
}

func keyPaths(n *yaml.Node, prefix string) []string {
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		return keyPaths(n.Content[0], prefix)
	}
	if n.Kind != yaml.MappingNode {
		return nil
	}
	var out []string
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := strings.TrimPrefix(prefix+"."+n.Content[i].Value, ".")
		out = append(out, k)
		out = append(out, keyPaths(n.Content[i+1], k)...)
	}
	return out
}
