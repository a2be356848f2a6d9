package agent

import (
	"slices"
	"testing"

	"github.com/allex-go/allex/lanwire"
)

// TestNeedProtocols: a need without protocols takes its module's; one
// asking for a protocol its module does not declare, or fixing a port of
// a protocol it does not get, is refused with the reason.
func TestNeedProtocols(t *testing.T) {
	tests := []struct {
		name   string
		need   lanwire.Need
		module []string
		want   []string
		err    string
	}{
		{"none takes the module's", lanwire.Need{Instance: "w", Module: "web"}, []string{"tcp", "http"}, []string{"tcp", "http"}, ""},
		{"a subset", lanwire.Need{Instance: "w", Module: "web", Protocols: []string{"http"}}, []string{"tcp", "http"}, []string{"http"}, ""},
		{"module declares none", lanwire.Need{Instance: "w", Module: "web", Protocols: []string{"ws"}}, nil, []string{"ws"}, ""},
		{"neither", lanwire.Need{Instance: "w", Module: "web"}, nil, nil, ""},
		{"fixed port of the module's protocol", lanwire.Need{Instance: "w", Module: "web", FixedPorts: lanwire.Ports{"http": 8080}}, []string{"http"}, []string{"http"}, ""},
		{"conflict", lanwire.Need{Instance: "w", Module: "web", Protocols: []string{"http", "ws"}}, []string{"tcp", "http"}, nil,
			"need w asks for protocol ws, which module web does not declare on this master (its protocols: tcp,http)"},
		{"fixed port of another protocol", lanwire.Need{Instance: "w", Module: "web", Protocols: []string{"http"}, FixedPorts: lanwire.Ports{"tcp": 9000}}, []string{"tcp", "http"}, nil,
			"need w: fixed tcp port 9000: tcp is not one of its protocols (http)"},
		{"fixed port, no protocols at all", lanwire.Need{Instance: "w", Module: "web", FixedPorts: lanwire.Ports{"tcp": 9000}}, nil, nil,
			"need w: fixed tcp port 9000: tcp is not one of its protocols (none)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := needProtocols(tt.need, tt.module)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("needProtocols = %v, %v; want %v", got, err, tt.want)
			}
			if len(tt.module) > 0 && len(got) > 0 && &got[0] == &tt.module[0] {
				t.Fatal("result shares the module's slice")
			}
		})
	}
}
