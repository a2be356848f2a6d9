package lanmanager_test

import "testing"

// TestOfferWindow: a backlog bigger than the window is offered a window at
// a time, in order, and every need still gets offered.
func TestOfferWindow(t *testing.T) {
	cfg := testConfig()
	cfg.OfferWindow = 4
	e := start(t, cfg)
	var all []string
	for i := range 10 {
		n := tcpNeed(string(rune('a'+i)), "web")
		e.addNeeds(n)
		all = append(all, n.Instance)
	}
	m := e.connect(t, hello("m1", "web"))
	m.expectNeeds(all[:4]...)
	for _, inst := range all[:4] {
		m.claim(inst)
	}
	m.expectNeeds(all[4:8]...)
	for _, inst := range all[4:8] {
		m.claim(inst)
	}
	m.expectNeeds(all[8:]...)
}
