// Package distributor is the registry of a microshop fleet: the server that
// knows where every process is, and the client every process uses to
// register and to watch the list.
//
// The protocol is the book's: a process sends
//
//	{"uri":"/distributes","method":"POST","key":0,"params":{"name":"goods","port":9010,"urls":["GET/goods"]}}
//
// and the distributor pushes the full list of registered processes to every
// connection whenever it changes, and at once to a new connection:
//
//	{"uri":"/distributes","method":"GET","key":0,"params":[{"name":"goods","host":"127.0.0.1","port":9010,"urls":[...]}]}
//
// A process leaves the list when its connection closes.
package distributor

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Node is one registered process as the distributor lists it.
type Node struct {
	Name string   `json:"name"`
	Host string   `json:"host"`
	Port int      `json:"port"`
	URLs []string `json:"urls"`
	// Heartbeat tells that the process heartbeats (packet.Options.Heartbeat)
	// on the connections it accepts once its caller does: a microshop
	// extension from its Registration, which the book's distributor passes
	// on as it passes every field; a book process never sets it.
	Heartbeat bool `json:"heartbeat,omitempty"`
	// Identities tells that the process enforces the identity a gate
	// vouches for in a request's auth object (see Registration.Identities).
	Identities bool `json:"identities,omitempty"`
}

// Addr returns the host:port to dial, with an IPv4-mapped IPv6 host (as a
// Node.js distributor reports it, "::ffff:127.0.0.1") turned into plain IPv4.
func (n Node) Addr() string {
	host := n.Host
	if a, err := netip.ParseAddr(host); err == nil {
		host = a.Unmap().String()
	}
	return net.JoinHostPort(host, strconv.Itoa(n.Port))
}

// Equal reports whether two nodes are the same registration.
func (n Node) Equal(o Node) bool {
	return n.Name == o.Name && n.Host == o.Host && n.Port == o.Port && n.Heartbeat == o.Heartbeat && n.Identities == o.Identities && slices.Equal(n.URLs, o.URLs)
}

// Registration is what a process tells the distributor about itself.
type Registration struct {
	Name string `json:"name"`
	// Host, when set, is the host others should dial to reach the process
	// (its --advertise address). A microshop extension: without it, and
	// with the book's distributor, which ignores it, the host is the
	// address the registration came from.
	Host string   `json:"host,omitempty"`
	Port int      `json:"port"`
	URLs []string `json:"urls"`
	// Heartbeat tells that the process heartbeats: on its connection to the
	// distributor (a microshop distributor starts heartbeats on it when it
	// reads the registration) and on the connections it accepts (see
	// Node.Heartbeat). Another extension the book's distributor ignores.
	Heartbeat bool `json:"heartbeat,omitempty"`
	// Identities tells that the process enforces the identity in a
	// request's auth object: who may do what (every microshop service
	// does). The book's services ignore that object, so a gate that checks
	// tokens must not route to them (service.ClientConfig.IdentitiesOnly).
	// Another extension the book's distributor passes on; unsigned, as it
	// needs no signature: with a fleet key only signed registrations, all
	// microshop's, are listed.
	Identities bool `json:"identities,omitempty"`
	// Nonce, Exp and Sig sign the registration when the fleet has a key
	// (see ClientConfig.FleetKey and Server.FleetKey): Nonce is the one the
	// distributor gave this connection (so a captured registration is worth
	// nothing on another), Exp a Unix time after which it is refused. More
	// microshop extensions the book's distributor ignores.
	Nonce string `json:"nonce,omitempty"`
	Exp   int64  `json:"exp,omitempty"`
	Sig   string `json:"sig,omitempty"`
}

// Limits on a registration, so one bad peer cannot bloat every list.
const (
	maxHostLen = 253
	maxNameLen = 64
	maxURLs    = 1024
	maxURLLen  = 256
)

// isListURI reports whether uri names the distributor's list; some copies of
// the book's distributor send it without the leading slash.
func isListURI(uri string) bool { return uri == "/distributes" || uri == "distributes" }

// listPacket is the push that carries the full list.
type listPacket struct {
	URI    string `json:"uri"`
	Method string `json:"method"`
	Key    int    `json:"key"`
	Params []Node `json:"params"`
}

// registerPacket is the registration request.
type registerPacket struct {
	URI    string       `json:"uri"`
	Method string       `json:"method"`
	Key    int          `json:"key"`
	Params Registration `json:"params"`
}

// decodeList parses a pushed list; ok is false when params is not an array.
func decodeList(params json.RawMessage) ([]Node, bool) {
	if len(params) == 0 || params[0] != '[' {
		return nil, false
	}
	var nodes []Node
	if err := json.Unmarshal(params, &nodes); err != nil {
		return nil, false
	}
	return nodes, true
}

// Advertised returns the host and port that a process listening on
// listenPort registers, given its advertise address: "" (the host the
// distributor sees the registration come from, and listenPort), "HOST"
// (that host, listenPort) or "HOST:PORT" (both, e.g. behind NAT or a
// container's port mapping).
func Advertised(advertise string, listenPort int) (host string, port int, err error) {
	if advertise == "" {
		return "", listenPort, nil
	}
	host, port = advertise, listenPort
	if h, p, err := net.SplitHostPort(advertise); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return "", 0, fmt.Errorf("advertise address %q: bad port", advertise)
		}
		host, port = h, n
	} else if strings.Count(advertise, ":") == 1 {
		return "", 0, fmt.Errorf("advertise address %q: %v", advertise, err)
	}
	if !ValidHost(host) {
		return "", 0, fmt.Errorf("advertise address %q: want HOST or HOST:PORT, HOST an IP address or a host name", advertise)
	}
	return host, port, nil
}
