package packet_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/microshop/microshop/packet"
)

// Framing: a stream carries JSON objects each followed by ¶; the Decoder
// splits it into packets however the bytes arrive.
func ExampleDecoder() {
	stream := `{"uri":"/goods","method":"GET","key":1,"params":{}}¶{"key":1,"errorcode":0,"errormessage":"success"}¶`
	d := packet.NewDecoder(strings.NewReader(stream), packet.DefaultMaxSize)
	for {
		p, err := d.Next()
		if err != nil {
			break // io.EOF at the end of the stream
		}
		m, _ := packet.Decode(p)
		fmt.Printf("request=%v key=%s\n", m.IsRequest(), m.Key)
	}
	// Output:
	// request=true key=1
	// request=false key=1
}

// A request in the book's form, framed and ready to write. The key is
// copied into params too, where the book's services look for it.
func ExampleAppendRequest() {
	b := packet.AppendRequest(nil, "/goods", "GET", 7, []byte(`{"id":1}`))
	fmt.Println(string(b))
	// Output:
	// {"uri":"/goods","method":"GET","key":7,"params":{"id":1,"key":7}}¶
}

// Two ends of a connection: one answers requests, the other calls. Many
// calls may be in flight on one Conn; answers are matched by key.
func ExampleConn() {
	client, server := net.Pipe()
	quiet := slog.New(slog.DiscardHandler)
	srv := packet.NewConn(server, packet.Options{
		Logger: quiet,
		OnMessage: func(c *packet.Conn, m *packet.Message) {
			answer := packet.AppendResponse(nil, m.Key, 0, "success", []byte(`{"goods":[]}`))
			c.Write(context.Background(), answer)
		},
	})
	defer srv.Close()
	c := packet.NewConn(client, packet.Options{Logger: quiet})
	defer c.Close()

	m, err := c.Call(context.Background(), "GET", "/goods", []byte(`{}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(*m.ErrorCode, m.ErrorMessage)
	// Output:
	// 0 success
}
