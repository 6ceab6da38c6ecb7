// Package fleet is the fleet state as a fold of the SHADOW stream: each
// device's reported and desired firmware and presence, and the fleet and
// per-wave metrics that alert rules and rollout gates read. Alerting,
// rollout and the API each keep their own State, fed by the same events, so
// they agree on what "healthy" means and replay computes what live computed.
//
// State takes time only from events (and from the tick time a caller passes
// to Stale), never from the wall clock.
package fleet
