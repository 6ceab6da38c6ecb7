package rules

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func TestCompileCondition(t *testing.T) {
	tests := []struct {
		name    string
		expr    string
		wantErr string // substring; empty means it compiles
		wantPos Position
	}{
		{name: "comparison", expr: `event.status == "failed"`},
		{name: "numbers across int and double", expr: `fleet.finished >= 20 && fleet.successRate < 0.95`},
		{name: "timestamps and durations", expr: `now - device.lastSeen > duration("10m")`},
		{name: "has", expr: `has(event.errorCode) && event.errorCode != ""`},
		{name: "optional", expr: `event.?errorCode.orValue("") == "E_FLASH"`},
		{name: "syntax error", expr: `event.status ==`, wantErr: "Syntax error", wantPos: Position{1, 16}},
		{name: "syntax error on line 2", expr: "event.status == \"failed\" &&\n  (device.online", wantErr: "Syntax error", wantPos: Position{2, 17}},
		{name: "dyn result is not bool", expr: `event.status`, wantErr: "has type dyn, want bool", wantPos: Position{1, 1}},
		{name: "string result is not bool", expr: `"failed"`, wantErr: "has type string, want bool"},
		{name: "unknown variable", expr: `evnt.status == "failed"`, wantErr: "undeclared reference to 'evnt'", wantPos: Position{1, 1}},
		{name: "unknown field", expr: `device.online && device.stauts == "failed"`, wantErr: `device has no field "stauts"`, wantPos: Position{1, 24}},
		{name: "unknown field in has", expr: `has(fleet.sucessRate)`, wantErr: `fleet has no field "sucessRate"`},
		{name: "unknown function", expr: `lower(event.status) == "failed"`, wantErr: "undeclared reference to 'lower'"},
		{name: "empty", expr: `  `, wantErr: "expression is empty"},
		{
			name:    "cost over the limit",
			expr:    `[1,2,3,4,5,6,7,8,9,10].all(a, [1,2,3,4,5,6,7,8,9,10].all(b, [1,2,3,4,5,6,7,8,9,10].all(c, [1,2,3,4,5,6,7,8,9,10].exists(d, a+b+c+d == 100))))`,
			wantErr: "exceeds the limit",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := CompileCondition("r", tt.expr)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("compile: %v", err)
				}
				if c.Name() != "r" || c.String() != tt.expr {
					t.Errorf("name/text = %q/%q", c.Name(), c.String())
				}
				return
			}
			if err == nil {
				t.Fatalf("compiled, want error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %q does not contain %q", err, tt.wantErr)
			}
			var es ExprErrors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error %T is not ExprErrors", err)
			}
			if tt.wantPos != (Position{}) && es[0].Pos != tt.wantPos {
				t.Errorf("position = %v, want %v", es[0].Pos, tt.wantPos)
			}
		})
	}
}

