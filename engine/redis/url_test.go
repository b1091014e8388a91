package redis

import (
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		url, topology string
	}{
		{"redis://127.0.0.1:6379/0", "standalone 127.0.0.1:6379 db 0"},
		{"redis://:secret@10.0.0.1:6380/3", "standalone 10.0.0.1:6380 db 3"},
		{"rediss://user:secret@redis.example.com:6380/1", "standalone redis.example.com:6380 db 1 over TLS"},
		{"redis://:secret@10.0.0.1:26379/2?master_name=main&addr=10.0.0.2:26379", `sentinel master "main" via 10.0.0.1:26379,10.0.0.2:26379 db 2`},
		{"redis+cluster://:secret@10.0.0.1:7000?addr=10.0.0.2:7000&addr=10.0.0.3:7000", "cluster 10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000"},
		{"rediss+cluster://10.0.0.1:7000", "cluster 10.0.0.1:7000 over TLS"},
	} {
		c, err := ParseURL(tc.url)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", tc.url, err)
			continue
		}
		if c.Topology != tc.topology {
			t.Errorf("ParseURL(%q).Topology = %q, want %q", tc.url, c.Topology, tc.topology)
		}
		if strings.Contains(c.Topology, "secret") {
			t.Errorf("ParseURL(%q).Topology = %q names the password", tc.url, c.Topology)
		}
	}
}

func TestParseURLErrors(t *testing.T) {
	for _, bad := range []string{
		"",
		"localhost:6379",
		"http://127.0.0.1:6379",
		"redis://127.0.0.1:6379/notadb",
		"redis://127.0.0.1:6379/0?no_such_option=1",
		"redis+cluster://127.0.0.1:7000?no_such_option=1",
		"redis://127.0.0.1:26379/0?master_name=main&no_such_option=1",
		"redis://[::1",
	} {
		if c, err := ParseURL(bad); err == nil {
			t.Errorf("ParseURL(%q) = %q, want an error", bad, c.Topology)
		} else if !strings.HasPrefix(err.Error(), "redis: ") {
			t.Errorf("ParseURL(%q) error %q does not say it is about redis", bad, err)
		}
	}
}

func TestBadPrefix(t *testing.T) {
	for _, p := range []string{"a{b", "}"} {
		if _, err := Open(t.Context(), "redis://127.0.0.1:1/0", Options{Prefix: p}); err == nil || !strings.Contains(err.Error(), "braces") {
			t.Errorf("Open with prefix %q: %v, want an error about braces", p, err)
		}
	}
}
