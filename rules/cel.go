package rules

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/checker"
	"github.com/google/cel-go/common"
	celast "github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
	"github.com/google/cel-go/interpreter"
)

// Variable names a rule's CEL expressions may use (see Fields for their
// keys).
const (
	VarEvent   = "event"
	VarDevice  = "device"
	VarFleet   = "fleet"
	VarRollout = "rollout"
	VarNow     = "now"
)

// DefaultCostLimit bounds one evaluation of one expression, in CEL cost
// units (about one per operation). The default rules cost under 40; a rule
// that needs more is doing something a rule should not (a loop over a big
// list), so it is refused at load, and stopped at run time if the static
// estimate was wrong.
const DefaultCostLimit = 1000

// DefaultEvalTimeout is the deadline callers should give one event's worth
// of evaluations; the cost limit normally stops a runaway rule long before.
const DefaultEvalTimeout = 100 * time.Millisecond

// Vars are the inputs of an evaluation. A nil map is bound as an empty map,
// so a rule that reads a key of it gets a "no such key" error rather than a
// crash. Build maps with the helpers of services/internal/ruleeval
// (DeviceVars, FleetVars, ...) so the keys match Fields.
type Vars struct {
	Event, Device, Fleet, Rollout map[string]any
	Now                           time.Time
}

// Input is Vars prepared for evaluation: build it once per event with
// Vars.Input and evaluate every rule on it, so the per-rule cost is the
// CEL evaluation alone. SetDevice and SetRollout swap one variable, for a
// caller evaluating the same rules over many devices.
type Input struct {
	act *varsActivation
	// bounded: every map has at most maxFields keys and every string at
	// most maxString bytes, the sizes the static cost estimate assumed
	// (per variable: event, device, fleet, rollout).
	bounded [4]bool
}

var emptyMap = map[string]any{}

func orEmpty(m map[string]any) map[string]any {
	if m == nil {
		return emptyMap
	}
	return m
}

// Input prepares v for evaluation.
func (v Vars) Input() Input {
	in := Input{act: &varsActivation{
		// Native maps: CEL's attribute resolution reads map[string]any
		// directly, without converting the map.
		event:   orEmpty(v.Event),
		device:  orEmpty(v.Device),
		fleet:   orEmpty(v.Fleet),
		rollout: orEmpty(v.Rollout),
		now:     types.Timestamp{Time: v.Now.UTC()},
	}}
	in.bounded = [4]bool{boundedMap(v.Event, 0), boundedMap(v.Device, 0), boundedMap(v.Fleet, 0), boundedMap(v.Rollout, 0)}
	return in
}

func (in *Input) isBounded() bool {
	return in.bounded[0] && in.bounded[1] && in.bounded[2] && in.bounded[3]
}

// Object is a map variable whose keys are read on demand, so evaluating
// rules over many devices builds no map per device. Get returns a string,
// float64, bool or time.Time; Bounded reports whether every string it
// returns is at most 256 bytes (or the input takes the cost-tracked path).
type Object interface {
	Get(key string) (any, bool)
	Keys() []string
	Bounded() bool
}

// SetDevice makes o the `device` variable. Setting the same Object again
// (whose fields changed) allocates nothing.
func (in *Input) SetDevice(o Object) {
	if ov, ok := in.act.device.(*objectVal); !ok || ov.o != o {
		in.act.device = &objectVal{o: o}
	}
	in.bounded[1] = o.Bounded()
}

// SetRollout makes m the `rollout` variable.
func (in *Input) SetRollout(m map[string]any) {
	in.act.rollout = orEmpty(m)
	in.bounded[3] = boundedMap(m, 0)
}

// varsActivation resolves the five variables without a map lookup or an
// allocation per evaluation.
type varsActivation struct {
	event, device, fleet, rollout any
	now                           ref.Val
}

func (a *varsActivation) ResolveName(name string) (any, bool) {
	switch name {
	case VarEvent:
		return a.event, true
	case VarDevice:
		return a.device, true
	case VarFleet:
		return a.fleet, true
	case VarRollout:
		return a.rollout, true
	case VarNow:
		return a.now, true
	}
	return nil, false
}

