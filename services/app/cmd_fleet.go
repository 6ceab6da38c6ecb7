package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/services/api"
	"github.com/otawatch/otawatch/services/internal/fleet"
)

const fleetUsage = `usage:
  otawatch fleet at TIME [-c FILE] [--nats URL] [--json] [--device TYPE/ID] [--no-snapshots]
    TIME is RFC 3339 (2025-07-22T11:30:00Z) or a date (2025-07-22, midnight UTC), not in the future`

// cmdFleet is "otawatch fleet at TIME": the fleet as the live api showed
// it at TIME, folded from the log by the api's own read model
// (api.FoldAt), from the newest snapshot at or before TIME.
func cmdFleet(ctx context.Context, env *Env, args []string) error {
	if len(args) == 0 || args[0] != "at" {
		fmt.Fprintln(env.Stderr, fleetUsage)
		if len(args) == 0 {
			return fmt.Errorf("%w: fleet what? (at)", ErrUsage)
		}
		return fmt.Errorf("%w: unknown fleet command %q", ErrUsage, args[0])
	}
	fs := newFlagSet(env, "fleet at")
	var (
		lf          = addLogFlags(fs, "nats.*, http.snapshots.bucket")
		asJSON      = fs.Bool("json", false, "print the state as JSON (GET /api/v1/fleet/state's shape, with every device)")
		device      = fs.String("device", "", "print only this device (`TYPE/ID`), as GET /api/v1/devices/{typeId}/{deviceId}?at= does")
		noSnapshots = fs.Bool("no-snapshots", false, "fold the log from its start, ignoring the snapshot index")
	)
	pos, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: fleet at needs one TIME", ErrUsage)
	}
	at, err := parseTime(pos[0])
	if err != nil {
		return fmt.Errorf("%w: TIME: %v", ErrUsage, err)
	}
	if err := api.CheckInstant(at, time.Now()); err != nil {
		return fmt.Errorf("%w: TIME: %v", ErrUsage, err)
	}
	var ref events.DeviceRef
	if *device != "" {
		t, d, ok := strings.Cut(*device, "/")
		if !ok {
			return fmt.Errorf("%w: --device %q is not TYPE/ID", ErrUsage, *device)
		}
		for _, c := range []struct{ what, id string }{{"--device type", t}, {"--device id", d}} {
			if err := events.ValidateID(c.what, c.id); err != nil {
				return fmt.Errorf("%w: %v", ErrUsage, err)
			}
		}
		ref = events.DeviceRef{TypeID: t, DeviceID: d}
	}
	cfg, nc, js, err := lf.connect(env, "otawatch fleet")
	if err != nil {
		return err
	}
	defer nc.Close()
	o := api.PastOptions{Bucket: cfg.HTTP.Snapshots.Bucket, Progress: func(s string) { fmt.Fprintln(env.Stderr, s) }}
	if *noSnapshots {
		o.Bucket = ""
	}
	p, err := api.FoldAt(ctx, js, at, o)
	if err != nil {
		return err
	}
	printFoldStats(env.Stderr, p)

	if *device != "" {
		d, ok := p.Device(ref.TypeID, ref.DeviceID)
		if !ok {
			return fmt.Errorf("device %s was unknown at %s", ref, at.UTC().Format(time.RFC3339Nano))
		}
		if *asJSON {
			return writeIndentedJSON(env.Stdout, d)
		}
		printDevice(env.Stdout, d)
		return nil
	}
	st := p.State(true)
	if *asJSON {
		return writeIndentedJSON(env.Stdout, st)
	}
	printFleetState(env.Stdout, st)
	return nil
}

// printFoldStats says on stderr how the answer was computed.
func printFoldStats(w io.Writer, p *api.Past) {
	fmt.Fprintf(w, "fleet at %s: folded %d events from %s in %s\n", p.At().UTC().Format(time.RFC3339Nano), p.Stats.Events,
		p.Stats.FromText(), p.Stats.Elapsed.Round(time.Millisecond))
	for _, warn := range p.Stats.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
}

func writeIndentedJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printFleetState prints the state as tables: the metrics, the versions,
// the rollouts with their waves, the devices not online, the alerts, and
// every device.
func printFleetState(w io.Writer, st api.FleetState) {
	m := st.Fleet
	fmt.Fprintf(w, "fleet at %s (SHADOW seq %d, ROLLOUT seq %d, ALERTS seq %d)\n", st.At.UTC().Format(time.RFC3339Nano),
		st.Streams[events.StreamShadow], st.Streams[events.StreamRollout], st.Streams[events.StreamAlerts])
	fmt.Fprintf(w, "%d devices: %d online, %d potentially offline, %d offline; online by status: %d in progress, %d completed, %d failed; success rate %.1f%%; update duration avg %.0fs, p95 %.0fs\n",
		m.Devices, m.Online, m.PotentiallyOffline, m.Offline, m.InProgress, m.Completed, m.Failed, 100*m.SuccessRate, m.AvgDuration, m.P95Duration)

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "\nVERSION\tDEVICES\t\n")
	for _, v := range st.Versions {
		mark := ""
		if v.Target {
			mark = "target of the active job"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\n", v.Version, v.Devices, mark)
	}
	tw.Flush()

	fmt.Fprintf(w, "\nROLLOUTS running or paused: %d\n", len(st.Rollouts))
	for _, r := range st.Rollouts {
		target := ""
		if r.Target != nil {
			target = r.Target.Version
		}
		fmt.Fprintf(w, "%s  %s  wave %d of %d  target %s", r.JobID, r.Status, r.Wave, r.WaveCount, target)
		if r.Reason != "" {
			fmt.Fprintf(w, "  (%s)", r.Reason)
		}
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "WAVE\tTARGETED\tQUEUED\tPENDING\tIN PROGRESS\tCOMPLETED\tFAILED\tTIMED OUT\tOFFLINE\tSUCCESS\t\n")
		for _, x := range r.Waves {
			fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.1f%%\t\n", x.Wave, x.Targeted, x.Queued, x.Pending, x.InProgress,
				x.Completed, x.Failed, x.TimedOut, x.Offline, 100*x.SuccessRate)
		}
		tw.Flush()
	}

	printDevices(w, "POTENTIALLY OFFLINE", st.PotentiallyOffline)
	printDevices(w, "OFFLINE (by the broker)", st.Offline)

	fmt.Fprintf(w, "\nALERTS active: %d\n", len(st.Alerts))
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(st.Alerts) > 0 {
		fmt.Fprintf(tw, "SINCE\tSEVERITY\tRULE\tKEY\tMESSAGE\n")
	}
	for _, a := range st.Alerts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.Since.UTC().Format(time.RFC3339), a.Severity, a.Rule, a.Key, a.Message)
	}
	tw.Flush()

	printDevices(w, "DEVICES", st.Devices)
}

// printDevices prints a titled table of devices.
func printDevices(w io.Writer, title string, list []fleet.Device) {
	fmt.Fprintf(w, "\n%s: %d\n", title, len(list))
	if len(list) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "DEVICE\tVERSION\tSTATUS\tERROR\tLAST SEEN\tONLINE\tJOB\tWAVE\tJOB STATUS\n")
	for _, d := range list {
		fmt.Fprintf(tw, "%s/%s\t%s\t%s\t%s\t%s\t%t\t%s\t%s\t%s\n", d.TypeID, d.DeviceID, d.Version, d.Status, d.ErrorCode,
			timeOrDash(d.LastSeen), d.Online, d.JobID, waveOrDash(d.Wave), d.JobStatus)
	}
	tw.Flush()
}

// printDevice prints one device's state, a field a line.
func printDevice(w io.Writer, d fleet.Device) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	target := ""
	if d.Target != nil {
		target = d.Target.Version
	}
	for _, kv := range [][2]string{
		{"device", d.TypeID + "/" + d.DeviceID},
		{"version", d.Version}, {"status", d.Status}, {"previous version", d.PreviousVersion},
		{"error code", d.ErrorCode}, {"update duration", fmt.Sprintf("%gs", d.Duration)},
		{"last seen", timeOrDash(d.LastSeen)}, {"device time", timeOrDash(d.DeviceTime)}, {"reports", fmt.Sprint(d.Reports)},
		{"online", fmt.Sprint(d.Online)}, {"presence", d.Presence},
		{"job", d.JobID}, {"wave", waveOrDash(d.Wave)}, {"target", target}, {"desired at", timeOrDash(d.DesiredAt)},
		{"job status", d.JobStatus},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
	}
	tw.Flush()
}

func timeOrDash(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func waveOrDash(n int) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprint(n)
}