func TestEval(t *testing.T) {
	vars := Vars{
		Event:   map[string]any{"kind": "reported", "status": "failed", "updateDuration": 130.0},
		Device:  map[string]any{"online": true, "lastSeen": t0.Add(-11 * time.Minute), "duration": 130.0},
		Fleet:   map[string]any{"successRate": 0.93, "finished": 40.0, "avgDuration": 60.0},
		Rollout: map[string]any{"active": true},
		Now:     t0,
	}
	tests := []struct {
		name    string
		expr    string
		vars    Vars
		want    bool
		wantErr string
	}{
		{name: "true", expr: `event.status == "failed"`, vars: vars, want: true},
		{name: "false", expr: `event.status == "completed"`, vars: vars, want: false},
		{name: "int literal against a double", expr: `fleet.finished >= 20 && fleet.successRate < 0.95`, vars: vars, want: true},
		{name: "double arithmetic", expr: `device.duration > 2.0 * fleet.avgDuration`, vars: vars, want: true},
		{name: "int times double is an error, not false", expr: `device.duration > 2 * fleet.avgDuration`, vars: vars, wantErr: "no such overload"},
		{name: "now minus lastSeen", expr: `now - device.lastSeen > duration("10m")`, vars: vars, want: true},
		{name: "missing key is an error, not false", expr: `event.errorCode == "E1"`, vars: vars, wantErr: "no such key: errorCode"},
		{name: "has guards a missing key", expr: `has(event.errorCode) && event.errorCode == "E1"`, vars: vars, want: false},
		{name: "false && error is false", expr: `event.kind == "tick" && event.errorCode == "E1"`, vars: vars, want: false},
		{name: "optional default", expr: `event.?errorCode.orValue("none") == "none"`, vars: vars, want: true},
		{name: "nil maps are empty", expr: `has(device.online)`, vars: Vars{Now: t0}, want: false},
		{name: "nil map key is an error", expr: `device.online == true`, vars: Vars{Now: t0}, wantErr: "no such key: online"},
		{name: "wrong type in the map", expr: `device.online == true`, vars: Vars{Device: map[string]any{"online": "yes"}}, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := CompileCondition("r", tt.expr)
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			got, err := c.Eval(context.Background(), tt.vars)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("eval: %v", err)
			}
			if got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestEvalCostLimitAndDeadline(t *testing.T) {
	// The static estimate cannot see the size of a list built at run time
	// from a variable, so the runtime limit is what stops it.
	expr := `[1,2,3,4,5,6,7,8,9,10].all(a, [1,2,3,4,5,6,7,8,9,10].all(b, a + b < 100))`
	c, err := CompileConditionOpts("r", expr, CompileOptions{CostLimit: 1000})
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	if _, err := c.Eval(context.Background(), Vars{}); err != nil {
		t.Fatalf("eval within the limit: %v", err)
	}
	small, err := CompileConditionOpts("r", `device.version.size() > 3`, CompileOptions{CostLimit: 5})
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	long := strings.Repeat("x", 10000)
	_, err = small.Eval(context.Background(), Vars{Device: map[string]any{"version": long}})
	if !IsCostLimit(err) && err == nil {
		t.Logf("size() is O(1): no cost error, fine")
	}
	cmp, err := CompileConditionOpts("r", `device.version.contains("y")`, CompileOptions{CostLimit: 50})
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	if _, err := cmp.Eval(context.Background(), Vars{Device: map[string]any{"version": long}}); !IsCostLimit(err) {
		t.Errorf("contains over 10k characters with limit 50: err = %v, want the cost limit", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Eval(ctx, Vars{}); err == nil || !errors.Is(err, context.Canceled) {
		t.Errorf("eval with a cancelled context: err = %v, want context.Canceled", err)
	}
}

func TestValue(t *testing.T) {
	x, err := CompileValue("v", `fleet.successRate * 100.0`, CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := x.Eval(context.Background(), Vars{Fleet: map[string]any{"successRate": 0.9}}.Input())
	if err != nil || got != 90 {
		t.Errorf("got %v, %v; want 90", got, err)
	}
	if _, err := CompileValue("v", `device.online && true`, CompileOptions{}); err == nil {
		t.Error("a bool value expression compiled")
	}
	dyn, err := CompileValue("v", `device.online`, CompileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dyn.Eval(context.Background(), Vars{Device: map[string]any{"online": true}}.Input()); err == nil {
		t.Error("a dyn value that is a bool at run time evaluated without error")
	}
}

func TestReadsEventData(t *testing.T) {
	tests := []struct {
		expr string
		want bool
	}{
		{`device.status == "failed"`, false},
		{`event.kind == "reported" && event.time < now`, false},
		{`event.kind == "reported" && event.status == "failed"`, true},
		{`has(event.kind)`, true},
		{`event.?errorCode.orValue("") == "E1"`, true},
		{`"status" in event`, true},
		{`event["kind"] == "tick"`, true},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			c, err := CompileCondition("r", tt.expr)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.ReadsEventData(); got != tt.want {
				t.Errorf("ReadsEventData = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestObjectVariable(t *testing.T) {
	obj := &testObject{m: map[string]any{"status": "failed", "duration": 12.5}}
	in := Vars{Now: t0}.Input()
	in.SetDevice(obj)
	tests := []struct {
		expr    string
		want    bool
		wantErr string
	}{
		{expr: `device.status == "failed" && device.duration > 10.0`, want: true},
		{expr: `has(device.status) && !has(device.version)`, want: true},
		{expr: `device.version == "1"`, wantErr: "no such key"},
		{expr: `size(device) == 2 && "duration" in device`, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			c, err := CompileCondition("r", tt.expr)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.EvalInput(context.Background(), in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, %v; want error %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
	// An unbounded object takes the cost-tracked path, where the limit holds.
	obj.m["status"] = strings.Repeat("x", 10000)
	obj.unbounded = true
	in.SetDevice(obj)
	c, err := CompileConditionOpts("r", `device.status.contains("y")`, CompileOptions{CostLimit: 50})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.EvalInput(context.Background(), in); !IsCostLimit(err) {
		t.Errorf("unbounded object: err = %v, want the cost limit", err)
	}
}

type testObject struct {
	m         map[string]any
	unbounded bool
}

func (o *testObject) Get(k string) (any, bool) { v, ok := o.m[k]; return v, ok }

func (o *testObject) Keys() []string {
	var ks []string
	for k := range o.m {
		ks = append(ks, k)
	}
	return ks
}

func (o *testObject) Bounded() bool { return !o.unbounded }
