// Command herald is a Mercure hub: it pushes live updates to browsers and
// services over Server-Sent Events, with a durable history for lossless
// resume.
//
//	herald [serve] [flags]   run the hub (the default)
//	herald token [flags]     print an access token the hub accepts
//	herald bench SCENARIO    measure a Mercure hub (herald or any other)
//	herald version           print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "herald:", err)
		os.Exit(1)
	}
}

// run dispatches a subcommand. It is main without the process: tests call
// it with their own context and writers.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(ctx, args, stdout, stderr)
	case "token":
		return token(args, stdout, stderr)
	case "bench":
		return benchCmd(ctx, args, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "herald", version())
		return nil
	case "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

const usage = `usage: herald [command] [flags]

commands:
  serve     run the hub (default); herald serve -h lists its flags
  token     print an access token the hub accepts; herald token -h
  bench     measure any Mercure hub: herald bench -h
  version   print the version
`

// version reports the module version and VCS revision baked in by the Go
// toolchain.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " " + s.Value[:12]
		}
	}
	return v
}
