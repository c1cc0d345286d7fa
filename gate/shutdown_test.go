package gate

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/microshop/microshop/distributor"
	"github.com/microshop/microshop/internal/testenv"
	"github.com/microshop/microshop/service"
)

// A stopping gate closes a connection that never sent a request (net/http
// alone would wait 5 s for it) and still finishes the request in flight.
func TestShutdownClosesFreshConnections(t *testing.T) {
	quiet := slog.New(slog.DiscardHandler)
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	bg, stopAll := context.WithCancel(context.Background())
	defer stopAll()
	dln := listen()
	go distributor.NewServer(quiet, 0).Serve(bg, dln)
	started := make(chan struct{})
	release := make(chan struct{})
	sln := listen()
	go service.NewServer(service.Config{Name: "slow", Distributors: []string{dln.Addr().String()}, Logger: quiet, DrainTimeout: time.Second,
		Routes: map[string]service.Handler{"GET/slow": func(ctx context.Context, r *service.Request) (service.Result, error) {
			close(started)
			<-release
			return service.Result{"done": true}, nil
		}}}).Serve(bg, sln)

	var logs testenv.SyncBuffer
	gc := Config{Distributors: []string{dln.Addr().String()}, RequestTimeout: 10 * time.Second, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	g := New(gc)
	gctx, stopGate := context.WithCancel(bg)
	gln := listen()
	served := make(chan error, 1)
	go func() { served <- g.Serve(gctx, gln) }()
	deadline := time.Now().Add(10 * time.Second)
	for !g.Client().Has("GET", "/slow") {
		if time.Now().After(deadline) {
			t.Fatal("the gate never learnt the route")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// A request in flight, and a connection that sends nothing.
	answer := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + gln.Addr().String() + "/slow")
		if err != nil {
			answer <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		answer <- resp.Status + " " + string(b)
	}()
	<-started
	idle, err := net.Dial("tcp", gln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	// The gate accepts connections in order: once a later one is
	// answered, the idle one has been accepted.
	if resp, err := http.Get("http://" + gln.Addr().String() + "/nowhere"); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}

	stopGate()
	// The fresh connection is closed by the gate while the request is
	// still being served.
	idle.SetReadDeadline(time.Now().Add(30 * time.Second)) // a hang guard only
	if n, err := idle.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the fresh connection: read %d bytes, %v; want EOF (closed by the gate)", n, err)
	}
	close(release)
	if a := <-answer; !strings.HasPrefix(a, "200 ") || !strings.Contains(a, `"done":true`) {
		t.Fatalf("the request in flight during shutdown got %q; want 200 with its answer", a)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	// The EOF could also be net/http's own doing after 5 s; the gate says
	// when it was its own.
	if !strings.Contains(logs.String(), "closed connections that had sent no request") {
		t.Fatalf("the gate did not say it closed the fresh connection; log:\n%s", logs.String())
	}
}
