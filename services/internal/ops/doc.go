// Package ops is what makes an otawatch process observable, whatever
// services it runs: /healthz (the process is up), /readyz (every component
// of the health registry is ready, and every stream its services need
// exists), /metrics (the process's Prometheus registry) and an access log
// line per HTTP request.
//
// The app serves these on the ops listener (Config) and hands the registry
// and the health registry to the services in svc.Deps; the api service
// serves the same handlers on its own port, so there is one /readyz and one
// /metrics per process, not one per listener.
//
// Watcher is the part that asks JetStream: every Interval it checks that the
// streams the process's services need exist (a missing one makes /readyz
// fail, naming it) and reads the pending counts of every durable consumer
// on the otawatch streams. It asks on its own timer, never on a scrape, so
// a Prometheus scrape or a probe costs JetStream nothing.
package ops
