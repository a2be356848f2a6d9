package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ByteSize is a size in bytes, written in JSON as an integer number of
// bytes or a string with a binary unit: "512KiB", "10MiB", "1GiB".
// Decimal or single-letter units ("10MB", "10M") are refused rather than
// guessed at.
type ByteSize int64

// units are the suffixes ParseByteSize accepts, longest first.
var units = []struct {
	suffix string
	shift  uint
}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}}

const byteSizeWant = `want bytes as an integer, or a string such as "512KiB", "10MiB" or "1GiB"`

// ParseByteSize reads "10MiB", "512KiB", "4096B" or plain "4096" (bytes).
func ParseByteSize(s string) (ByteSize, error) {
	num, shift := s, uint(0)
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, shift = n, u.shift
			break
		}
	}
	if num == "" || strings.TrimLeft(num, "0123456789") != "" {
		if isInteger(num) {
			return 0, fmt.Errorf("%q is negative", s)
		}
		return 0, fmt.Errorf("%q is not a size (%s)", s, byteSizeWant)
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n > math.MaxInt64>>shift {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return ByteSize(n << shift), nil
}

// String writes the size with the largest unit that divides it.
func (b ByteSize) String() string {
	for _, u := range units {
		if b != 0 && b%(1<<u.shift) == 0 {
			return strconv.FormatInt(int64(b)>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(b), 10) + "B"
}

// MarshalJSON writes the String form.
func (b ByteSize) MarshalJSON() ([]byte, error) { return json.Marshal(b.String()) }

// UnmarshalJSON reads an integer number of bytes or a size string.
func (b *ByteSize) UnmarshalJSON(data []byte) error {
	v, err := fromToken(data, byteSizeFromToken)
	if err == nil {
		*b = v
	}
	return err
}

// byteSizeFromToken converts a JSON token (as read with UseNumber).
func byteSizeFromToken(tok any) (ByteSize, error) {
	switch v := tok.(type) {
	case string:
		return ParseByteSize(v)
	case json.Number:
		n, err := strconv.ParseInt(string(v), 10, 64)
		switch {
		case err != nil && isInteger(string(v)):
			return 0, fmt.Errorf("%s bytes is too large", v)
		case err != nil:
			return 0, fmt.Errorf("%s is not a size (%s)", v, byteSizeWant)
		case n < 0:
			return 0, fmt.Errorf("%d bytes is negative", n)
		}
		return ByteSize(n), nil
	}
	return 0, errors.New(byteSizeWant + ", got " + describe(tok))
}
