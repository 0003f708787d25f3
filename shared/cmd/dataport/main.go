// Command dataport is Dataport's command line: it starts room, my-data and
// record exports through the gateway's native API, follows them live with
// a progress bar, downloads their files resumably and verifies each
// against its SHA-256. Install it with
//
//	go install dataport.dev/shared/cmd/dataport   (from a checkout of the repository)
//
// and see dataport --help.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"dataport.dev/shared/cmd/dataport/internal/cli"
)

// version is set by the build (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], cli.App{Getenv: os.Getenv, Stdout: os.Stdout, Stderr: os.Stderr, Version: version})
	stop()
	os.Exit(code)
}
