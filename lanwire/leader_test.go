package lanwire

import "testing"

// TestLeaderBase: only a plain http(s) URL naming a host is followed.
func TestLeaderBase(t *testing.T) {
	for in, want := range map[string]string{
		"http://10.0.0.1:23552":       "http://10.0.0.1:23552",
		"https://lm.example:23552/":   "https://lm.example:23552",
		"":                            "",
		"ftp://10.0.0.1":              "",
		"http://user@10.0.0.1:23552":  "",
		"http://10.0.0.1:23552/other": "",
		"http://10.0.0.1:23552/?q=1":  "",
		"10.0.0.1:23552":              "",
	} {
		if got := LeaderBase(in); got != want {
			t.Errorf("LeaderBase(%q) = %q, want %q", in, got, want)
		}
	}
}
