package gate

import (
	"net/http/httptest"
	"net/netip"
	"testing"
)

func TestClientAddr(t *testing.T) {
	proxies, err := ParseTrustedProxies("10.0.0.0/8, 192.168.1.1,::1")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		peer    string
		xff     []string
		proxies []netip.Prefix
		want    string
	}{
		{"no proxies: XFF ignored", "203.0.113.9:5000", []string{"1.2.3.4"}, nil, "203.0.113.9"},
		{"untrusted peer: XFF ignored", "203.0.113.9:5000", []string{"1.2.3.4"}, proxies, "203.0.113.9"},
		{"trusted peer, one hop", "10.1.2.3:5000", []string{"198.51.100.7"}, proxies, "198.51.100.7"},
		{"forged left entries", "10.1.2.3:5000", []string{"6.6.6.6, 198.51.100.7"}, proxies, "198.51.100.7"},
		{"chain of trusted proxies", "10.1.2.3:5000", []string{"6.6.6.6, 198.51.100.7, 192.168.1.1, 10.9.9.9"}, proxies, "198.51.100.7"},
		{"several headers", "10.1.2.3:5000", []string{"6.6.6.6", "198.51.100.7, 10.2.2.2"}, proxies, "198.51.100.7"},
		{"all trusted: leftmost", "10.1.2.3:5000", []string{"10.5.5.5, 10.6.6.6"}, proxies, "10.5.5.5"},
		{"garbage ends the walk", "10.1.2.3:5000", []string{"198.51.100.7, garbage, 10.4.4.4"}, proxies, "10.4.4.4"},
		{"entries with ports", "10.1.2.3:5000", []string{"198.51.100.7:1234"}, proxies, "198.51.100.7"},
		{"ipv6 peer trusted", "[::1]:5000", []string{"2001:db8::1"}, proxies, "2001:db8::1"},
		{"no XFF from a proxy", "10.1.2.3:5000", nil, proxies, "10.1.2.3"},
		{"mapped peer", "[::ffff:203.0.113.9]:5000", nil, proxies, "203.0.113.9"},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/goods", nil)
		r.RemoteAddr = tt.peer
		for _, h := range tt.xff {
			r.Header.Add("X-Forwarded-For", h)
		}
		if got := ClientAddr(r, tt.proxies); got.String() != tt.want {
			t.Errorf("%s: ClientAddr = %v; want %s", tt.name, got, tt.want)
		}
	}
	if _, err := ParseTrustedProxies("10.0.0.0/8,nonsense"); err == nil {
		t.Error("ParseTrustedProxies(nonsense) succeeded")
	}
}
