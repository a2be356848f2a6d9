package lanmanager

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/allex-go/allex/lanmanager/adminapi"
)

// ServiceFeed streams the LAN's service events from a store every LAN
// manager reads (store.WatchServices): the current services unless since
// is set, then every change after since, each with its revision. It
// calls emit(nil) once the stream is established.
type ServiceFeed func(ctx context.Context, module string, since int64, emit func([]adminapi.ServiceEvent) error) error

// FeedHandler serves GET /v1/services/watch from feed to callers ok
// lets in; a standby serves it as the leader does.
func FeedHandler(ok func(*http.Request) error, feed ServiceFeed) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := ok(r); err != nil {
			writeErr(w, err)
			return
		}
		serveFeed(w, r, feed)
	}
}

// sinceOf parses ?since=: a revision, 0 when absent.
func sinceOf(r *http.Request) (int64, error) {
	v := r.URL.Query().Get("since")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%w: since=%q: want a revision (a whole number, 0 or more)", adminapi.ErrInvalid, v)
	}
	return n, nil
}

func serveFeed(w http.ResponseWriter, r *http.Request, feed ServiceFeed) {
	since, err := sinceOf(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	started := false
	err = feed(r.Context(), r.URL.Query().Get("module"), since, func(evs []adminapi.ServiceEvent) error {
		if !started {
			w.Header().Set("Content-Type", "application/x-ndjson")
			w.WriteHeader(http.StatusOK)
			started = true
		}
		for _, ev := range evs {
			if err := enc.Encode(ev); err != nil {
				return err
			}
		}
		return rc.Flush()
	})
	if err != nil && !started && r.Context().Err() == nil {
		writeErr(w, err)
	}
}