func (a *varsActivation) Parent() interpreter.Activation { return nil }

// objectVal is an Object as a CEL map value.
type objectVal struct{ o Object }

var _ traits.Mapper = (*objectVal)(nil)

func (v *objectVal) ConvertToNative(t reflect.Type) (any, error) {
	m := make(map[string]any)
	for _, k := range v.o.Keys() {
		m[k], _ = v.o.Get(k)
	}
	return types.NewStringInterfaceMap(types.DefaultTypeAdapter, m).ConvertToNative(t)
}

func (v *objectVal) ConvertToType(t ref.Type) ref.Val {
	if t == types.TypeType {
		return types.MapType
	}
	if t == types.MapType {
		return v
	}
	return types.NewErr("type conversion error from map to %s", t)
}

func (v *objectVal) Equal(other ref.Val) ref.Val { return types.Bool(other == ref.Val(v)) }

func (v *objectVal) Type() ref.Type { return types.MapType }

func (v *objectVal) Value() any { return v.o }

func (v *objectVal) Find(key ref.Val) (ref.Val, bool) {
	k, ok := key.(types.String)
	if !ok {
		return nil, false
	}
	x, ok := v.o.Get(string(k))
	if !ok {
		return nil, false
	}
	return types.DefaultTypeAdapter.NativeToValue(x), true
}

func (v *objectVal) Get(key ref.Val) ref.Val {
	if x, ok := v.Find(key); ok {
		return x
	}
	return types.NewErr("no such key: %v", key)
}

func (v *objectVal) Contains(key ref.Val) ref.Val {
	_, ok := v.Find(key)
	return types.Bool(ok)
}

func (v *objectVal) Iterator() traits.Iterator {
	keys := v.o.Keys()
	vals := make([]ref.Val, len(keys))
	for i, k := range keys {
		vals[i] = types.String(k)
	}
	return types.NewDynamicList(types.DefaultTypeAdapter, vals).(traits.Lister).Iterator()
}

func (v *objectVal) Size() ref.Val { return types.Int(len(v.o.Keys())) }

// boundedMap reports whether m is within the sizes the static cost
// estimate assumes, nested maps and lists included.
func boundedMap(m map[string]any, depth int) bool {
	if len(m) > maxFields || depth > 3 {
		return false
	}
	for k, v := range m {
		if len(k) > maxString || !boundedValue(v, depth) {
			return false
		}
	}
	return true
}

func boundedValue(v any, depth int) bool {
	switch x := v.(type) {
	case string:
		return len(x) <= maxString
	case bool, float64, int, int64, uint64, time.Time, time.Duration, nil:
		return true
	case map[string]any:
		return boundedMap(x, depth+1)
	case map[string]string:
		if len(x) > maxFields {
			return false
		}
		for k, s := range x {
			if len(k) > maxString || len(s) > maxString {
				return false
			}
		}
		return true
	case []any:
		if len(x) > maxFields {
			return false
		}
		for _, e := range x {
			if !boundedValue(e, depth+1) {
				return false
			}
		}
		return true
	case []string:
		if len(x) > maxFields {
			return false
		}
		for _, s := range x {
			if len(s) > maxString {
				return false
			}
		}
		return true
	}
	return false // a type the estimate knows nothing about: track the cost
}

// env is the one CEL environment of every rule: the five variables, the
// standard library, optional values (event.?errorCode.orValue("")) and
// comparisons across int and double, so "fleet.finished >= 20" works
// although every number in the variables is a double.
func newEnv() (*cel.Env, error) {
	anyMap := cel.MapType(cel.StringType, cel.DynType)
	return cel.NewEnv(
		cel.Variable(VarEvent, anyMap),
		cel.Variable(VarDevice, anyMap),
		cel.Variable(VarFleet, anyMap),
		cel.Variable(VarRollout, anyMap),
		cel.Variable(VarNow, cel.TimestampType),
		cel.OptionalTypes(),
		cel.CrossTypeNumericComparisons(true),
	)
}

var sharedEnv, sharedEnvErr = newEnv()

// Position is a place in a rule file or an expression, 1-based.
type Position struct {
	Line, Column int
}

