package gate_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/microshop/microshop/distributor"
	"github.com/microshop/microshop/gate"
	"github.com/microshop/microshop/service"
)

// keyAdmitter lets in the requests that present one API key, as member 1,
// and refuses the others: the smallest Admitter.
type keyAdmitter string

func (k keyAdmitter) Admit(w http.ResponseWriter, r *http.Request) (*service.Auth, int) {
	if r.Header.Get("X-Api-Key") != string(k) {
		return nil, gate.WriteError(w, http.StatusUnauthorized, "send X-Api-Key")
	}
	return &service.Auth{Member: 1}, 0
}

// A gate built outside microshop: a registry, one service, and a gate with
// an Admitter of its own and one route it serves itself.
func Example() {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	quiet := slog.New(slog.DiscardHandler)
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		return ln
	}
	registry := distributor.NewServer(quiet, 0)
	registry.Settle = 0
	dln := listen()
	go registry.Serve(ctx, dln)
	dist := []string{dln.Addr().String()}

	hello := service.NewServer(service.Config{Name: "hello", Distributors: dist, Logger: quiet,
		Routes: map[string]service.Handler{"GET/hello": func(ctx context.Context, r *service.Request) (service.Result, error) {
			return service.Result{"hello": r.Auth.Member}, nil
		}}})
	go hello.Serve(ctx, listen())

	g := gate.New(gate.Config{Distributors: dist, Admit: keyAdmitter("s3cret"), Logger: quiet,
		Handlers: map[string]http.Handler{"GET /ping": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "pong")
		})}})
	gln := listen()
	go g.Serve(ctx, gln)
	for deadline := time.Now().Add(5 * time.Second); !g.Client().Has("GET", "/hello"); {
		if time.Now().After(deadline) {
			fmt.Println("the gate never learnt the route")
			return
		}
		time.Sleep(10 * time.Millisecond)
	}

	get := func(path, key string) {
		req, _ := http.NewRequest("GET", "http://"+gln.Addr().String()+path, nil)
		req.Header.Set("X-Api-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		fmt.Println(resp.StatusCode, strings.TrimSpace(string(b)))
	}
	get("/hello", "s3cret")
	get("/hello", "wrong")
	get("/ping", "s3cret")
	// Output:
	// 200 {"key":1,"errorcode":0,"errormessage":"success","hello":1}
	// 401 {"errorcode":401,"errormessage":"send X-Api-Key"}
	// 200 pong
}
