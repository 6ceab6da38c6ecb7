package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/otawatch/otawatch/services/internal/consume"
	"github.com/otawatch/otawatch/services/internal/svc"
)

// ClickHouse error codes that say nothing about the rows of an insert: the
// server is busy, short of something, or the schema is not there (yet). An
// insert refused with one of these is retried as it is; any other refusal is
// searched for a poison row by bisection.
var transientCodes = map[int32]bool{
	3:   true, // UNEXPECTED_END_OF_FILE
	16:  true, // NO_SUCH_COLUMN_IN_TABLE: the schema, not the row
	47:  true, // UNKNOWN_IDENTIFIER
	60:  true, // UNKNOWN_TABLE
	81:  true, // UNKNOWN_DATABASE
	159: true, // TIMEOUT_EXCEEDED
	160: true, // TOO_SLOW
	164: true, // READONLY
	192: true, // UNKNOWN_USER
	193: true, // WRONG_PASSWORD
	194: true, // REQUIRED_PASSWORD
	202: true, // TOO_MANY_SIMULTANEOUS_QUERIES
	203: true, // NO_FREE_CONNECTION
	209: true, // SOCKET_TIMEOUT
	210: true, // NETWORK_ERROR
	236: true, // ABORTED
	241: true, // MEMORY_LIMIT_EXCEEDED
	242: true, // TABLE_IS_READ_ONLY
	243: true, // NOT_ENOUGH_SPACE
	252: true, // TOO_MANY_PARTS
	279: true, // ALL_CONNECTION_TRIES_FAILED
	425: true, // SYSTEM_ERROR
	497: true, // ACCESS_DENIED
	516: true, // AUTHENTICATION_FAILED
}

// rowFault reports whether an insert error may be caused by the rows sent:
// a value that does not fit its column, or a server exception outside
// transientCodes. Connection failures and the like are not.
func rowFault(err error) bool {
	var be *errBuild
	if errors.As(err, &be) {
		return true
	}
	var ex *clickhouse.Exception
	if errors.As(err, &ex) {
		return !transientCodes[ex.Code]
	}
	return false
}

// health tracks each stream loop's state and reports the worst to the
// shared registry under "projector".
type health struct {
	reg *svc.Health
	mu  sync.Mutex
	err map[string]error
}

func newHealth(reg *svc.Health) *health { return &health{reg: reg, err: map[string]error{}} }

func (h *health) set(stream string, err error) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.err[stream] = err
	var worst error
	for _, name := range sortedKeys(h.err) {
		if e := h.err[name]; e != nil {
			worst = fmt.Errorf("%s: %w", name, e)
			break
		}
	}
	h.reg.Set("projector", worst)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// writer inserts rows into ClickHouse, finding poison rows by bisection.
type writer struct {
	conn driver.Conn
	log  *slog.Logger
}

// insert writes rows into t. It returns the rows ClickHouse refused on their
// own, and an error when the insert failed for another reason (ClickHouse
// down or busy: the caller tries the batch again).
func insert[R any](ctx context.Context, w *writer, t *table[R], rows []*R) ([]consume.Rejection, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	err := t.send(ctx, w.conn, rows)
	if err == nil || !rowFault(err) {
		return nil, err
	}
	if len(rows) == 1 {
		w.log.Warn("clickhouse refused a row", "table", t.name, "stream_seq", t.seq(rows[0]), "err", err)
		return []consume.Rejection{{Seq: t.seq(rows[0]), Reason: fmt.Sprintf("clickhouse refused the row for %s: %v", t.name, err)}}, nil
	}
	// Some row is at fault: split until the refused ones are alone. The
	// halves that go in are in; only the poison rows come back.
	mid := len(rows) / 2
	left, err := insert(ctx, w, t, rows[:mid])
	if err != nil {
		return nil, err
	}
	right, err := insert(ctx, w, t, rows[mid:])
	return append(left, right...), err
}
