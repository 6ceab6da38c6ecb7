package app

import (
	"io"
	"net/http"
	"strings"

	"github.com/otawatch/otawatch/services/internal/ops"
	"github.com/otawatch/otawatch/services/internal/svc"
)

// RunPlan is what "otawatch run" would start, worked out without starting
// anything. The deployment manifests' test (deploy/deploy_test.go) checks
// every container's command line and OTAWATCH_* variables with it, through
// the flag parsing, config loading, validation and service selection that
// the command itself uses.
type RunPlan struct {
	// Config is the loaded and validated configuration.
	Config *Config
	// Services are the services the process would run, in start order.
	Services []string
	// OpsListen is where the process serves /healthz, /readyz and
	// /metrics on a listener of its own (OpsHandler); "" when it has none
	// (the api then serves them on http.listen).
	OpsListen string
}

// PlanRun resolves the arguments of "otawatch run" (those after "run") in
// the environment environ (KEY=VALUE, as os.Environ gives it; its
// OTAWATCH_CONFIG names the default config file, as the process's own
// environment does for the command). Its errors are the ones the command
// would stop with: a bad flag or service name (ErrUsage), or every problem
// of the configuration (*conf.Error).
func PlanRun(args, environ []string) (*RunPlan, error) {
	fs := newFlagSet(&Env{Stderr: io.Discard}, "run")
	file := fs.String("c", environValue(environ, "OTAWATCH_CONFIG"), "config `FILE`")
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	cfg, err := LoadConfig(*file, environ)
	if err != nil {
		return nil, err
	}
	names, err := selectServices(cfg, fs.Args())
	if err != nil {
		return nil, err
	}
	return &RunPlan{Config: cfg, Services: names, OpsListen: opsAddr(cfg, names)}, nil
}

// IsCommand reports whether Main takes name as its first argument: a
// subcommand ("run", "devices", ...) or "help".
func IsCommand(name string) bool {
	_, ok := commands()[name]
	return ok || name == "help"
}

// OpsHandler is the handler of a process's ops listener (/healthz, /readyz,
// /metrics) with no component registered yet: the paths a probe of
// RunPlan.OpsListen reaches.
func OpsHandler() http.Handler {
	return ops.Mux(svc.NewHealth(), ops.NewRegistry())
}

// environValue is key's value in environ ("" when unset; the last wins).
func environValue(environ []string, key string) string {
	v := ""
	for _, kv := range environ {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val
		}
	}
	return v
}
