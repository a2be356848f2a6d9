package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/allex-go/allex/lanmanager"
	"github.com/allex-go/allex/lanmanager/adminapi"
	"github.com/allex-go/allex/lanmanager/store"
)

// relayable says whether a standby relays r's link: over TLS a master
// that showed its certificate; over plain HTTP one with the LAN's token.
func (e *etcdLAN) relayable(r *http.Request) bool {
	if e.tls != nil {
		return verifiedMachine(r) != ""
	}
	_, err := lanmanager.BearerRole(r, e.cfg.Token, noTokens)
	return err == nil
}

func noTokens(string) (store.Token, bool) { return store.Token{}, false }

// mayRead checks a standby's watch caller: the LAN's token, or a read or
// admin token made on the LAN, read from etcd.
func (e *etcdLAN) mayRead(r *http.Request) error {
	role, err := lanmanager.BearerRole(r, e.cfg.Token, e.tokenByID)
	if err != nil {
		return err
	}
	if !lanmanager.MayRead(role) {
		return fmt.Errorf("%w: the watch needs a read or admin token", adminapi.ErrForbidden)
	}
	return nil
}

func (e *etcdLAN) tokenByID(id string) (store.Token, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := e.cli.Get(ctx, e.es.prefix+"/tokens/"+id)
	if err != nil || len(resp.Kvs) == 0 {
		return store.Token{}, false
	}
	var t store.Token
	if json.Unmarshal(resp.Kvs[0].Value, &t) != nil {
		return store.Token{}, false
	}
	return t, true
}
