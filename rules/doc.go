// Package rules is otawatch's alert rule language: CEL conditions over five
// variables, rule files in YAML, and their tests files.
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
// no map ever has is refused at compile time.
//
// # Limits
//
// A condition must have type bool (a bare `event.status` is dyn and is
// refused), and its estimated cost must stay under the cost limit
// (DefaultCostLimit). At run time the same limit and a context deadline
// stop an evaluation; an evaluation error leaves the alert as it was.
package rules
