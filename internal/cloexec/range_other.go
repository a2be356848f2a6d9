//go:build unix && !linux

package cloexec

import "errors"

func closeRange() error { return errors.ErrUnsupported }
