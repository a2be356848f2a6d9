package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
)

// Duration is a time.Duration written in JSON as a Go duration string
// ("5s", "1m30s"); integer milliseconds are accepted on input too.
// Negative durations are refused.
type Duration time.Duration

// Std returns the duration as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes the duration string form.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string or integer milliseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	v, err := fromToken(b, durationFromToken)
	if err == nil {
		*d = v
	}
	return err
}

// fromToken converts the single JSON value in data, read with UseNumber,
// as the walker sees it.
func fromToken[T any](data []byte, conv func(any) (T, error)) (T, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		var zero T
		return zero, err
	}
	return conv(tok)
}

const durationWant = `want a duration such as "5s" or integer milliseconds`

// durationFromToken converts a JSON token (as read with UseNumber).
func durationFromToken(tok any) (Duration, error) {
	switch v := tok.(type) {
	case string:
		d, err := time.ParseDuration(v)
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration (%s)", v, durationWant)
		}
		if d < 0 {
			return 0, fmt.Errorf("%q is negative", v)
		}
		return Duration(d), nil
	case json.Number:
		ms, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			if isInteger(string(v)) {
				return 0, fmt.Errorf("%s milliseconds is too long", v)
			}
			return 0, fmt.Errorf("%s is not a duration (%s)", v, durationWant)
		}
		if ms < 0 {
			return 0, fmt.Errorf("%d milliseconds is negative", ms)
		}
		if ms > math.MaxInt64/int64(time.Millisecond) {
			return 0, fmt.Errorf("%d milliseconds is too long", ms)
		}
		return Duration(time.Duration(ms) * time.Millisecond), nil
	}
	return 0, errors.New(durationWant + ", got " + describe(tok))
}

// isInteger reports whether s is an optionally signed run of digits.
func isInteger(s string) bool {
	if len(s) > 0 && s[0] == '-' {
		s = s[1:]
	}
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
