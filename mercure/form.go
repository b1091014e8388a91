package mercure

import (
	"errors"
	"strings"
)

// field is one name/value pair of a form, in request order.
type field struct{ name, value string }

// errTooManyFields reports a form with more pairs than allowed.
var errTooManyFields = errors.New("too many form fields")

// parseForm parses s as application/x-www-form-urlencoded with the WHATWG
// URL standard's algorithm, the one URLSearchParams and EventSource use:
// pairs split on "&" only (a ";" is data), "+" is a space, and a "%" not
// followed by two hex digits stays as it is. Values are not checked for
// UTF-8 here; callers validate what they use. At most max pairs are read.
func parseForm(s string, max int) ([]field, error) {
	var out []field
	for len(s) > 0 {
		var pair string
		if i := strings.IndexByte(s, '&'); i >= 0 {
			pair, s = s[:i], s[i+1:]
		} else {
			pair, s = s, ""
		}
		if pair == "" {
			continue
		}
		if len(out) == max {
			return nil, errTooManyFields
		}
		name, value, _ := strings.Cut(pair, "=")
		out = append(out, field{formDecode(name), formDecode(value)})
	}
	return out, nil
}

// formDecode replaces "+" by a space and percent-decodes leniently.
func formDecode(s string) string {
	if strings.IndexByte(s, '%') < 0 && strings.IndexByte(s, '+') < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '+':
			b = append(b, ' ')
		case c == '%' && i+2 < len(s) && ishex(s[i+1]) && ishex(s[i+2]):
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
		default:
			b = append(b, c)
		}
	}
	return string(b)
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}
