package lanmanager_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanwire"
)

// TestFixedPortWithoutProtocolRefused: a fixed port whose protocol the
// need does not list, protocols left out included, is refused by the
// admin API (alone or in a batch, which then adds nothing) and in a needs
// file, naming the need and the field.
func TestFixedPortWithoutProtocolRefused(t *testing.T) {
	e := start(t, testConfig())
	for _, body := range []string{
		`{"instance":"f1","module":"web","fixedports":{"tcp":9000}}`,
		`[{"instance":"f0","module":"web"},{"instance":"f1","module":"web","fixedports":{"tcp":9000}}]`,
	} {
		req, _ := http.NewRequest("POST", e.base+"/v1/needs", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var eb adminapi.ErrorBody
		_ = json.NewDecoder(resp.Body).Decode(&eb)
		resp.Body.Close()
		const want = "need f1: fixedports.tcp: tcp is not in protocols (none); list it there too"
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(eb.Error, want) {
			t.Errorf("POST %s = %d %q, want 400 %q", body, resp.StatusCode, eb.Error, want)
		}
	}
	if ns := e.needs(); len(ns) != 0 {
		t.Fatalf("needs after refused adds: %+v", ns)
	}
	_, err := lanwire.ParseNeedsFile("f.json", []byte(`{"needs":[{"instance":"f1","module":"web","protocols":["http"],"fixedports":{"tcp":9000}}]}`))
	if err == nil || !strings.Contains(err.Error(), `needs file f.json: needs[0] (instance "f1")`) || !strings.Contains(err.Error(), "fixedports.tcp") {
		t.Fatalf("needs file: %v", err)
	}
	_, err = lanwire.ParseNeedsFile("f.json", []byte(`{"needs":[{"instance":"f1","module":"web","fixedports":{"tcp":9000}}]}`))
	if err == nil || !strings.Contains(err.Error(), "fixedports.tcp: tcp is not in protocols (none)") {
		t.Fatalf("needs file without protocols: %v", err)
	}
}
