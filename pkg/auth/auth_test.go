package auth

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestNodeTokenIsAddedOnceAndAuthenticatesTheNode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.csv")
	admin, err := EnsureAdminToken(path)
	if err != nil {
		t.Fatal(err)
	}
	node, err := EnsureNodeToken(path, "host1")
	if err != nil {
		t.Fatal(err)
	}
	again, err := EnsureNodeToken(path, "host1")
	if err != nil || again != node {
		t.Fatalf("second EnsureNodeToken = %q, %v; want the first token %q", again, err, node)
	}
	if a, _ := EnsureAdminToken(path); a != admin {
		t.Errorf("the admin token changed from %q to %q", admin, a)
	}
	tf, err := LoadTokenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	resp, ok, _ := tf.AuthenticateToken(context.Background(), node)
	if !ok || resp.User.GetName() != "system:node:host1" || !slices.Contains(resp.User.GetGroups(), "system:nodes") {
		t.Errorf("node token authenticates as %v (ok %v), want system:node:host1 in system:nodes", resp, ok)
	}
}

func TestNodeTokenIsAppendedAfterALastLineWithoutNewline(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.csv")
	if err := os.WriteFile(path, []byte(`t1,svcplane-admin,svcplane-admin,"system:masters"`), 0o600); err != nil {
		t.Fatal(err)
	}
	node, err := EnsureNodeToken(path, "host1")
	if err != nil {
		t.Fatal(err)
	}
	tf, err := LoadTokenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for token, want := range map[string]string{"t1": "svcplane-admin", node: "system:node:host1"} {
		if resp, ok, _ := tf.AuthenticateToken(context.Background(), token); !ok || resp.User.GetName() != want {
			t.Errorf("token %s: %v %v, want %s", token, resp, ok, want)
		}
	}
}
