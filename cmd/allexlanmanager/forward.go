package main

import (
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"

	"github.com/allex-go/allex/lanwire"
)

// forwardedHeader marks a call a standby forwarded, so that it is never
// forwarded twice (a stale leader key naming another standby).
const forwardedHeader = "X-Allex-Forwarded-By"

// forwardable says whether a standby forwards r to leader: admin calls
// do, once; a master's link does not (it is told where the leader is and
// links there itself, so that it is heard by the LAN manager that
// decides its grants).
func forwardable(r *http.Request, leader, self string) bool {
	return leader != "" && leader != self && r.URL.Path != lanwire.Path &&
		strings.HasPrefix(r.URL.Path, "/v1/") && r.Header.Get(forwardedHeader) == ""
}

// forward proxies r to leader and copies its answer back.
func forward(w http.ResponseWriter, r *http.Request, leader string) {
	target, err := url.Parse(leader)
	if err != nil {
		unavailable(w, "", "standby LAN manager: bad leader address "+leader)
		return
	}
	p := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Header.Set(forwardedHeader, r.Host)
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			unavailable(w, leader, "standby LAN manager: forwarding to the leader "+leader+": "+err.Error())
		},
	}
	p.ServeHTTP(w, r)
}
