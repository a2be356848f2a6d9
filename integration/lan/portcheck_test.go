//go:build !windows

package lan_test

import (
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"

	"github.com/allex-go/allex/internal/e2e"
	"github.com/allex-go/allex/lanwire"
)

// TestPortCheckQuietForPythonHTTPServer: ten python http.servers are
// published, each after the LAN manager's port check, and none logs an
// error for the check (a reset made each print a traceback).
func TestPortCheckQuietForPythonHTTPServer(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed")
	}
	lan := e2e.StartLAN(t, e2e.LANOpts{})
	mod := fmt.Sprintf(`"pyhttp":{"command":%q,"args":["-m","http.server","${ALLEX_HTTP_PORT}","--bind","127.0.0.1"],`+
		`"protocols":["http"],"readiness":"ports","stoptimeout":"2s"}`, py)
	m := e2e.StartLANMaster(t, lan, e2e.MasterOpts{MachineID: "m1", Modules: mod})
	lan.WaitConnected(t, wait, "m1")
	insts := names("py", 10)
	for _, inst := range insts {
		lan.AddNeeds(t, lanwire.Need{Instance: inst, Module: "pyhttp", Protocols: []string{"http"}})
	}
	recs := lan.WaitServices(t, wait, insts...)
	for _, inst := range insts {
		// A request after the check: once python has logged it, it has
		// read the check's connection, accepted before.
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", recs[inst].Ports["http"]))
		if err != nil {
			t.Fatalf("%s: %v", inst, err)
		}
		resp.Body.Close()
		var logged string
		e2e.Eventually(t, wait, func() error {
			_, logged, err = e2e.Ctl(t, m.Socket, "logs", "-stream", "stderr", inst)
			if err != nil || !strings.Contains(logged, `"GET / HTTP/1.1" 200`) {
				return fmt.Errorf("%s has not logged the request (%v):\n%s", inst, err, logged)
			}
			return nil
		})
		if strings.Contains(logged, "Traceback") || strings.Contains(logged, "Exception") {
			t.Errorf("%s logged errors:\n%s", inst, logged)
		}
	}
}
