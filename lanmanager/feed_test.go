package lanmanager

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/store"
	"github.com/allex-go/allex/lanwire"
)

// TestFeedHandler: the token is checked; ?since= reaches the feed and a
// bad one is refused; an error before anything was streamed is the
// answer's status (410 for a compacted revision); events are NDJSON.
func TestFeedHandler(t *testing.T) {
	feed := func(_ context.Context, module string, since int64, emit func([]adminapi.ServiceEvent) error) error {
		if since == 7 {
			return fmt.Errorf("%w: revision 7 is gone", adminapi.ErrCompacted)
		}
		return emit([]adminapi.ServiceEvent{{Type: adminapi.EventUp, Service: lanwire.ServiceRecord{Instance: module}, Revision: since + 1}})
	}
	h := FeedHandler(func(r *http.Request) error {
		_, err := BearerRole(r, "tok", func(string) (store.Token, bool) { return store.Token{}, false })
		return err
	}, feed)
	for _, tc := range []struct {
		query, token string
		status       int
		body         string
	}{
		{"?module=web&since=3", "tok", 200, `{"type":"up","service":{"instance":"web"`},
		{"?since=3", "wrong", 401, "bearer token"},
		{"?since=-1", "tok", 400, "want a revision"},
		{"?since=x", "tok", 400, "want a revision"},
		{"?since=7", "tok", 410, "revision 7 is gone"},
	} {
		r := httptest.NewRequest("GET", "/v1/services/watch"+tc.query, nil)
		r.Header.Set("Authorization", "Bearer "+tc.token)
		w := httptest.NewRecorder()
		h(w, r)
		if w.Code != tc.status || !strings.Contains(w.Body.String(), tc.body) {
			t.Errorf("%s: %d %q, want %d with %q", tc.query, w.Code, w.Body, tc.status, tc.body)
		}
	}
}

// TestSinceNeedsEtcd: a LAN manager without a feed (bbolt, memory) keeps
// no revisions, and says so.
func TestSinceNeedsEtcd(t *testing.T) {
	s, err := New(Config{Token: "tok", Store: store.NewMemory()})
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/v1/services/watch?since=5", nil)
	r.Header.Set("Authorization", "Bearer tok")
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, r)
	if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "needs LAN managers on etcd") {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
}
