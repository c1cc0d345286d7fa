package distributor

import "testing"

func TestAdvertised(t *testing.T) {
	for _, tc := range []struct {
		in       string
		host     string
		port     int
		mustFail bool
	}{
		{"", "", 9010, false},
		{"10.0.0.7", "10.0.0.7", 9010, false},
		{"goods-1.internal", "goods-1.internal", 9010, false},
		{"10.0.0.7:19010", "10.0.0.7", 19010, false},
		{"[2001:db8::1]:19010", "2001:db8::1", 19010, false},
		{"2001:db8::1", "2001:db8::1", 9010, false},
		{"10.0.0.7:0", "", 0, true},
		{"10.0.0.7:65536", "", 0, true},
		{"10.0.0.7:http", "", 0, true},
		{"no spaces", "", 0, true},
		{"-bad.example", "", 0, true},
		{"a..b", "", 0, true},
		{":9010", "", 0, true},
	} {
		host, port, err := Advertised(tc.in, 9010)
		if tc.mustFail {
			if err == nil {
				t.Errorf("Advertised(%q) = %q, %d; want an error", tc.in, host, port)
			}
			continue
		}
		if err != nil || host != tc.host || port != tc.port {
			t.Errorf("Advertised(%q) = %q, %d, %v; want %q, %d", tc.in, host, port, err, tc.host, tc.port)
		}
	}
}

func TestValidateHost(t *testing.T) {
	ok := Registration{Name: "goods", Host: "10.1.2.3", Port: 9010}
	if err := validate(ok); err != nil {
		t.Fatalf("validate(%+v) = %v", ok, err)
	}
	bad := Registration{Name: "goods", Host: "x y", Port: 9010}
	if err := validate(bad); err == nil {
		t.Fatalf("validate(%+v) = nil; want an error for the host", bad)
	}
}
