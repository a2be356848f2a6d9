package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// valid is a minimal valid file; bad cases are mostly small edits of it.
const valid = `{
  "lanmanageraddress": "127.0.0.1",
  "portrangestart": {"tcp": 15000, "http": 16000, "ws": 17000}
}`

// withModules returns a valid file with the given extra top-level fields.
func withFields(extra string) string {
	return `{"lanmanageraddress": "127.0.0.1", "portrangestart": {"tcp": 15000, "http": 16000, "ws": 17000}, ` + extra + `}`
}

func withModule(mod string) string {
	return withFields(`"modules": {"web": {"command": "/bin/web", ` + mod + `}}`)
}

func TestLoadBadFiles(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    []string // substrings of the error after "<path>: "
	}{
		{"malformed", "{\n  \"lanmanageraddress\": \"127.0.0.1\",\n  \"portrangestart\" {}\n}",
			[]string{"line 3, column 20: invalid character '{' after object key"}},
		{"truncated", "{\n  \"lanmanageraddress\": \"127.0.0.1\",", []string{"line 2, column 36: unexpected end of JSON input"}},
		{"trailing data", valid + "\n{}", []string{"line 5, column 1: invalid character '{' after top-level value"}},
		{"empty file", "", []string{"empty file"}},
		{"only whitespace", " \n\t\n", []string{"empty file"}},
		{"top level array", `[]`, []string{"want an object, got an array (line 1, column 1)"}},
		{"top level null", `null`, []string{"want an object, got null"}},
		{"unknown top-level field", "{\n  \"lanmanagerprot\": 23552}", []string{`unknown field "lanmanagerprot" (line 2, column 3)`}},
		{"field in another case", `{"LanManagerAddress": "a"}`, []string{`unknown field "LanManagerAddress"`}},
		{"unknown nested field", withModule(`"comand": "x"`), []string{`modules.web: unknown field "comand"`}},
		{"unknown protocol in portrangestart", `{"portrangestart": {"tcp": 1, "udp": 2}}`, []string{`portrangestart: unknown field "udp"`}},
		{"unknown field in run", withFields(`"run": [{"module": "web", "instanse": "w"}]`), []string{`run[0]: unknown field "instanse"`}},
		{"duplicate field", `{"lanmanageraddress": "a", "lanmanageraddress": "b"}`, []string{`duplicate field "lanmanageraddress" (line 1, column 28)`}},
		{"null value", `{"lanmanageraddress": null}`, []string{"lanmanageraddress: want a string, got null"}},
		{"boolean as string", `{"laninsecure": "yes"}`, []string{"laninsecure: want true or false, got a string (line 1, column 17)"}},
		{"port out of range", strings.Replace(valid, "16000", "70000", 1), []string{"portrangestart.http: 70000 is out of range 1-65535 (line 3, column 44)"}},
		{"negative port", strings.Replace(valid, "15000", "-1", 1), []string{"portrangestart.tcp: -1 is out of range 1-65535"}},
		{"fractional port", strings.Replace(valid, "15000", "15000.5", 1), []string{"portrangestart.tcp: 15000.5 is not a port number"}},
		{"port as string", strings.Replace(valid, "16000", `"16000"`, 1), []string{"portrangestart.http: want a port number 1-65535, got a string"}},
		{"port zero", strings.Replace(valid, "17000", "0", 1), []string{"portrangestart.ws: 0 is out of range 1-65535"}},
		{"range past 65535", `{"portrangestart": {"ws": 65000}}`,
			[]string{"portrangestart.ws: range 65000-65999 (portrangesize 1000) ends past 65535: lower portrangestart.ws to 64536 or portrangesize to 536"}},
		{"range past 65535 through portrangesize", withFields(`"portrangesize": 50000`), []string{"portrangestart.http: range 16000-65999 (portrangesize 50000) ends past 65535: lower portrangestart.http to 15536 or portrangesize to 49536"}},
		{"partial portrangestart overlaps a default", `{"portrangestart": {"tcp": 16500}}`, []string{"portrangestart: tcp range 16500-17499 overlaps http range 16000-16999"}},
		{"explicit lanmanagerport 0", `{"lanmanagerport": 0}`, []string{"lanmanagerport: 0 is out of range 1-65535 (leave the key out for 23552)"}},
		{"explicit portrangesize 0", `{"portrangesize": 0}`, []string{"portrangesize: 0 is out of range 1-65535 (leave the key out for 1000)"}},
		{"overlapping ranges", strings.Replace(valid, "16000", "15500", 1), []string{"portrangestart: tcp range 15000-15999 overlaps http range 15500-16499"}},
		{"overlap through portrangesize", withFields(`"portrangesize": 1001`), []string{"portrangestart: tcp range 15000-16000 overlaps http range 16000-17000 (portrangesize 1001)"}},
		{"negative portrangesize", withFields(`"portrangesize": -3`), []string{"portrangesize: -3 is out of range 1-65535"}},
		{"lanmanagerport out of range", withFields(`"lanmanagerport": 70000`), []string{"lanmanagerport: 70000 is out of range 1-65535"}},
		{"lanmanagerport huge", withFields(`"lanmanagerport": 99999999999999999999`), []string{"lanmanagerport: 99999999999999999999 is out of range"}},
		{"lanmanageraddress with scheme", strings.Replace(valid, "127.0.0.1", "ws://lan:23552", 1), []string{`lanmanageraddress: "ws://lan:23552" is neither an IP address nor a host name`}},
		{"lanmanageraddress list with a bad port", strings.Replace(valid, "127.0.0.1", "a,b:0", 1), []string{`lanmanageraddress: "b:0": port "0" is out of range 1-65535`}},
		{"lanmanageraddress listed twice", strings.Replace(valid, "127.0.0.1", "a:1,b,a:1", 1), []string{`lanmanageraddress: "a:1" is listed twice`}},
		{"lanmanageraddress empty entry", strings.Replace(valid, "127.0.0.1", "a,,b", 1), []string{`lanmanageraddress: "a,,b": empty entry in the list`}},
		{"address not an IP", withFields(`"address": "host.example"`), []string{`address: "host.example" is not an IP address`}},
		{"bad machineid", withFields(`"machineid": "my machine"`), []string{`machineid: "my machine"`}},
		{"token and tokenfile", withFields(`"token": "t", "tokenfile": "f"`), []string{"token, tokenfile: set one, not both"}},
		{"negative maxprocesses", withFields(`"maxprocesses": -1`), []string{"maxprocesses: -1 is negative"}},
		{"int as string", withFields(`"maxprocesses": "4"`), []string{"maxprocesses: want an integer, got a string"}},
		{"bad duration", withModule(`"stoptimeout": "5 parsecs"`), []string{`modules.web.stoptimeout: "5 parsecs" is not a duration`}},
		{"negative duration", withModule(`"backoffmax": "-1s"`), []string{`modules.web.backoffmax: "-1s" is negative`}},
		{"negative milliseconds", withModule(`"restartwindow": -5`), []string{"modules.web.restartwindow: -5 milliseconds is negative"}},
		{"fractional milliseconds", withModule(`"starttimeout": 1.5`), []string{"modules.web.starttimeout: 1.5 is not a duration"}},
		{"duration as object", withModule(`"starttimeout": {}`), []string{"modules.web.starttimeout: want a duration", "got an object"}},
		{"size without unit below the minimum", withModule(`"logmaxsize": 100`), []string{`modules.web.logmaxsize: 100 bytes is below the minimum of 4096 (4KiB); a plain number is bytes, write e.g. "10MiB"`}},
		{"size with a decimal unit", withModule(`"logmaxsize": "10MB"`), []string{`modules.web.logmaxsize: "10MB" is not a size (want bytes as an integer, or a string such as "512KiB", "10MiB" or "1GiB")`}},
		{"size with a space", withFields(`"logmaxsize": "10 MiB"`), []string{`logmaxsize: "10 MiB" is not a size`}},
		{"fractional size", withFields(`"logmaxsize": "1.5GiB"`), []string{`logmaxsize: "1.5GiB" is not a size`}},
		{"negative size", withFields(`"logmaxsize": -1`), []string{"logmaxsize: -1 bytes is negative"}},
		{"negative size string", withFields(`"logmaxsize": "-1MiB"`), []string{`logmaxsize: "-1MiB" is negative`}},
		{"size too large", withFields(`"logmaxsize": "9000000TiB"`), []string{`logmaxsize: "9000000TiB" is too large`}},
		{"size as a boolean", withFields(`"logmaxsize": true`), []string{"logmaxsize: want bytes as an integer", "got a boolean"}},
		{"size below the minimum", withFields(`"logmaxsize": "1KiB"`), []string{"logmaxsize: 1024 bytes is below the minimum of 4096"}},
		{"negative logmaxfiles", withFields(`"logmaxfiles": -2`), []string{"logmaxfiles: -2 is out of range 1-1000 (the live file counts)"}},
		{"too many logmaxfiles", withModule(`"logmaxfiles": 1001`), []string{"modules.web.logmaxfiles: 1001 is out of range 1-1000"}},
		{"logmaxfiles as string", withModule(`"logmaxfiles": "5"`), []string{"modules.web.logmaxfiles: want an integer, got a string"}},
		{"backoffmax below backoffinitial", withModule(`"backoffinitial": "10s", "backoffmax": "1s"`), []string{"modules.web.backoffmax: 1s is less than backoffinitial 10s"}},
		{"bad restart", withModule(`"restart": "sometimes"`), []string{`modules.web.restart: "sometimes": want never, on-failure or always`}},
		{"bad readiness", withModule(`"readiness": "maybe"`), []string{`modules.web.readiness: "maybe": want none, ports or sdk`}},
		{"ports readiness without protocols", withModule(`"readiness": "ports"`), []string{`modules.web.readiness: "ports" needs at least one protocol`}},
		{"unknown module protocol", withModule(`"protocols": ["tcp", "udp"]`), []string{`modules.web.protocols[1]: unknown protocol "udp"`}},
		{"duplicate module protocol", withModule(`"protocols": ["ws", "ws"]`), []string{`modules.web.protocols[1]: "ws" is listed twice`}},
		{"protocols not an array", withModule(`"protocols": "tcp"`), []string{"modules.web.protocols: want an array, got a string"}},
		{"negative maxrestarts", withModule(`"maxrestarts": -1`), []string{"modules.web.maxrestarts: -1 is negative"}},
		{"bad env name", withModule(`"env": {"A=B": "x"}`), []string{`modules.web.env: "A=B" is not an environment variable name`}},
		{"missing command", withFields(`"modules": {"web": {"args": ["x"]}}`), []string{"modules.web.command: missing"}},
		{"bad module name", withFields(`"modules": {"../web": {"command": "x"}}`), []string{`modules: "../web" is not a module name`}},
		{"unknown module in run", withFields(`"run": [{"module": "db", "instance": "db1"}]`), []string{`run[0].module: "db" is not defined in modules`}},
		{"duplicate instance", withFields(`"modules": {"web": {"command": "x"}}, "run": [{"module": "web", "instance": "w"}, {"module": "web", "instance": "w"}]`),
			[]string{`run[1].instance: "w" is already run[0]`}},
		{"bad instance name", withFields(`"modules": {"web": {"command": "x"}}, "run": [{"module": "web", "instance": ""}]`), []string{`run[0].instance: ""`}},
		{"fixed port of unused protocol", withFields(`"modules": {"web": {"command": "x", "protocols": ["http"]}}, "run": [{"module": "web", "instance": "w", "fixedports": {"tcp": 9000}}]`),
			[]string{`run[0].fixedports.tcp: module "web" does not use protocol "tcp"`}},
		{"fixed port zero", withFields(`"modules": {"web": {"command": "x", "protocols": ["http"]}}, "run": [{"module": "web", "instance": "w", "fixedports": {"http": 0}}]`),
			[]string{"run[0].fixedports.http: 0 is out of range 1-65535"}},
		{"fixed port out of range", withFields(`"modules": {"web": {"command": "x", "protocols": ["http"]}}, "run": [{"module": "web", "instance": "w", "fixedports": {"http": 65536}}]`),
			[]string{"run[0].fixedports.http: 65536 is out of range 1-65535"}},
		{"fixed port twice", withFields(`"modules": {"web": {"command": "x", "protocols": ["http"]}}, "run": [{"module": "web", "instance": "a", "fixedports": {"http": 9000}}, {"module": "web", "instance": "b", "fixedports": {"http": 9000}}]`),
			[]string{"run[1].fixedports.http: port 9000 is already fixed by run[0].fixedports.http"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), FileName)
			if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			_, created, err := Load(path)
			if err == nil {
				t.Fatal("Load accepted the file")
			}
			if created {
				t.Error("created = true for an existing file")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, path+": ") {
				t.Errorf("error %q does not start with the file name", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			got, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(got, []byte(tt.content)) {
				t.Fatalf("file changed: %q, %v", got, err)
			}
			assertOnlyFiles(t, filepath.Dir(path), FileName)
		})
	}
}

