package rollout

import (
	"strings"
	"testing"
	"time"

	"github.com/otawatch/otawatch/events"
	"github.com/otawatch/otawatch/rules"
)

func TestCELGate(t *testing.T) {
	tests := []struct {
		name   string
		expr   string
		passed bool
		reason string
	}{
		{"holds", "rollout.waveCompleted >= 9 && fleet.successRate >= 0.9", true, "cel gate holds"},
		{"false holds the wave", "rollout.waveFailed == 0", false, "cel gate: rollout.waveFailed == 0 is false"},
		{"an evaluation error holds the wave", "int(fleet.devices) / 0 == 0", false, "division by zero"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := testSpec(20)
			spec.WaveSize = 10
			h := newHarness(t, spec)
			h.mustCmd(CmdStart, at(0))
			h.decide(at(0))
			h.send(at(time.Second))
			h.wave(1, 0, 9, events.StatusCompleted, at(time.Minute))
			h.wave(1, 9, 1, events.StatusFailed, at(time.Minute))
			cond, err := rules.CompileCondition("gate", tt.expr)
			if err != nil {
				t.Fatal(err)
			}
			gate := CELGate(cond, nil, h.fleet)
			g := Gate(h.job, 1, Progress(h.job, 1, h.fleet, at(time.Minute)), at(time.Minute), gate)
			if g.Passed != tt.passed || !strings.Contains(g.Reason, tt.reason) || g.CEL == nil || *g.CEL != tt.passed {
				t.Fatalf("gate %+v, want passed=%v with %q", g, tt.passed, tt.reason)
			}
			want := ""
			if tt.passed {
				want = "wave_gated,wave_completed,wave_started"
			}
			p := Decide(h.job, h.fleet, at(time.Minute), gate)
			var got []string
			for _, pe := range p {
				got = append(got, events.RolloutEventName(pe.Type))
			}
			if strings.Join(got, ",") != want {
				t.Errorf("decided %q, want %q", strings.Join(got, ","), want)
			}
		})
	}
	t.Run("a gate that does not compile is refused at create", func(t *testing.T) {
		var def Config
		def.SetDefaults()
		spec := testSpec(1)
		spec.CELGate = "fleet.successRate"
		_, err := NormalizeSpec(spec, def, checkCEL)
		if err == nil || !strings.Contains(err.Error(), "cel gate:") || !strings.Contains(err.Error(), "bool") {
			t.Errorf("got %v, want a refusal naming the type", err)
		}
	})
}
