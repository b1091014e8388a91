package redis

import (
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/herald-hub/herald/internal/proctest"
	"github.com/herald-hub/herald/internal/redistest"
	"github.com/herald-hub/herald/internal/testcert"
)

// TestTLS: rediss:// speaks TLS to Redis, and a certificate the client
// does not trust is refused.
func TestTLS(t *testing.T) {
	cert, key := testcert.Write(t)
	port := proctest.FreePorts(t, 1)[0]
	redistest.Start(t, redistest.Options{Args: []string{
		"--tls-port", strconv.Itoa(port), "--tls-cert-file", cert, "--tls-key-file", key,
		"--tls-ca-cert-file", cert, "--tls-auth-clients", "no",
	}})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if _, err := Open(t.Context(), "rediss://"+addr+"/0", Options{Prefix: "tls"}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Open with an untrusted certificate: %v, want a certificate error", err)
	}
	e, b, _ := node(t, "rediss://"+addr+"/0?skip_verify=true", "tls")
	if !strings.HasSuffix(e.Topology(), "over TLS") {
		t.Errorf("Topology() = %q", e.Topology())
	}
	appendN(t, e, "secure", 3)
	waitFor(t, "fed over TLS", func() bool { return len(b.fedIDs()) == 3 })
}
