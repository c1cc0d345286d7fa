package distributor_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/microshop/microshop/distributor"
)

// A registry and two processes: goods registers its routes, the gate
// registers too and follows the list, which the registry pushes whenever
// it changes.
func Example() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	quiet := slog.New(slog.DiscardHandler)

	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	reg := distributor.NewServer(quiet, 0)
	reg.Settle = 0 // push lists at once (a restarted registry waits for re-registrations)
	go reg.Serve(ctx, ln)
	addr := ln.Addr().String()

	goods := distributor.NewClient(distributor.ClientConfig{
		Addrs:        []string{addr},
		Registration: &distributor.Registration{Name: "goods", Port: 9010, URLs: []string{"GET/goods", "POST/goods"}},
		Logger:       quiet,
	})
	go goods.Run(ctx)

	lists := make(chan []distributor.Node, 16)
	gate := distributor.NewClient(distributor.ClientConfig{
		Addrs:        []string{addr},
		Registration: &distributor.Registration{Name: "gate", Port: 8000},
		OnChange:     func(nodes []distributor.Node) { lists <- nodes },
		Logger:       quiet,
	})
	go gate.Run(ctx)

	for nodes := range lists {
		if len(nodes) < 2 {
			continue // goods or the gate is not registered yet
		}
		for _, n := range nodes {
			fmt.Println(n.Name, n.Port, n.URLs)
		}
		break
	}
	// Unordered output:
	// goods 9010 [GET/goods POST/goods]
	// gate 8000 []
}