func (p Position) String() string { return fmt.Sprintf("%d:%d", p.Line, p.Column) }

// ExprError is an expression that was refused: it does not parse or
// type-check, has the wrong output type, names a field no variable has, or
// may cost more than the limit. Pos is within the expression text (line 1
// is its first line); the rule loader translates it to the file.
type ExprError struct {
	Name    string // the rule or expression name
	Pos     Position
	Message string
}

func (e *ExprError) Error() string {
	if e.Pos.Line == 0 {
		return fmt.Sprintf("%s: %s", e.Name, e.Message)
	}
	return fmt.Sprintf("%s:%s: %s", e.Name, e.Pos, e.Message)
}

// ExprErrors are every problem of one expression.
type ExprErrors []*ExprError

func (es ExprErrors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Condition is a compiled boolean expression: a rule's condition, or the
// rollout service's extra gate. It is safe for concurrent use.
type Condition struct {
	name      string
	text      string
	prg       programs
	costLimit uint64
	estimate  checker.CostEstimate
}

// programs are one expression compiled twice. safe tracks cost against
// the limit and checks the context in comprehensions; fast does neither
// and is 3 to 5 times quicker. fast runs only on bounded input (see
// Input), where the static estimate, already checked against the limit at
// compile time, bounds the cost of every evaluation: the runtime limit
// could not trigger, and without it nothing runs long enough for a
// deadline to matter.
type programs struct {
	fast, safe cel.Program
	// eventData: the expression may read event keys beyond the envelope.
	eventData bool
}

func (p programs) eval(ctx context.Context, in Input) (ref.Val, error) {
	if in.isBounded() && ctx.Err() == nil {
		out, _, err := p.fast.Eval(in.act)
		return out, err
	}
	out, _, err := p.safe.ContextEval(ctx, in.act)
	return out, err
}

// Expr is a compiled numeric expression (a rule's value): its result is
// converted to float64.
type Expr struct {
	name string
	text string
	prg  programs
}

// CompileOptions tune compilation.
type CompileOptions struct {
	// CostLimit is the most one evaluation may cost; 0 is DefaultCostLimit.
	CostLimit uint64
}

// CompileCondition compiles expr, which must have type bool, name only
// documented fields of the variables, and not cost more than
// DefaultCostLimit by static estimate. The error is ExprErrors with
// positions within expr.
func CompileCondition(name, expr string) (*Condition, error) {
	return CompileConditionOpts(name, expr, CompileOptions{})
}

// CompileConditionOpts is CompileCondition with options.
func CompileConditionOpts(name, expr string, o CompileOptions) (*Condition, error) {
	prg, est, limit, err := compile(name, expr, o, cel.BoolType, "bool")
	if err != nil {
		return nil, err
	}
	return &Condition{name: name, text: expr, prg: prg, costLimit: limit, estimate: est}, nil
}

// CompileValue compiles a numeric expression (int, uint or double).
func CompileValue(name, expr string, o CompileOptions) (*Expr, error) {
	prg, _, _, err := compile(name, expr, o, nil, "a number")
	if err != nil {
		return nil, err
	}
	return &Expr{name: name, text: expr, prg: prg}, nil
}

var numericTypes = []*cel.Type{cel.DoubleType, cel.IntType, cel.UintType, cel.DynType}

func compile(name, expr string, o CompileOptions, want *cel.Type, wantName string) (programs, checker.CostEstimate, uint64, error) {
	var zero checker.CostEstimate
	var none programs
	if sharedEnvErr != nil {
		return none, zero, 0, fmt.Errorf("cel environment: %w", sharedEnvErr)
	}
	if strings.TrimSpace(expr) == "" {
		return none, zero, 0, ExprErrors{{Name: name, Message: "expression is empty"}}
	}
	ast, iss := sharedEnv.Compile(expr)
	if iss != nil && iss.Err() != nil {
		var out ExprErrors
		for _, e := range iss.Errors() {
			out = append(out, &ExprError{Name: name, Pos: celPos(e.Location), Message: e.Message})
		}
		return none, zero, 0, out
	}
	if errs := checkFields(name, ast); len(errs) > 0 {
		return none, zero, 0, errs
	}
	out := ast.OutputType()
	switch {
	case want != nil && !out.IsExactType(want):
		// A dyn result (event.status) would only fail at run time, on
		// some events: refuse it here, where the author is looking.
		return none, zero, 0, ExprErrors{{Name: name, Pos: Position{1, 1},
			Message: fmt.Sprintf("expression has type %s, want %s (compare it: event.status == \"failed\", or convert: bool(x))", out, wantName)}}
	case want == nil && !isNumeric(out):
		return none, zero, 0, ExprErrors{{Name: name, Pos: Position{1, 1},
			Message: fmt.Sprintf("expression has type %s, want %s", out, wantName)}}
	}
	limit := o.CostLimit
	if limit == 0 {
		limit = DefaultCostLimit
	}
	est, err := sharedEnv.EstimateCost(ast, sizeEstimator{})
	if err != nil {
		return none, zero, 0, ExprErrors{{Name: name, Message: fmt.Sprintf("estimate cost: %v", err)}}
	}
	if est.Max > limit {
		return none, zero, 0, ExprErrors{{Name: name, Pos: Position{1, 1},
			Message: fmt.Sprintf("estimated cost %d exceeds the limit %d", est.Max, limit)}}
	}
	safe, err := sharedEnv.Program(ast,
		cel.CostLimit(limit),
		cel.InterruptCheckFrequency(100),
		cel.EvalOptions(cel.OptOptimize),
	)
	if err != nil {
		return none, zero, 0, ExprErrors{{Name: name, Message: fmt.Sprintf("build program: %v", err)}}
	}
	fast, err := sharedEnv.Program(ast, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return none, zero, 0, ExprErrors{{Name: name, Message: fmt.Sprintf("build program: %v", err)}}
	}
	return programs{fast: fast, safe: safe, eventData: readsEventData(ast)}, est, limit, nil
}

func isNumeric(t *cel.Type) bool {
	for _, n := range numericTypes {
		if t.IsExactType(n) {
			return true
		}
	}
	return false
}

func celPos(l common.Location) Position {
	if l == nil || l.Line() <= 0 {
		return Position{}
	}
	return Position{Line: l.Line(), Column: l.Column() + 1}
}

// checkFields refuses a selection of a key that the variable never has
// (device.stauts): with map variables CEL cannot see it, and it would be a
// "no such key" error on every evaluation.
func checkFields(name string, a *cel.Ast) ExprErrors {
	native := a.NativeRep()
	info := native.SourceInfo()
	var errs ExprErrors
	celast.PreOrderVisit(celast.NavigateAST(native), celast.NewExprVisitor(func(e celast.Expr) {
		if e.Kind() != celast.SelectKind {
			return
		}
		sel := e.AsSelect()
		op := sel.Operand()
		if op.Kind() != celast.IdentKind {
			return
		}
		v := op.AsIdent()
		known, ok := knownFields[v]
		if !ok {
			return
		}
		if _, ok := known[sel.FieldName()]; ok {
			return
		}
		errs = append(errs, &ExprError{Name: name, Pos: celPos(info.GetStartLocation(e.ID())),
			Message: fmt.Sprintf("%s has no field %q (fields: %s)", v, sel.FieldName(), strings.Join(sortedKeys(known), ", "))})
	}))
	return errs
}

// EnvelopeFields are the event keys known without decoding the event's
// data; a rule set that reads no other lets the caller skip that decode.
var EnvelopeFields = map[string]bool{"kind": true, "time": true, "id": true, "type": true, "source": true, "name": true}

// readsEventData reports whether an expression may read an event key
// outside EnvelopeFields: any use of `event` other than selecting one of
// them (an index, has() on another key, event.?x, size(event)) counts.
func readsEventData(a *cel.Ast) bool {
	uses, envelope := 0, 0
	celast.PreOrderVisit(celast.NavigateAST(a.NativeRep()), celast.NewExprVisitor(func(e celast.Expr) {
		switch e.Kind() {
		case celast.IdentKind:
			if e.AsIdent() == VarEvent {
				uses++
			}
		case celast.SelectKind:
			sel := e.AsSelect()
			if op := sel.Operand(); op.Kind() == celast.IdentKind && op.AsIdent() == VarEvent && !sel.IsTestOnly() && EnvelopeFields[sel.FieldName()] {
				envelope++
			}
		}
	}))
	return uses > envelope
}

func sortedKeys(m map[string]Field) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// sizeEstimator gives the static cost estimate bounds for the variables:
// maps of at most maxFields entries and strings of at most maxString
// characters (ids are at most 64 by events.ValidateID; versions and
// messages are short).
type sizeEstimator struct{}

const (
	maxFields = 64
	maxString = MaxStringLen
)

// MaxStringLen is the longest string the static cost estimate assumes a
// variable holds; an Object's Bounded reports whether it keeps to it.
const MaxStringLen = 256

func (sizeEstimator) EstimateSize(n checker.AstNode) *checker.SizeEstimate {
	if t := n.Type(); t != nil {
		switch {
		case t.Kind() == types.MapKind, t.Kind() == types.ListKind:
			return &checker.SizeEstimate{Min: 0, Max: maxFields}
		case t.Kind() == types.StringKind, t.Kind() == types.BytesKind, t.Kind() == types.DynKind:
			return &checker.SizeEstimate{Min: 0, Max: maxString}
		}
	}
	return nil
}

func (sizeEstimator) EstimateCallCost(function, overloadID string, target *checker.AstNode, args []checker.AstNode) *checker.CallEstimate {
	return nil
}

// ReadsEventData reports whether the condition may read an event key
// outside EnvelopeFields (so the caller must decode the event's data).
func (c *Condition) ReadsEventData() bool { return c.prg.eventData }

// ReadsEventData is Condition.ReadsEventData for a value expression.
func (x *Expr) ReadsEventData() bool { return x.prg.eventData }

// Name is the condition's name (the rule id, or what the caller named it).
func (c *Condition) Name() string { return c.name }

// String is the condition's expression text.
func (c *Condition) String() string { return c.text }

// EstimatedCost is the static cost range of one evaluation.
func (c *Condition) EstimatedCost() (min, max uint64) { return c.estimate.Min, c.estimate.Max }

// Eval evaluates the condition. An error is an evaluation error (a missing
// key, an overload that does not exist for the values, the cost limit, the
// context's end): the condition is then neither true nor false, and the
// caller must not act as if it were false.
func (c *Condition) Eval(ctx context.Context, v Vars) (bool, error) {
	return c.EvalInput(ctx, v.Input())
}

// EvalInput evaluates the condition on prepared input.
func (c *Condition) EvalInput(ctx context.Context, in Input) (bool, error) {
	out, err := c.prg.eval(ctx, in)
	if err != nil {
		return false, &EvalError{Name: c.name, Err: err}
	}
	b, ok := out.Value().(bool)
	if !ok {
		// Unreachable after the compile-time type check, kept so a
		// change there cannot turn into a silent false.
		return false, &EvalError{Name: c.name, Err: fmt.Errorf("result %v is %T, not bool", out.Value(), out.Value())}
	}
	return b, nil
}

// Eval evaluates the value expression to a float64.
func (x *Expr) Eval(ctx context.Context, in Input) (float64, error) {
	out, err := x.prg.eval(ctx, in)
	if err != nil {
		return 0, &EvalError{Name: x.name, Err: err}
	}
	switch n := out.Value().(type) {
	case float64:
		return n, nil
	case int64:
		return float64(n), nil
	case uint64:
		return float64(n), nil
	}
	return math.NaN(), &EvalError{Name: x.name, Err: fmt.Errorf("result %v is %T, not a number", out.Value(), out.Value())}
}

// String is the expression's text.
func (x *Expr) String() string { return x.text }

// EvalError is an evaluation that produced no value.
type EvalError struct {
	Name string
	Err  error
}

func (e *EvalError) Error() string { return fmt.Sprintf("evaluate %s: %v", e.Name, e.Err) }

func (e *EvalError) Unwrap() error { return e.Err }

// IsCostLimit reports whether err is an evaluation stopped by the cost
// limit.
func IsCostLimit(err error) bool {
	var ee *EvalError
	return errors.As(err, &ee) && strings.Contains(ee.Err.Error(), "cost limit exceeded")
}
