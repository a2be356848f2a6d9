package child_test

import (
	"maps"
	"strings"
	"testing"

	"github.com/allex-go/allex/child"
)

func TestEnvFromEnviron(t *testing.T) {
	base := []string{"ALLEX_MODULE=echo", "ALLEX_INSTANCE=echo1", "PATH=/bin"}
	with := func(extra ...string) []string { return append(append([]string(nil), base...), extra...) }
	tests := []struct {
		name    string
		environ []string
		want    child.Env
		wantErr string // substring; empty means success
	}{
		{
			name:    "minimal",
			environ: base,
			want:    child.Env{Module: "echo", Instance: "echo1", Ports: map[string]uint16{}, Properties: map[string]string{}},
		},
		{
			name: "everything",
			environ: with("ALLEX_TCP_PORT=15000", "ALLEX_HTTP_PORT=16000", "ALLEX_WS_PORT=17000",
				`ALLEX_PORTS={"tcp":15000,"http":16000,"ws":17000}`, "ALLEX_MASTER_SOCKET=/tmp/mm",
				`ALLEX_PROPERTIES={"a":"1","b":""}`),
			want: child.Env{Module: "echo", Instance: "echo1", MasterSocket: "/tmp/mm",
				Ports:      map[string]uint16{"tcp": 15000, "http": 16000, "ws": 17000},
				Properties: map[string]string{"a": "1", "b": ""}},
		},
		{
			name:    "ports only from ALLEX_PORTS",
			environ: with(`ALLEX_PORTS={"http":8080}`),
			want:    child.Env{Module: "echo", Instance: "echo1", Ports: map[string]uint16{"http": 8080}, Properties: map[string]string{}},
		},
		{
			name:    "ports JSON with whitespace",
			environ: with("ALLEX_PORTS= { \"tcp\" : 15000 ,\n \"ws\":17000 } "),
			want:    child.Env{Module: "echo", Instance: "echo1", Ports: map[string]uint16{"tcp": 15000, "ws": 17000}, Properties: map[string]string{}},
		},
		{
			name:    "later entry wins",
			environ: with("ALLEX_TCP_PORT=1", "ALLEX_TCP_PORT=2"),
			want:    child.Env{Module: "echo", Instance: "echo1", Ports: map[string]uint16{"tcp": 2}, Properties: map[string]string{}},
		},
		{name: "missing instance", environ: []string{"ALLEX_MODULE=echo"}, wantErr: "ALLEX_INSTANCE is not set"},
		{name: "empty instance", environ: []string{"ALLEX_MODULE=echo", "ALLEX_INSTANCE="}, wantErr: "ALLEX_INSTANCE is not set"},
		{name: "missing module", environ: []string{"ALLEX_INSTANCE=x"}, wantErr: "ALLEX_MODULE is not set"},
		{name: "port not a number", environ: with("ALLEX_TCP_PORT=abc"), wantErr: `ALLEX_TCP_PORT: invalid port "abc"`},
		{name: "port zero", environ: with("ALLEX_HTTP_PORT=0"), wantErr: "ALLEX_HTTP_PORT: invalid port"},
		{name: "port too big", environ: with("ALLEX_WS_PORT=65536"), wantErr: "ALLEX_WS_PORT: invalid port"},
		{name: "port negative", environ: with("ALLEX_WS_PORT=-1"), wantErr: "ALLEX_WS_PORT: invalid port"},
		{name: "port with spaces", environ: with("ALLEX_TCP_PORT= 80"), wantErr: `ALLEX_TCP_PORT: invalid port " 80"`},
		{name: "port with sign", environ: with("ALLEX_TCP_PORT=+80"), wantErr: `ALLEX_TCP_PORT: invalid port "+80"`},
		{name: "port empty", environ: with("ALLEX_TCP_PORT="), wantErr: "ALLEX_TCP_PORT: invalid port"},
		{name: "ports bad json", environ: with(`ALLEX_PORTS={"tcp":`), wantErr: "ALLEX_PORTS: not a JSON object"},
		{name: "ports not an object", environ: with(`ALLEX_PORTS=[1,2]`), wantErr: "ALLEX_PORTS: not a JSON object"},
		{name: "ports null", environ: with(`ALLEX_PORTS=null`), wantErr: "ALLEX_PORTS: not a JSON object"},
		{name: "ports string value", environ: with(`ALLEX_PORTS={"tcp":"15000"}`), wantErr: "ALLEX_PORTS: tcp: invalid port"},
		{name: "ports fraction", environ: with(`ALLEX_PORTS={"tcp":1.5}`), wantErr: "ALLEX_PORTS: tcp: invalid port"},
		{name: "ports unknown protocol", environ: with(`ALLEX_PORTS={"udp":1}`), wantErr: `ALLEX_PORTS: unknown protocol "udp"`},
		{name: "ports disagree", environ: with("ALLEX_TCP_PORT=1", `ALLEX_PORTS={"tcp":2}`), wantErr: "disagrees with ALLEX_TCP_PORT=1"},
		{name: "properties bad json", environ: with(`ALLEX_PROPERTIES={a}`), wantErr: "ALLEX_PROPERTIES: not a JSON object of strings"},
		{name: "properties not strings", environ: with(`ALLEX_PROPERTIES={"a":1}`), wantErr: "ALLEX_PROPERTIES: not a JSON object of strings"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := child.EnvFromEnviron(tt.environ)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if got.Module != tt.want.Module || got.Instance != tt.want.Instance || got.MasterSocket != tt.want.MasterSocket ||
				!maps.Equal(got.Ports, tt.want.Ports) || !maps.Equal(got.Properties, tt.want.Properties) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// FuzzEnvFromEnviron checks that any environment either parses into a
// usable Env or fails cleanly.
func FuzzEnvFromEnviron(f *testing.F) {
	f.Add("echo1", "15000", `{"tcp":15000,"http":16000}`, `{"a":"b"}`)
	f.Add("", "0", `null`, `[]`)
	f.Add("x", "65536", `{"tcp":"1"}`, `{"a":1}`)
	f.Add("x", " 80", `{"udp":1}`, ``)
	f.Fuzz(func(t *testing.T, instance, tcpPort, ports, props string) {
		environ := []string{"ALLEX_MODULE=m", "ALLEX_INSTANCE=" + instance, "ALLEX_TCP_PORT=" + tcpPort,
			"ALLEX_PORTS=" + ports, "ALLEX_PROPERTIES=" + props}
		env, err := child.EnvFromEnviron(environ)
		if err != nil {
			if !strings.Contains(err.Error(), "ALLEX_") {
				t.Fatalf("error %q does not name the variable", err)
			}
			return
		}
		if env.Instance == "" || env.Ports == nil || env.Properties == nil {
			t.Fatalf("accepted an unusable Env: %+v", env)
		}
		for proto, port := range env.Ports {
			if port == 0 {
				t.Fatalf("accepted port 0 for %s", proto)
			}
		}
		if _, err := child.New(child.Options{Env: &env}); err != nil {
			t.Fatalf("New rejects what EnvFromEnviron accepted: %v", err)
		}
	})
}