// assertOnlyFiles fails if dir holds anything but names (e.g. temp files).
func assertOnlyFiles(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if !reflect.DeepEqual(got, names) {
		t.Fatalf("directory holds %v, want %v", got, names)
	}
}

func TestLoadUnreadable(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, path string)
		want  string
	}{
		{"directory", func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o755); err != nil {
				t.Fatal(err)
			}
		}, "cannot read: "},
		{"no permission", func(t *testing.T, path string) {
			if runtime.GOOS == "windows" || os.Geteuid() == 0 {
				t.Skip("permissions do not stop this user")
			}
			if err := os.WriteFile(path, []byte(valid), 0o000); err != nil {
				t.Fatal(err)
			}
		}, "cannot read: permission denied"},
		{"missing directory", func(t *testing.T, path string) {
			if err := os.Remove(filepath.Dir(path)); err != nil {
				t.Fatal(err)
			}
		}, "writing the default config: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "sub", FileName)
			if err := os.Mkdir(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			tt.setup(t, path)
			before, _ := os.Lstat(path)
			_, created, err := Load(path)
			if err == nil || created {
				t.Fatalf("Load = created %v, err %v; want an error", created, err)
			}
			if !strings.HasPrefix(err.Error(), path+": ") || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q, want %q prefix and %q", err, path+": ", tt.want)
			}
			after, _ := os.Lstat(path)
			if (before == nil) != (after == nil) || before != nil && (before.Mode() != after.Mode() || before.Size() != after.Size()) {
				t.Fatalf("path changed: %v -> %v", before, after)
			}
		})
	}
}

