// Package rules is otawatch's alert rule language: CEL conditions over five
// variables, rule files in YAML, and their tests files. The default rules
// (device-failed, stale-shadow, success-rate-low, duration-anomaly,
// version-mismatch) are the *.yaml files next to this file, built into the
// binary (Defaults); services/internal/ruleeval evaluates rules over the
// fleet and runs the tests files.
//
// # Rule files
//
// One rule per file, decoded strictly (an unknown key is an error):
//
//	id: success-rate-low          # [A-Za-z0-9_-], unique in the directory
//	description: ...
//	severity: warning             # critical, warning or info ...
//	condition: fleet.successRate < 0.95   # ... with one condition, or:
//	levels:                       # tried in order; the first that holds wins
//	  - {severity: critical, condition: fleet.successRate < 0.90}
//	  - {severity: warning,  condition: fleet.successRate < 0.95}
//	scope: fleet                  # device (default): one alert per device,
//	                              # key rule/typeId/deviceId; fleet: one alert,
//	                              # key rule/fleet
//	kind: tick                    # event (default for device scope): evaluated
//	                              # on events; tick (default for fleet scope):
//	                              # also on every tick, with now = tick time
//	for: 2m                       # how long a level must hold before it is raised
//	value: fleet.successRate      # a number reported with the alert
//	labels: {team: fleet-ops}
//	message: 'rate {{percent .value}} on job {{.rollout.jobId}}'
//
// A device rule is evaluated on the events of its device (reports, desired
// states, presence changes); a fleet rule on every event and, as a tick
// rule, on every tick. An alert is raised once when its condition starts to
// hold (after `for`), resolved when an evaluation finds it false, and a
// change of level (warning to critical) resolves the old severity and
// raises the new one under the same key.
//
// The message is a text/template over .event, .device, .fleet, .rollout
// (the maps of Fields), .now, .value, .rule, .severity and .labels, with
// the functions percent (0.934 -> "93.4%") and ts (a timestamp as RFC
// 3339); a missing key renders empty. It is rendered once, when the alert
// is raised.
//
// A file that does not parse, a condition that does not compile, is not
// bool, names a field no variable has, or may cost more than the limit is
// refused: LoadError lists every problem as file:line:column: rule id:
// reason.
//
// # Tests files
//
// X.test.yaml tests X.yaml: named cases of input steps and expectations;
// see TestFile. `otawatch rules test DIR` runs them, and `go test
// ./services/internal/ruleeval` runs the built-in rules' tests.
//
// # Variables
//
// Every expression sees the same five variables; Fields documents every
// key of the four maps (`otawatch rules vars` prints it):
//
//	event    the event being handled (a shadow report, a desired state, a
//	         presence change, a rollout change) or a tick
//	device   the state of the device the event is about (on a tick: each
//	         device in turn, for device rules)
//	fleet    fleet metrics over online devices
//	rollout  the job of the device (device rules) or the active job
//	now      the event's time, or the tick's time: never the wall clock, so
//	         a backtest computes what the live run computed
//
// Every number is a double: arithmetic mixing int and double fails at run
// time in CEL ("no such overload"), so write 2.0 * fleet.avgDuration;
// comparisons with int literals (fleet.finished >= 20) are fine. Reading a
// key a map does not have is an evaluation error, not false: keys that
// exist only on some events (Field.When) are guarded with has(event.x),
// event.kind == "...", or optional syntax event.?x.orValue(""). A key that
// no map ever has is refused at compile time. An evaluation error leaves
// the alert as it was (neither raised nor resolved) and is logged.
//
// # Limits
//
// A condition must have type bool (a bare `event.status` is dyn and is
// refused), and its static cost estimate, with maps of at most 64 keys and
// strings of at most MaxStringLen bytes, must stay under the cost limit
// (DefaultCostLimit). On input within those sizes (checked per input; the
// schema keeps device strings within them) that estimate bounds every
// evaluation, so the program runs without cost tracking, which makes it 3
// to 5 times faster. Input outside them runs the tracked program, stopped
// by the same limit at run time and by the context's deadline.
package rules
