// Package chschema embeds otawatch's ClickHouse DDL: migrations.sql creates
// the table that records applied versions, and the numbered files
// (NNNN_name.sql) are the schema versions, applied in order by the projector
// at start. Statements are idempotent (IF NOT EXISTS) and use no database
// name: they run in the configured database.
package chschema

import (
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
)

//go:embed *.sql
var files embed.FS

// Migration is one numbered schema file.
type Migration struct {
	// Version is the file's number.
	Version uint32
	// Name is the file name, e.g. "0001_tables.sql".
	Name string
	// Statements are the file's statements, in order, without the
	// terminating semicolons and comments.
	Statements []string
}

// Bootstrap returns the statements that create the schema_migrations table.
func Bootstrap() []string {
	b, err := files.ReadFile("migrations.sql")
	if err != nil {
		panic(fmt.Sprintf("chschema: embedded migrations.sql: %v", err)) // the file is compiled in
	}
	return Split(string(b))
}

// Migrations returns the numbered files in version order. It fails on a file
// name without a number or on two files with one number, so a bad file is
// caught by the package's test, not at a user's start.
func Migrations() ([]Migration, error) {
	names, err := fs.Glob(files, "[0-9]*.sql")
	if err != nil {
		return nil, err
	}
	out := make([]Migration, 0, len(names))
	seen := map[uint32]string{}
	for _, name := range names {
		num, _, ok := strings.Cut(name, "_")
		if !ok {
			return nil, fmt.Errorf("schema file %s: name is not NNNN_name.sql", name)
		}
		v, err := strconv.ParseUint(num, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("schema file %s: version %q is not a number", name, num)
		}
		if other, dup := seen[uint32(v)]; dup {
			return nil, fmt.Errorf("schema files %s and %s have the same version %d", other, name, v)
		}
		seen[uint32(v)] = name
		b, err := files.ReadFile(name)
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: uint32(v), Name: name, Statements: Split(string(b))})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// Split cuts a SQL file into statements: "--" comment lines are dropped and
// a statement ends with a ";" at the end of a line. (The native protocol
// takes one statement per query.)
func Split(sql string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(sql, "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "--") {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(trimmed, ";") {
			if s := strings.TrimSuffix(strings.TrimSpace(cur.String()), ";"); s != "" {
				out = append(out, s)
			}
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out
}
