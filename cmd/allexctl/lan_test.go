package main

import (
	"strings"
	"testing"
)

func TestLanURL(t *testing.T) {
	tests := []struct{ in, want, err string }{
		// Without a scheme the LAN manager speaks TLS, as it does by default.
		{"127.0.0.1:23552", "https://127.0.0.1:23552", ""},
		{"lan.example:8080", "https://lan.example:8080", ""},
		{"lan.example", "https://lan.example:23552", ""},
		{"10.0.0.1", "https://10.0.0.1:23552", ""},
		{"::1", "https://[::1]:23552", ""},
		{"[::1]", "https://[::1]:23552", ""},
		{"[::1]:9000", "https://[::1]:9000", ""},
		// A scheme is taken as written: http:// for one run with -insecure.
		{"http://127.0.0.1:23552", "http://127.0.0.1:23552", ""},
		{"http://127.0.0.1:23552/", "http://127.0.0.1:23552", ""},
		{"https://lan.example", "https://lan.example", ""},
		{"https://127.0.0.1:23552/", "https://127.0.0.1:23552", ""},
		{"", "", `-lan "": no host`},
		{"127.0.0.1:abc", "", `-lan "127.0.0.1:abc": port "abc" is not a number 1-65535`},
		{"127.0.0.1:70000", "", `port "70000" is not a number 1-65535`},
		{"127.0.0.1:", "", `port "" is not a number 1-65535`},
		{"ftp://lan", "", `-lan "ftp://lan": scheme "ftp"`},
		{"http://", "", `-lan "http://": no host`},
		{"http://lan:0", "", `port "0" is not a number 1-65535`},
		{"http://lan/v1", "", "only a scheme, host and port are allowed"},
		{"http://u:p@lan", "", "only a scheme, host and port are allowed"},
		{"lan manager", "", `-lan "lan manager": invalid character " " in host name`},
	}
	for _, tt := range tests {
		got, err := lanURL(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), "want host, host:port or http(s)://host:port") {
				t.Errorf("lanURL(%q) = %q, %v; want an error with %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("lanURL(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}
