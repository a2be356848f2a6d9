package lanmanager

import (
	"fmt"
	"os"

	"github.com/allex-go/allex/lanmanager/lanstate"
	"github.com/allex-go/allex/lanwire"
)

// loadNeedsFiles reads and layers files: later files win per instance. The
// result keeps first-appearance order.
func loadNeedsFiles(paths []string) ([]lanstate.FileNeed, error) {
	var order []string
	byInstance := map[string]lanstate.FileNeed{}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("needs file: %w", err)
		}
		needs, err := lanwire.ParseNeedsFile(p, data)
		if err != nil {
			return nil, err
		}
		for _, n := range needs {
			if _, ok := byInstance[n.Instance]; !ok {
				order = append(order, n.Instance)
			}
			byInstance[n.Instance] = lanstate.FileNeed{Need: n, Origin: "file:" + p}
		}
	}
	out := make([]lanstate.FileNeed, 0, len(order))
	for _, inst := range order {
		out = append(out, byInstance[inst])
	}
	return out, nil
}
