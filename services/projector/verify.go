package projector

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// verifyTable is a table as Verify reads it: its deduplicated view (FINAL),
// the key that names a row, a bucket expression that splits it into parts
// small enough to list, and the columns whose values make its checksum.
type verifyTable struct {
	name    string
	key     string
	bucket  string
	columns []string
}

// verifiedTables are the tables Verify compares (schema_migrations is left
// out: it records when, not what).
var verifiedTables = []verifyTable{
	{shadowEventsTable.name, "toString(stream_seq)", "intDiv(stream_seq, 16384)", shadowEventsTable.columnNames()},
	{deviceFirmwareTable.name, "concat(type_id, '/', device_id)", "cityHash64(type_id, device_id) % 64", deviceFirmwareTable.columnNames()},
	{deviceEventsTable.name, "toString(stream_seq)", "intDiv(stream_seq, 16384)", deviceEventsTable.columnNames()},
	{rolloutEventsTable.name, "toString(stream_seq)", "intDiv(stream_seq, 16384)", rolloutEventsTable.columnNames()},
	{alertsTable.name, "toString(stream_seq)", "intDiv(stream_seq, 16384)", alertsTable.columnNames()},
	{notificationsTable.name, "toString(stream_seq)", "intDiv(stream_seq, 16384)", notificationsTable.columnNames()},
}

// TableComparison is one table compared in two databases.
type TableComparison struct {
	Table string
	// RowsA and RowsB count the deduplicated rows (FINAL).
	RowsA, RowsB uint64
	// SumA and SumB are content checksums: the sum of a hash of every
	// column of every deduplicated row, so the order rows were written in
	// and copies not yet merged do not matter.
	SumA, SumB uint64
	// MissingA and MissingB say the table does not exist there.
	MissingA, MissingB bool
	// Differences name up to MaxDifferences rows that differ: only in A,
	// only in B, or with other values.
	Differences []string
}

// Same reports whether the table has the same content in both databases.
func (c TableComparison) Same() bool {
	return c.MissingA == c.MissingB && c.RowsA == c.RowsB && c.SumA == c.SumB
}

// MaxDifferences bounds the rows listed per differing table.
const MaxDifferences = 10

// Verify compares the projector's tables in databases a and b on conn's
// server, table by table: row counts and content checksums over the
// deduplicated view, and for a table that differs, which rows.
func Verify(ctx context.Context, conn driver.Conn, a, b string) ([]TableComparison, error) {
	var out []TableComparison
	for _, t := range verifiedTables {
		c := TableComparison{Table: t.name}
		var err error
		if c.MissingA, err = missing(ctx, conn, a, t.name); err != nil {
			return nil, err
		}
		if c.MissingB, err = missing(ctx, conn, b, t.name); err != nil {
			return nil, err
		}
		hash := "cityHash64(" + strings.Join(t.columns, ", ") + ")"
		sum := func(db string) (rows, sum uint64, err error) {
			q := fmt.Sprintf("SELECT count(), sum(%s) FROM %s.%s FINAL", hash, quoteIdent(db), t.name)
			if err := conn.QueryRow(ctx, q).Scan(&rows, &sum); err != nil {
				return 0, 0, fmt.Errorf("checksum %s.%s: %w", db, t.name, err)
			}
			return rows, sum, nil
		}
		if !c.MissingA {
			if c.RowsA, c.SumA, err = sum(a); err != nil {
				return nil, err
			}
		}
		if !c.MissingB {
			if c.RowsB, c.SumB, err = sum(b); err != nil {
				return nil, err
			}
		}
		if !c.Same() && !c.MissingA && !c.MissingB {
			if c.Differences, err = differences(ctx, conn, t, hash, a, b); err != nil {
				return nil, err
			}
		}
		out = append(out, c)
	}
	return out, nil
}

func missing(ctx context.Context, conn driver.Conn, db, table string) (bool, error) {
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND name = ?", db, table).Scan(&n); err != nil {
		return false, fmt.Errorf("look up %s.%s: %w", db, table, err)
	}
	return n == 0, nil
}

