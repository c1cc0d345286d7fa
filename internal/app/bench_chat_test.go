package app

import (
	"bytes"
	"context"
	"io"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

var deliveriesRE = regexp.MustCompile(`deliveries\s+(\d+) of (\d+) expected \((\d+) missing\), (\d+) out of order`)

// The chat load tool runs against a real fleet and counts every delivery.
func TestBenchChat(t *testing.T) {
	base := fleet(t)
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := Run(ctx, []string{"bench", "chat", "--gates", base, "--subscribers", "20", "--publishers", "2",
		"--rate", "10", "--duration", "1s", "--drain", "3s"}, func(string) string { return "" }, &out, io.Discard)
	if err != nil {
		t.Fatalf("bench chat: %v\n%s", err, out.String())
	}
	m := deliveriesRE.FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no deliveries line in the report:\n%s", out.String())
	}
	got, _ := strconv.Atoi(m[1])
	want, _ := strconv.Atoi(m[2])
	if want == 0 || got != want || m[3] != "0" || m[4] != "0" {
		t.Fatalf("report: %q; want every expected delivery, none missing or out of order:\n%s", m[0], out.String())
	}
	if !strings.Contains(out.String(), "p99") {
		t.Fatalf("the report has no latency percentiles:\n%s", out.String())
	}
}

// Against a gate that checks tokens, the tool without --token says what
// to do.
func TestBenchChatNeedsToken(t *testing.T) {
	base := fleet(t, "--auth", "on")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := Run(ctx, []string{"bench", "chat", "--gates", base, "--subscribers", "1", "--publishers", "1", "--duration", "1s"},
		func(string) string { return "" }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--token") {
		t.Fatalf("bench chat against a gate with --auth=on = %v; want an error naming --token", err)
	}
}
