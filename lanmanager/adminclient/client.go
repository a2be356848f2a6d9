// Package adminclient is the Go client of the LAN manager's admin HTTP API
// (see package lanmanager for the endpoints). allexctl and tests use it.
package adminclient

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanpki"
	"github.com/allex-go/allex/lanwire"
)

// Error kinds; match with errors.Is.
var (
	ErrNotFound     = adminapi.ErrNotFound
	ErrConflict     = adminapi.ErrConflict
	ErrUnauthorized = adminapi.ErrUnauthorized
	ErrForbidden    = adminapi.ErrForbidden
	ErrInvalid      = adminapi.ErrInvalid
	ErrCompacted    = adminapi.ErrCompacted
)

// HTTPError is a non-2xx answer; it unwraps to the error kind of its status.
type HTTPError struct {
	Status  int
	Message string
	// leader is the leader a standby named.
	leader string
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("LAN manager: %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// Unwrap maps the status to an error kind.
func (e *HTTPError) Unwrap() error {
	switch e.Status {
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusConflict:
		return ErrConflict
	case http.StatusUnauthorized:
		return ErrUnauthorized
	case http.StatusForbidden:
		return ErrForbidden
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		return ErrInvalid
	case http.StatusGone:
		return ErrCompacted
	}
	return nil
}

// Client talks to one LAN manager.
type Client struct {
	base  string
	token string
	// HTTP is the transport; Watch streams need it without a Timeout.
	HTTP *http.Client
}

// New returns a client for baseURL (e.g. "https://127.0.0.1:23552").
// A token that carries the LAN's CA fingerprint ("K10<sha256>::…", as
// `allexlanmanager token create` prints) makes the client trust that CA
// alone; otherwise give the CA with WithCA.
func New(baseURL, token string) *Client {
	c := &Client{base: strings.TrimRight(baseURL, "/"), token: token, HTTP: &http.Client{}}
	if fp, bearer, ok := lanpki.SplitPin(token); ok {
		cfg, _ := lanpki.PinnedConfig(fp)
		c.token = bearer
		c.HTTP.Transport = transport(cfg)
	}
	return c
}

// WithCA makes the client trust the CA certificates in pool (and no
// pin). It returns c.
func (c *Client) WithCA(pool *x509.CertPool) *Client {
	c.HTTP.Transport = transport(lanpki.ClientConfig(pool, nil))
	return c
}

func transport(cfg *tls.Config) *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	return tr
}

// LeaderHeader names, on a standby's 503, the LAN manager that leads
// (LAN managers sharing etcd).
const LeaderHeader = lanwire.LeaderHeader

// do sends one request; a standby's 503 naming the leader is followed
// once, to the leader.
func (c *Client) do(ctx context.Context, method, path string, body []byte) (*http.Response, error) {
	resp, err := c.send(ctx, c.base, method, path, body)
	var he *HTTPError
	if errors.As(err, &he) && he.leader != "" && he.leader != c.base {
		return c.send(ctx, he.leader, method, path, body)
	}
	return resp, err
}

func (c *Client) send(ctx context.Context, base, method, path string, body []byte) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("LAN manager %s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("LAN manager %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		var eb adminapi.ErrorBody
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &eb) == nil && eb.Error != "" {
			msg = eb.Error
		}
		he := &HTTPError{Status: resp.StatusCode, Message: msg}
		if resp.StatusCode == http.StatusServiceUnavailable {
			he.leader = lanwire.LeaderBase(resp.Header.Get(LeaderHeader))
		}
		return nil, he
	}
	return resp, nil
}

func (c *Client) getJSON(ctx context.Context, path string, v any) error {
	resp, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	defer drainClose(resp)
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("LAN manager GET %s: decode: %w", path, err)
	}
	return nil
}

// AddNeed adds a need.
func (c *Client) AddNeed(ctx context.Context, n lanwire.Need) error {
	return c.postNeeds(ctx, "add need", n)
}

// AddNeeds adds several needs in one request, all or none.
func (c *Client) AddNeeds(ctx context.Context, needs []lanwire.Need) error {
	return c.postNeeds(ctx, "add needs", needs)
}

// postNeeds posts v, a need or a list of them, to /v1/needs.
func (c *Client) postNeeds(ctx context.Context, what string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	resp, err := c.do(ctx, http.MethodPost, "/v1/needs", b)
	if err != nil {
		return err
	}
	return drainClose(resp)
}

// RemoveNeed removes a need (stopping its service if one runs).
func (c *Client) RemoveNeed(ctx context.Context, instance string) error {
	resp, err := c.do(ctx, http.MethodDelete, "/v1/needs/"+url.PathEscape(instance), nil)
	if err != nil {
		return err
	}
	return drainClose(resp)
}

// Needs lists every need and its state.
func (c *Client) Needs(ctx context.Context) ([]adminapi.NeedStatus, error) {
	var out []adminapi.NeedStatus
	return out, c.getJSON(ctx, "/v1/needs", &out)
}

// Services lists published services; empty arguments match everything.
func (c *Client) Services(ctx context.Context, module, instance string) ([]lanwire.ServiceRecord, error) {
	q := url.Values{}
	if module != "" {
		q.Set("module", module)
	}
	if instance != "" {
		q.Set("instance", instance)
	}
	path := "/v1/services"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out []lanwire.ServiceRecord
	return out, c.getJSON(ctx, path, &out)
}

// Service returns one service (ErrNotFound if it is not published).
func (c *Client) Service(ctx context.Context, instance string) (lanwire.ServiceRecord, error) {
	var out lanwire.ServiceRecord
	return out, c.getJSON(ctx, "/v1/services/"+url.PathEscape(instance), &out)
}

// Machines lists known masters.
func (c *Client) Machines(ctx context.Context) ([]adminapi.MachineInfo, error) {
	var out []adminapi.MachineInfo
	return out, c.getJSON(ctx, "/v1/machines", &out)
}

// ErrStreamEnded is returned by Watch when the server ends the stream
// (it stops, or this watcher fell behind).
var ErrStreamEnded = errors.New("watch stream ended by the LAN manager")

// Watch calls fn for every service event of module ("" for all): first one
// "up" per current service, then live events. It returns when ctx is done
// (ctx.Err()), when fn returns an error (that error), or when the stream
// ends.
func (c *Client) Watch(ctx context.Context, module string, fn func(adminapi.ServiceEvent) error) error {
	return c.WatchSince(ctx, module, 0, fn)
}

// WatchSince is Watch resumed after revision since (the Revision of the
// last event seen; 0: from the start, with the current services). Only
// LAN managers on etcd keep revisions; an older revision than etcd keeps
// is ErrCompacted.
func (c *Client) WatchSince(ctx context.Context, module string, since int64, fn func(adminapi.ServiceEvent) error) error {
	q := url.Values{}
	if module != "" {
		q.Set("module", module)
	}
	if since != 0 {
		q.Set("since", strconv.FormatInt(since, 10))
	}
	path := "/v1/services/watch"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	resp, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		var ev adminapi.ServiceEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("watch: decode event: %w", err)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	return ErrStreamEnded
}

// drainClose reads what is left of an answer before closing it, so that
// its connection is kept for the next call (a new TLS connection costs a
// handshake).
func drainClose(resp *http.Response) error {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	return resp.Body.Close()
}