func TestLoadWritesDefault(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	cfg, created, err := Load(path)
	if err != nil || !created {
		t.Fatalf("Load = created %v, err %v", created, err)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Fatalf("cfg = %+v, want Default()", cfg)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, data); err != nil {
		t.Fatal(err)
	}
	const want = `{"lanmanageraddress":"127.0.0.1","portrangestart":{"tcp":15000,"http":16000,"ws":17000}}`
	if compact.String() != want {
		t.Fatalf("written %s, want %s", compact.String(), want)
	}
	if fi, err := os.Stat(path); err != nil || runtime.GOOS != "windows" && fi.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v, %v; want 0644", fi.Mode(), err)
	}
	assertOnlyFiles(t, dir, FileName)

	again, created, err := Load(path)
	if err != nil || created || !reflect.DeepEqual(again, Default()) {
		t.Fatalf("second Load = %+v, created %v, err %v", again, created, err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(after, data) {
		t.Fatal("second Load rewrote the file")
	}
}

func TestWriteDefaultNeverClobbers(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	if err := os.WriteFile(path, []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	created, err := writeDefault(path)
	if err != nil || created {
		t.Fatalf("writeDefault = %v, %v; want false, nil", created, err)
	}
	if got, _ := os.ReadFile(path); string(got) != "mine" {
		t.Fatalf("file clobbered: %q", got)
	}
	assertOnlyFiles(t, dir, FileName)
}

func TestLoadValid(t *testing.T) {
	const content = `{
  "lanmanageraddress": "lan.example",
  "lanmanagerport": 24000,
  "portrangestart": {"tcp": 20000, "http": 20100, "ws": 20200},
  "portrangesize": 100,
  "socket": "/run/allex.sock",
  "machineid": "m1",
  "address": "10.0.0.5",
  "tokenfile": "token",
  "maxprocesses": 8,
  "statedir": "state",
  "logmaxsize": "50MiB",
  "logmaxfiles": 3,
  "modules": {
    "web": {
      "command": "/usr/bin/web",
      "args": ["--port", "${ALLEX_HTTP_PORT}"],
      "env": {"MODE": "prod"},
      "dir": "/srv/web",
      "protocols": ["http", "ws"],
      "restart": "always",
      "maxrestarts": 3,
      "restartwindow": "1m",
      "backoffinitial": 250,
      "backoffmax": "10s",
      "stoptimeout": "5s",
      "starttimeout": 30000,
      "readiness": "sdk",
      "logmaxsize": 1048576,
      "logmaxfiles": 10
    },
    "cron": {"command": "cron"}
  },
  "run": [
    {"module": "web", "instance": "web1", "properties": {"color": "blue"}, "fixedports": {"http": 8080}},
    {"module": "cron", "instance": "cron1"}
  ]
}`
	path := filepath.Join(t.TempDir(), FileName)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, created, err := Load(path)
	if err != nil || created {
		t.Fatalf("Load: created %v, %v", created, err)
	}
	want := Config{
		LanManagerAddress: "lan.example",
		LanManagerPort:    24000,
		PortRangeStart:    PortRanges{TCP: 20000, HTTP: 20100, WS: 20200},
		PortRangeSize:     100,
		Socket:            "/run/allex.sock",
		MachineID:         "m1",
		Address:           "10.0.0.5",
		TokenFile:         "token",
		MaxProcesses:      8,
		StateDir:          "state",
		LogMaxSize:        50 << 20,
		LogMaxFiles:       3,
		Modules: map[string]Module{
			"web": {
				Command: "/usr/bin/web", Args: []string{"--port", "${ALLEX_HTTP_PORT}"}, Env: map[string]string{"MODE": "prod"},
				Dir: "/srv/web", Protocols: []string{"http", "ws"}, Restart: "always", MaxRestarts: 3,
				RestartWindow: Duration(time.Minute), BackoffInitial: Duration(250 * time.Millisecond),
				BackoffMax: Duration(10 * time.Second), StopTimeout: Duration(5 * time.Second),
				StartTimeout: Duration(30 * time.Second), Readiness: "sdk",
				LogMaxSize: 1 << 20, LogMaxFiles: 10,
			},
			"cron": {Command: "cron"},
		},
		Run: []Instance{
			{Module: "web", Instance: "web1", Properties: map[string]string{"color": "blue"}, FixedPorts: map[string]uint16{"http": 8080}},
			{Module: "cron", Instance: "cron1"},
		},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("cfg = %+v\nwant  %+v", cfg, want)
	}
	// What Load accepts, Marshal writes back in a form Load accepts again.
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse("again", b)
	if err != nil || !reflect.DeepEqual(back, want) {
		t.Fatalf("round trip = %+v, %v", back, err)
	}
}

func TestByteSize(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want ByteSize
		text string
	}{
		{`4096`, 4096, "4KiB"},
		{`"4096"`, 4096, "4KiB"},
		{`"4097B"`, 4097, "4097B"},
		{`"512KiB"`, 512 << 10, "512KiB"},
		{`"10MiB"`, 10 << 20, "10MiB"},
		{`"1536MiB"`, 1536 << 20, "1536MiB"},
		{`"2GiB"`, 2 << 30, "2GiB"},
		{`"1TiB"`, 1 << 40, "1TiB"},
		{`0`, 0, "0B"},
	} {
		var b ByteSize
		if err := json.Unmarshal([]byte(tt.in), &b); err != nil || b != tt.want {
			t.Errorf("Unmarshal(%s) = %d, %v; want %d", tt.in, b, err, tt.want)
			continue
		}
		out, err := json.Marshal(b)
		if err != nil || string(out) != strconv.Quote(tt.text) {
			t.Errorf("Marshal(%d) = %s, %v; want %q", b, out, err, tt.text)
		}
	}
	for _, in := range []string{"", "MiB", "10M", "10mib", "0x10", "+5", " 5", "5 "} {
		if b, err := ParseByteSize(in); err == nil {
			t.Errorf("ParseByteSize(%q) = %d, want an error", in, b)
		}
	}
}

func TestDurationJSON(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{`"5s"`, 5 * time.Second, false},
		{`"1h2m"`, time.Hour + 2*time.Minute, false},
		{`1500`, 1500 * time.Millisecond, false},
		{`0`, 0, false},
		{`"0s"`, 0, false},
		{`"-1s"`, 0, true},
		{`-1`, 0, true},
		{`1.5`, 0, true},
		{`1e3`, 0, true},
		{`"5"`, 0, true},
		{`""`, 0, true},
		{`true`, 0, true},
		{`null`, 0, true},
		{`9223372036854775807`, 0, true},
		{`99999999999999999999`, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var d Duration
			err := json.Unmarshal([]byte(tt.in), &d)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Unmarshal(%s) = %v, want error", tt.in, d)
				}
				return
			}
			if err != nil || d.Std() != tt.want {
				t.Fatalf("Unmarshal(%s) = %v, %v; want %v", tt.in, d, err, tt.want)
			}
			b, err := json.Marshal(d)
			if err != nil || string(b) != `"`+tt.want.String()+`"` {
				t.Fatalf("Marshal = %s, %v", b, err)
			}
		})
	}
}

