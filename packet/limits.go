package packet

import (
	"net"
	"sync"
)

// Default connection limits of a listener (see Limits).
const (
	DefaultMaxConns        = 1024
	DefaultMaxConnsPerHost = 64
)

// Limits caps the connections a listener keeps open: in all, and from one
// remote host, so that one client cannot take every slot. The zero value
// means the defaults; a negative field, no limit.
type Limits struct {
	Max     int // connections in all (DefaultMaxConns when 0)
	PerHost int // connections from one remote IP address (DefaultMaxConnsPerHost when 0)
	// Exempt, when set, reports hosts that PerHost does not apply to (a
	// proxy whose clients all come from its address).
	Exempt func(host string) bool
}

// ConnCounter counts a listener's open connections against Limits.
type ConnCounter struct {
	max, perHost int
	exempt       func(string) bool

	mu    sync.Mutex
	total int
	hosts map[string]int
}

// NewConnCounter returns a counter for l.
func NewConnCounter(l Limits) *ConnCounter {
	c := &ConnCounter{max: l.Max, perHost: l.PerHost, exempt: l.Exempt, hosts: map[string]int{}}
	if c.max == 0 {
		c.max = DefaultMaxConns
	}
	if c.perHost == 0 {
		c.perHost = DefaultMaxConnsPerHost
	}
	return c
}

// Admit counts a new connection from addr and reports whether it may stay
// open; if so, release must be called once it has closed.
func (c *ConnCounter) Admit(addr net.Addr) (release func(), ok bool) {
	host := addr.String()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	per := c.perHost
	if c.exempt != nil && c.exempt(host) {
		per = -1
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.max > 0 && c.total >= c.max || per > 0 && c.hosts[host] >= per {
		return nil, false
	}
	c.total++
	c.hosts[host]++
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.total--
			if c.hosts[host]--; c.hosts[host] <= 0 {
				delete(c.hosts, host)
			}
		})
	}, true
}

// limitListener wraps a listener so that Accept closes at once, and does
// not return, the connections over l's limits (see LimitListener).
type limitListener struct {
	net.Listener
	c       *ConnCounter
	refused func(net.Addr)
}

// LimitListener returns ln with every accepted connection counted by c: one
// over a limit is closed at once (refused, when not nil, hears of it) and
// Accept goes on to the next; the others are released when closed.
func LimitListener(ln net.Listener, c *ConnCounter, refused func(net.Addr)) net.Listener {
	return &limitListener{Listener: ln, c: c, refused: refused}
}

func (ll *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := ll.Listener.Accept()
		if err != nil {
			return nil, err
		}
		release, ok := ll.c.Admit(c.RemoteAddr())
		if !ok {
			c.Close()
			if ll.refused != nil {
				ll.refused(c.RemoteAddr())
			}
			continue
		}
		return &limitedConn{Conn: c, release: release}, nil
	}
}

type limitedConn struct {
	net.Conn
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}
