package agent

import (
	"maps"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/allex-go/allex/agent/config"
	allexv1 "github.com/allex-go/allex/gen/allex/v1"
)

// A start request naming a configured module overrides every field it
// sets, and merges env; the others keep the module's values.
func TestStartRequestOverridesModule(t *testing.T) {
	cfg := config.Default()
	cfg.Modules = map[string]config.Module{"web": {Command: "w", Dir: "/srv", Env: map[string]string{"A": "1", "B": "2"}}}
	a, err := New(Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	base, err := a.specFor(&allexv1.ModuleSpec{Module: "web", Instance: "w1"})
	if err != nil {
		t.Fatal(err)
	}
	req := &allexv1.ModuleSpec{
		Module: "web", Instance: "w1", Dir: "/tmp", Env: map[string]string{"B": "3"},
		Readiness: allexv1.Readiness_READINESS_NONE, MaxRestarts: 7,
		StopTimeout: durationpb.New(9 * time.Second), StartTimeout: durationpb.New(8 * time.Second),
		RestartWindow: durationpb.New(7 * time.Second), BackoffInitial: durationpb.New(6 * time.Second), BackoffMax: durationpb.New(60 * time.Second),
	}
	spec, err := a.specFor(req)
	if err != nil {
		t.Fatal(err)
	}
	if spec.GetCommand() != "w" || spec.GetDir() != "/tmp" || !maps.Equal(spec.GetEnv(), map[string]string{"A": "1", "B": "3"}) ||
		spec.GetReadiness() != allexv1.Readiness_READINESS_NONE || spec.GetMaxRestarts() != 7 ||
		spec.GetStopTimeout().AsDuration() != 9*time.Second || spec.GetStartTimeout().AsDuration() != 8*time.Second ||
		spec.GetRestartWindow().AsDuration() != 7*time.Second || spec.GetBackoffInitial().AsDuration() != 6*time.Second ||
		spec.GetBackoffMax().AsDuration() != 60*time.Second {
		t.Fatalf("spec = %v", spec)
	}
	if base.GetReadiness() == allexv1.Readiness_READINESS_NONE && base.GetStopTimeout().AsDuration() == 9*time.Second {
		t.Fatal("the module's own values were those of the request: the test proves nothing")
	}
	if cfg.Modules["web"].Env["B"] != "2" {
		t.Fatal("the request's env changed the module's")
	}
}