// differences narrows a difference down: bucket checksums first, then the
// rows of the first differing buckets.
func differences(ctx context.Context, conn driver.Conn, t verifyTable, hash, a, b string) ([]string, error) {
	q := tableQueries{conn: conn, t: t, hash: hash}
	ba, err := q.buckets(ctx, a)
	if err != nil {
		return nil, err
	}
	bb, err := q.buckets(ctx, b)
	if err != nil {
		return nil, err
	}
	var diff []uint64
	for k, v := range ba {
		if bb[k] != v {
			diff = append(diff, k)
		}
	}
	for k := range bb {
		if _, ok := ba[k]; !ok {
			diff = append(diff, k)
		}
	}
	sort.Slice(diff, func(i, j int) bool { return diff[i] < diff[j] })
	keyName := strings.TrimSuffix(strings.TrimPrefix(t.key, "toString("), ")")
	if strings.HasPrefix(t.key, "concat(") {
		keyName = "device"
	}
	var out []string
	for _, bucket := range diff {
		ra, err := q.rows(ctx, a, bucket)
		if err != nil {
			return nil, err
		}
		rb, err := q.rows(ctx, b, bucket)
		if err != nil {
			return nil, err
		}
		for _, k := range unionKeys(ra, rb) {
			ha, inA := ra[k]
			hb, inB := rb[k]
			switch {
			case inA && !inB:
				out = append(out, fmt.Sprintf("%s %s: only in %s", keyName, k, a))
			case inB && !inA:
				out = append(out, fmt.Sprintf("%s %s: only in %s", keyName, k, b))
			case ha != hb:
				out = append(out, fmt.Sprintf("%s %s: values differ", keyName, k))
			}
			if len(out) == MaxDifferences {
				return out, nil
			}
		}
	}
	return out, nil
}

// tableQueries reads one table's checksums from a database: per bucket
// (rows, sum of row hashes), and per row of a bucket.
type tableQueries struct {
	conn driver.Conn
	t    verifyTable
	hash string // the row hash expression
}

func (q tableQueries) buckets(ctx context.Context, db string) (map[uint64][2]uint64, error) {
	sql := fmt.Sprintf("SELECT toUInt64(%s) AS bucket, count(), sum(%s) FROM %s.%s FINAL GROUP BY bucket", q.t.bucket, q.hash, quoteIdent(db), q.t.name)
	rows, err := q.conn.Query(ctx, sql)
	if err != nil {
		return nil, fmt.Errorf("bucket checksums of %s.%s: %w", db, q.t.name, err)
	}
	defer rows.Close()
	m := map[uint64][2]uint64{}
	for rows.Next() {
		var k, n, s uint64
		if err := rows.Scan(&k, &n, &s); err != nil {
			return nil, err
		}
		m[k] = [2]uint64{n, s}
	}
	return m, rows.Err()
}

func (q tableQueries) rows(ctx context.Context, db string, bucket uint64) (map[string]uint64, error) {
	sql := fmt.Sprintf("SELECT %s AS k, %s FROM %s.%s FINAL WHERE toUInt64(%s) = ?", q.t.key, q.hash, quoteIdent(db), q.t.name, q.t.bucket)
	rows, err := q.conn.Query(ctx, sql, bucket)
	if err != nil {
		return nil, fmt.Errorf("rows of %s.%s: %w", db, q.t.name, err)
	}
	defer rows.Close()
	m := map[string]uint64{}
	for rows.Next() {
		var k string
		var h uint64
		if err := rows.Scan(&k, &h); err != nil {
			return nil, err
		}
		m[k] = h
	}
	return m, rows.Err()
}

// unionKeys is the keys of a and b, numeric keys in number order.
func unionKeys(a, b map[string]uint64) []string {
	var keys []string
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		if len(keys[i]) != len(keys[j]) { // numeric keys in number order
			return len(keys[i]) < len(keys[j])
		}
		return keys[i] < keys[j]
	})
	return keys
}
