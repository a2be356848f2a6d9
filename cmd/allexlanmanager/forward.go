package main

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"github.com/allex-go/allex/lanpki"
	"github.com/allex-go/allex/lanwire"
)

// forwardedHeader marks a call a standby forwarded, so that it is never
// forwarded twice (a stale leader key naming another standby).
const forwardedHeader = "X-Allex-Forwarded-By"

// forwardable says whether a standby forwards r to leader: admin calls
// do, once; a master's link only when it asks to be relayed (by default
// it is told where the leader is and links there itself, one hop).
func forwardable(r *http.Request, leader, self string) bool {
	if r.URL.Path == lanwire.Path && r.Header.Get(lanwire.RelayHeader) == "" {
		return false
	}
	return leader != "" && leader != self && strings.HasPrefix(r.URL.Path, "/v1/") && r.Header.Get(forwardedHeader) == ""
}

// leaderTransport dials the leader within a second: a leader that does
// not answer by then is down or out of reach, and the caller should hear
// so while it can still try elsewhere. Over TLS it shows this LAN
// manager's certificate, so the leader believes the machine it names.
func leaderTransport(t *serverTLS) *http.Transport {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: time.Second}).DialContext,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
	}
	if t != nil {
		tr.TLSClientConfig = t.clientConfig()
		tr.TLSHandshakeTimeout = time.Second
	}
	return tr
}

// verifiedMachine is the machine whose certificate r's connection
// showed (verified in the handshake), or "".
func verifiedMachine(r *http.Request) string {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return ""
	}
	id, _ := lanpki.MachineOf(r.TLS.PeerCertificates[0])
	return id
}

// forward proxies r to leader and copies its answer back; a relayed
// link's WebSocket is copied both ways until either end closes it or the
// standby stops standing by. failed is called when the leader cannot be
// reached.
func forward(w http.ResponseWriter, r *http.Request, leader string, toLeader *http.Transport, failed func()) {
	target, err := url.Parse(leader)
	if err != nil {
		unavailable(w, "", "standby LAN manager: bad leader address "+leader)
		return
	}
	p := &httputil.ReverseProxy{
		Transport: toLeader,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Header.Set(forwardedHeader, r.Host)
			// Only what this standby verified names a machine.
			pr.Out.Header.Del(lanwire.RelayedMachineHeader)
			if id := verifiedMachine(r); id != "" {
				pr.Out.Header.Set(lanwire.RelayedMachineHeader, id)
			}
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			failed()
			unavailable(w, leader, "standby LAN manager: forwarding to the leader "+leader+": "+err.Error())
		},
	}
	p.ServeHTTP(w, r)
}
