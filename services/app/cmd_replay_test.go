package app

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/internal/testutil"
	"github.com/otawatch/otawatch/services/natsd"
)

// TestReplayCommand: "replay projector" reads the embedded server's store
// of a stopped otawatch into a database, with a progress line and a
// summary; "replay verify" says two such databases are identical, and that
// a partial one differs (exit code 1).
func TestReplayCommand(t *testing.T) {
	ch := testutil.StartClickHouse(t)
	dataDir := t.TempDir()
	const reports = 300
	{
		// An otawatch that ran and stopped: its log is on disk.
		srv, err := natsd.Start(natsd.Config{StoreDir: filepath.Join(dataDir, "jetstream"), Listen: "127.0.0.1:-1", Auth: natsd.Auth{AnonymousNATS: true}})
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(srv.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
			t.Fatal(err)
		}
		t0 := time.Date(2025, 7, 22, 11, 0, 0, 0, time.UTC)
		for i := 0; i < reports; i++ {
			dev := fmt.Sprintf("dev-%d", i%10)
			fw := events.Firmware{Version: "4.2.1", Timestamp: t0.Add(time.Duration(i) * time.Second), Status: events.StatusCompleted, UpdateDuration: 3}
			id := events.ReportEventID("gw", dev, fw)
			ev, _ := events.New(id, events.SourceBridge, events.TypeShadowReported, dev, fw.Timestamp,
				events.ShadowReportedData{TypeID: "gw", DeviceID: dev, Firmware: fw})
			b, _ := ev.Marshal()
			if _, err := js.Publish(ctx, events.ShadowReportedSubject("gw", dev), b, jetstream.WithMsgID(id)); err != nil {
				t.Fatal(err)
			}
		}
		cancel()
		nc.Close()
		srv.Shutdown()
	}
	environ := []string{"OTAWATCH_DATA_DIR=" + dataDir, "OTAWATCH_CLICKHOUSE_ADDR=" + ch.Addr}
	run := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := Main(context.Background(), args, &Env{Stdout: &out, Stderr: &errOut, Environ: environ})
		return code, out.String(), errOut.String()
	}

	tests := []struct {
		name     string
		args     []string
		code     int
		stdout   []string
		stderr   []string
		noStdout []string
	}{
		{"full replay", []string{"replay", "projector", "--database", "rebuild_a"}, 0,
			[]string{fmt.Sprintf("replayed %d events", reports), "SHADOW"}, []string{"replay: into database rebuild_a"}, nil},
		{"second full replay", []string{"replay", "projector", "--database", "rebuild_b", "--streams", "shadow"}, 0,
			[]string{fmt.Sprintf("replayed %d events", reports)}, nil, nil},
		{"partial replay", []string{"replay", "projector", "--database", "partial", "--from-seq", "101"}, 0,
			[]string{fmt.Sprintf("replayed %d events", reports-100)}, nil, nil},
		{"verify identical", []string{"replay", "verify", "--database", "rebuild_a", "--database", "rebuild_b"}, 0,
			[]string{"rebuild_a and rebuild_b are identical", "shadow_events"}, nil, []string{"DIFFERENT"}},
		{"verify different", []string{"replay", "verify", "--database", "rebuild_a", "--database", "partial"}, 1,
			[]string{"DIFFERENT", "shadow_events differs:", "stream_seq 1: only in rebuild_a"}, []string{"differ in 1 table"}, nil},
		{"verify needs two databases", []string{"replay", "verify", "--database", "rebuild_a"}, 2, nil, []string{"exactly two"}, nil},
		{"unknown target", []string{"replay", "bridge"}, 2, nil, []string{"unknown replay target"}, nil},
		{"seq and time", []string{"replay", "projector", "--from-seq", "3", "--from-time", "2025-01-01"}, 2, nil, []string{"exclude each other"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := run(tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, out, errOut)
			}
			for _, s := range tt.stdout {
				if !strings.Contains(out, s) {
					t.Errorf("stdout lacks %q:\n%s", s, out)
				}
			}
			for _, s := range tt.noStdout {
				if strings.Contains(out, s) {
					t.Errorf("stdout has %q:\n%s", s, out)
				}
			}
			for _, s := range tt.stderr {
				if !strings.Contains(errOut, s) {
					t.Errorf("stderr lacks %q:\n%s", s, errOut)
				}
			}
		})
	}
}
