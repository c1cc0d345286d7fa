// Command microshop runs a microshop fleet: the whole of it in one process
// (`microshop all`) or one component per process (`microshop distributor`,
// `microshop gate`, `microshop goods`, ...). See the README.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/microshop/microshop/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if app.IsHelp(err) {
			return
		}
		fmt.Fprintln(os.Stderr, "microshop:", err)
		stop()
		os.Exit(1)
	}
}
