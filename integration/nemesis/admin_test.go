//go:build linux

package nemesis

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/allex-go/allex/internal/netns"
	"github.com/allex-go/allex/lanpki"
)

// admin speaks the LAN manager's admin HTTP API as JSON on the wire, not
// through lanmanager/adminclient: the checker must keep compiling while
// the LAN manager's Go types are rewritten, and reads only the fields
// every version has. Unknown fields are ignored. It speaks plain HTTP
// until trust gives it the LAN's CA, then HTTPS.
type admin struct {
	ip          string
	port        int
	base, token string
	http        *http.Client
}

// service is the part of a service record the checker judges.
type service struct {
	Instance string `json:"instance"`
	Machine  string `json:"machine"`
	Address  string `json:"address"`
	PID      int    `json:"pid"`
}

type needStatus struct {
	Need struct {
		Instance string `json:"instance"`
	} `json:"need"`
	State string `json:"state"`
}

// newAdmin calls the LAN manager at ip:port from inside namespace from.
func newAdmin(from *netns.Host, ip string, port int, token string) *admin {
	return &admin{ip: ip, port: port, base: fmt.Sprintf("http://%s:%d", ip, port), token: token, http: from.HTTPClient(2 * time.Second)}
}

// trust switches a to HTTPS, checking the LAN manager's certificate
// against the CA in caPEM as allexctl -ca does (it must name
// lanpki.ServerName, whatever address was dialled). Called before
// anything else uses a: it is not safe to call concurrently with calls.
func (a *admin) trust(caPEM []byte) error {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("the LAN's CA: no PEM certificate")
	}
	tr, ok := a.http.Transport.(*http.Transport)
	if !ok {
		return fmt.Errorf("the admin client's transport is a %T", a.http.Transport)
	}
	tr.TLSClientConfig = lanpki.ClientConfig(pool, nil)
	a.base = fmt.Sprintf("https://%s:%d", a.ip, a.port)
	return nil
}

// url is the LAN manager's base URL (https once trust was called).
func (a *admin) url() string { return a.base }

func (a *admin) do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	return resp.StatusCode, b, err
}

func (a *admin) getJSON(ctx context.Context, path string, v any) error {
	code, b, err := a.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", path, code, bytes.TrimSpace(b))
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
}

func (a *admin) services(ctx context.Context) ([]service, error) {
	var out []service
	return out, a.getJSON(ctx, "/v1/services", &out)
}

func (a *admin) needs(ctx context.Context) ([]needStatus, error) {
	var out []needStatus
	return out, a.getJSON(ctx, "/v1/needs", &out)
}

// addNeed posts a need of module on tcp; acknowledged means the LAN
// manager answered 201, the only answer that promises to keep it.
func (a *admin) addNeed(ctx context.Context, instance, module string) (acknowledged bool, err error) {
	body, _ := json.Marshal(map[string]any{"instance": instance, "module": module, "protocols": []string{"tcp"}})
	code, b, err := a.do(ctx, http.MethodPost, "/v1/needs", body)
	if err != nil {
		return false, err
	}
	if code != http.StatusCreated {
		return false, fmt.Errorf("POST /v1/needs %s: %d %s", instance, code, bytes.TrimSpace(b))
	}
	return true, nil
}
