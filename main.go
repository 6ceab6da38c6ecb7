// Command otawatch watches firmware rollouts across IoT fleets in real time.
// See README.md; "otawatch help" lists the commands.
package main

import (
	"context"
	"os"

	"github.com/otawatch/otawatch/services/app"
)

func main() {
	os.Exit(app.Main(context.Background(), os.Args[1:], &app.Env{
		Stdout:  os.Stdout,
		Stderr:  os.Stderr,
		Environ: os.Environ(),
	}))
}
