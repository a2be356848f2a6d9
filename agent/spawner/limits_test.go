package spawner

import "time"

// waitLimit bounds every wait for something a test expects to happen, on
// every system (the helpers that use it most are Unix-only).
const waitLimit = 60 * time.Second
