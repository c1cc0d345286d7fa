package service_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/microshop/microshop/distributor"
	"github.com/microshop/microshop/service"
)

// A Go service that joins a microshop fleet: a name, a route table and the
// distributor's address. Every gate and every other process of the fleet
// learns of it from the distributor and can call its routes at once;
// here a Client (what a gate or a calling service uses) calls it.
func Example() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The fleet's registry (microshop distributor).
	dln, _ := net.Listen("tcp", "127.0.0.1:0")
	quiet := slog.New(slog.DiscardHandler)
	reg := distributor.NewServer(quiet, 0)
	reg.Settle = 0
	go reg.Serve(ctx, dln)

	// The service: one package with a route table, one Serve.
	hello := service.NewServer(service.Config{
		Name: "hello",
		Routes: map[string]service.Handler{
			"GET/hello": func(ctx context.Context, r *service.Request) (service.Result, error) {
				name, err := r.Params.Text("name", 1, 40)
				if err != nil {
					return nil, err // a *service.Error: errorcode 400
				}
				return service.Result{"greeting": "hello, " + name}, nil
			},
		},
		Distributors: []string{dln.Addr().String()},
		Logger:       quiet,
	})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go hello.Serve(ctx, ln)

	// A caller follows the distributor's list and calls the route.
	client := service.NewClient(service.ClientConfig{RequestTimeout: 5 * time.Second, Logger: quiet})
	defer client.Close()
	watch := distributor.NewClient(distributor.ClientConfig{
		Addrs:    []string{dln.Addr().String()},
		OnChange: client.Update,
		Logger:   quiet,
	})
	go watch.Run(ctx)
	for deadline := time.Now().Add(5 * time.Second); !client.Has("GET", "/hello"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			fmt.Println("the route was never listed")
			return
		}
	}

	m, err := client.Call(ctx, "GET", "/hello", []byte(`{"name":"kim"}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(*m.ErrorCode, string(m.Raw))
	m, _ = client.Call(ctx, "GET", "/hello", []byte(`{}`))
	fmt.Println(*m.ErrorCode, m.ErrorMessage)
	// Output:
	// 0 {"key":1,"errorcode":0,"errormessage":"success","greeting":"hello, kim"}
	// 400 name is required
}