// FuzzLoad feeds arbitrary bytes to the parser: it must never panic, every
// error must name the file, and whatever is accepted must validate and
// survive a Marshal/Parse round trip unchanged.
func FuzzLoad(f *testing.F) {
	f.Add([]byte(valid))
	f.Add(DefaultJSON())
	f.Add([]byte(withModule(`"protocols": ["http"], "stoptimeout": "5s", "backoffinitial": 100, "readiness": "ports"`)))
	f.Add([]byte(withFields(`"modules": {"web": {"command": "x", "protocols": ["tcp"]}}, "run": [{"module": "web", "instance": "w", "fixedports": {"tcp": 9000}, "properties": {"a": "b"}}]`)))
	f.Add([]byte(`{"portrangestart": {"tcp": 70000}}`))
	f.Add([]byte(`[1, {"a": null}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("f.json", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f.json: ") {
				t.Fatalf("error without file name: %v", err)
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("accepted config does not validate: %v", err)
		}
		b, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		again, err := Parse("f.json", b)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", b, err)
		}
		b2, _ := json.Marshal(again)
		if !bytes.Equal(b, b2) {
			t.Fatalf("round trip changed %s to %s", b, b2)
		}
	})
}

// TestLoadKeysLeftOut: a hand-written file takes the README's default for
// every key it leaves out, including part of portrangestart, while an
// explicit "" for lanmanageraddress still means no LAN manager.
func TestLoadKeysLeftOut(t *testing.T) {
	tests := []struct {
		name, content string
		want          func(c *Config)
	}{
		{"empty object", `{}`, func(*Config) {}},
		{"only modules", `{"modules": {"web": {"command": "x"}}}`, func(c *Config) { c.Modules = map[string]Module{"web": {Command: "x"}} }},
		{"only tcp range", `{"portrangestart": {"tcp": 20000}}`, func(c *Config) { c.PortRangeStart.TCP = 20000 }},
		{"only ws range", `{"portrangestart": {"ws": 30000}}`, func(c *Config) { c.PortRangeStart.WS = 30000 }},
		{"explicit no LAN", `{"lanmanageraddress": ""}`, func(c *Config) { c.LanManagerAddress = "" }},
		{"only laninsecure", `{"laninsecure": true}`, func(c *Config) { c.LanInsecure = true }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), FileName)
			if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, created, err := Load(path)
			if err != nil || created {
				t.Fatalf("Load = created %v, %v", created, err)
			}
			want := Default()
			tt.want(&want)
			if !reflect.DeepEqual(cfg, want) {
				t.Fatalf("cfg = %+v\nwant  %+v", cfg, want)
			}
			d := cfg.WithDefaults("")
			if d.LanManagerPort != DefaultLanManagerPort || d.PortRangeSize != DefaultPortRangeSize {
				t.Fatalf("WithDefaults: lanmanagerport %d, portrangesize %d", d.LanManagerPort, d.PortRangeSize)
			}
		})
	}
}

// TestLoadSkipsBOM: a leading UTF-8 byte order mark (as Windows editors
// write) is skipped, and positions in errors stay those an editor shows.
func TestLoadSkipsBOM(t *testing.T) {
	bom := "\xEF\xBB\xBF"
	cfg, err := Parse("c.json", []byte(bom+valid))
	if err != nil || !reflect.DeepEqual(cfg, Default()) {
		t.Fatalf("Parse(BOM + valid) = %+v, %v", cfg, err)
	}
	_, err = Parse("c.json", []byte(bom+`{"lanmanagerprot": 1}`))
	if err == nil || err.Error() != `c.json: unknown field "lanmanagerprot" (line 1, column 2)` {
		t.Fatalf("Parse(BOM + unknown field) = %v", err)
	}
	if _, err := Parse("c.json", []byte(bom)); err == nil || !strings.Contains(err.Error(), "empty file") {
		t.Fatalf("Parse(BOM only) = %v, want empty file", err)
	}
}

// TestLoadReportsEveryProblem: one mistake does not hide the others, in
// the file's structure or its values; each line names the file, and the
// list is bounded.
func TestLoadReportsEveryProblem(t *testing.T) {
	tests := []struct {
		name, content string
		want          []string
	}{
		{"structure", `{"lanmanagerprot": 1, "socket": 5, "modules": {"web": {"comand": "x", "args": "a"}}, "portrangestart": {"udp": 1}}`, []string{
			`c.json: unknown field "lanmanagerprot" (line 1, column 2)`,
			`c.json: socket: want a string, got the number 5 (line 1, column 33)`,
			`c.json: modules.web: unknown field "comand" (line 1, column 56)`,
			`c.json: modules.web.args: want an array, got a string (line 1, column 79)`,
			`c.json: portrangestart: unknown field "udp" (line 1, column 105)`,
		}},
		{"values", `{"lanmanagerport": 70000, "maxprocesses": -1, "machineid": "a b", "portrangesize": 0,
			"modules": {"a": {"restart": "sometimes"}, "b": {"command": "x", "readiness": "maybe"}}}`, []string{
			"c.json: portrangesize: 0 is out of range 1-65535 (leave the key out for 1000)",
			"c.json: lanmanagerport: 70000 is out of range 1-65535",
			`c.json: machineid: "a b"`,
			"c.json: maxprocesses: -1 is negative",
			"c.json: modules.a.command: missing",
			`c.json: modules.b.readiness: "maybe": want none, ports or sdk`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("c.json", []byte(tt.content))
			if err == nil {
				t.Fatal("Parse accepted the file")
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Fatalf("%d lines, want %d:\n%v", len(lines), len(tt.want), err)
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(lines[i], w) {
					t.Errorf("line %d = %q, want %q", i, lines[i], w)
				}
			}
		})
	}
	var b strings.Builder
	b.WriteString("{")
	for i := range 25 {
		fmt.Fprintf(&b, "%q: 1,", fmt.Sprintf("k%d", i))
	}
	b.WriteString(`"maxprocesses": 1}`)
	_, err := Parse("c.json", []byte(b.String()))
	lines := strings.Split(fmt.Sprint(err), "\n")
	if len(lines) != maxProblems+1 || lines[maxProblems] != "c.json: and 5 more problems" {
		t.Fatalf("25 problems reported as %d lines, the last %q", len(lines), lines[len(lines)-1])
	}
}

// A list of LAN managers gives each its port, the default where it names
// none.
func TestLanManagers(t *testing.T) {
	c := Default()
	c.LanManagerAddress, c.LanManagerPort = "a, b:9,[::1],[::1]:7", 5
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.LanManagers(), " "); got != "a:5 b:9 [::1]:5 [::1]:7" {
		t.Fatalf("LanManagers = %s", got)
	}
	c.LanManagerAddress = ""
	if got := c.LanManagers(); got != nil {
		t.Fatalf("no LAN: %v", got)
	}
}
