package adminclient

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/allex-go/allex/lanmanager/adminapi"
)

// CreateToken makes a token of role, expiring after ttl (0: never).
func (c *Client) CreateToken(ctx context.Context, role string, ttl time.Duration, description string) (adminapi.CreatedToken, error) {
	var out adminapi.CreatedToken
	body, _ := json.Marshal(adminapi.TokenRequest{Role: role, TTLSeconds: int64(ttl / time.Second), Description: description})
	err := c.postJSON(ctx, "/v1/tokens", body, &out)
	return out, err
}

// Tokens lists the tokens made on the LAN, without their secrets.
func (c *Client) Tokens(ctx context.Context) ([]adminapi.TokenInfo, error) {
	var out []adminapi.TokenInfo
	err := c.getJSON(ctx, "/v1/tokens", &out)
	return out, err
}

// RevokeToken deletes a token; it is refused from then on.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	resp, err := c.do(ctx, http.MethodDelete, "/v1/tokens/"+url.PathEscape(id), nil)
	if err != nil {
		return err
	}
	return drainClose(resp)
}

// RevokeMachine cuts a machine off for good: its link is closed, it is
// refused from then on, and its needs move once it is fenced.
func (c *Client) RevokeMachine(ctx context.Context, id, reason string) error {
	body, _ := json.Marshal(adminapi.RevokeRequest{Reason: reason})
	resp, err := c.do(ctx, http.MethodPost, "/v1/machines/"+url.PathEscape(id)+"/revoke", body)
	if err != nil {
		return err
	}
	return drainClose(resp)
}

func (c *Client) postJSON(ctx context.Context, path string, body []byte, v any) error {
	resp, err := c.do(ctx, http.MethodPost, path, body)
	if err != nil {
		return err
	}
	defer drainClose(resp)
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("LAN manager POST %s: decode: %w", path, err)
	}
	return nil
}
