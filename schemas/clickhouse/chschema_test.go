package chschema

import (
	"strings"
	"testing"
)

func TestMigrations(t *testing.T) {
	ms, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 {
		t.Fatal("no numbered schema files embedded")
	}
	for i, m := range ms {
		if i > 0 && m.Version <= ms[i-1].Version {
			t.Errorf("%s: version %d not after %d", m.Name, m.Version, ms[i-1].Version)
		}
		if len(m.Statements) == 0 {
			t.Errorf("%s: no statements", m.Name)
		}
		for _, s := range m.Statements {
			// Statements run again after a crash before the version is
			// recorded, so each must be idempotent.
			if strings.HasPrefix(s, "CREATE") && !strings.Contains(s, "IF NOT EXISTS") {
				t.Errorf("%s: statement is not idempotent: %.60s", m.Name, s)
			}
			if strings.Contains(s, "DateTime64") || strings.Contains(s, "LowCardinality") {
				t.Errorf("%s: uses a type ClickHouse 18.16 lacks: %.60s", m.Name, s)
			}
		}
	}
	if got := Bootstrap(); len(got) != 1 || !strings.Contains(got[0], "schema_migrations") {
		t.Errorf("Bootstrap() = %q, want the schema_migrations table", got)
	}
}

func TestSplit(t *testing.T) {
	tests := []struct {
		name string
		sql  string
		want []string
	}{
		{"empty", "", nil},
		{"comments only", "-- a\n  -- b\n", nil},
		{"two statements", "-- c\nCREATE TABLE a (x UInt8)\nENGINE = Log;\n\nSELECT 1;\n", []string{"CREATE TABLE a (x UInt8)\nENGINE = Log", "SELECT 1"}},
		{"no final semicolon", "SELECT 1;\nSELECT 2", []string{"SELECT 1", "SELECT 2"}},
		{"semicolon inside a line", "SELECT ';' AS x;\n", []string{"SELECT ';' AS x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Split(tt.sql)
			if strings.Join(got, "|") != strings.Join(tt.want, "|") || len(got) != len(tt.want) {
				t.Errorf("Split(%q) = %q, want %q", tt.sql, got, tt.want)
			}
		})
	}
}
