//go:build !linux

package boottime

import "time"

// base is this process's origin of the fallback clock.
var base = time.Now()

// Now is time since this package was initialised, on Go's monotonic
// clock. Without CLOCK_BOOTTIME the reading is only comparable within one
// process, and may not count a suspend.
func Now() time.Duration { return time.Since(base) }
