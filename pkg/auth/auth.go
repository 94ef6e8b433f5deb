// Package auth decides who a request comes from and what they may do. Users are bearer tokens in
// a token file under the data dir (the admin token is created on first start); requests without
// credentials are anonymous and may only read the health and version endpoints, everything else
// answers 401. Node agents have tokens of their own (EnsureNodeToken; the Authorizer is their
// seam).
package auth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/request/bearertoken"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
)

// AdminUser is the user the admin kubeconfig authenticates as.
const AdminUser = "svcplane-admin"

// TokenFile is a static token file in upstream's --token-auth-file format: token,user,uid,"groups".
type TokenFile struct {
	Path   string
	tokens map[string]*user.DefaultInfo
}

// EnsureAdminToken returns the admin token from path, creating the file with a fresh admin token
// when it does not exist.
func EnsureAdminToken(path string) (string, error) {
	tf, err := LoadTokenFile(path)
	if errors.Is(err, os.ErrNotExist) {
		token := randomToken()
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return "", err
		}
		line := fmt.Sprintf("%s,%s,%s,\"system:masters\"\n", token, AdminUser, AdminUser)
		if err := os.WriteFile(path, []byte(line), 0o600); err != nil {
			return "", fmt.Errorf("writing token file %s: %w", path, err)
		}
		return token, nil
	}
	if err != nil {
		return "", err
	}
	for token, u := range tf.tokens {
		if u.Name == AdminUser {
			return token, nil
		}
	}
	return "", fmt.Errorf("token file %s has no token for user %s; add a line token,%s,%s,\"system:masters\"", path, AdminUser, AdminUser, AdminUser)
}

// EnsureNodeToken returns the token of node agent nodeName (user system:node:<name>, group
// system:nodes, as upstream names kubelets) from the token file at path, appending a fresh one
// when it has none. The file must exist (EnsureAdminToken creates it); the server reads it
// once at start, so this runs before.
func EnsureNodeToken(path, nodeName string) (string, error) {
	tf, err := LoadTokenFile(path)
	if err != nil {
		return "", err
	}
	name := "system:node:" + nodeName
	for token, u := range tf.tokens {
		if u.Name == name {
			return token, nil
		}
	}
	old, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	sep := ""
	if len(old) > 0 && old[len(old)-1] != '\n' {
		sep = "\n"
	}
	token := randomToken()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return "", err
	}
	_, err = fmt.Fprintf(f, "%s%s,%s,%s,\"system:nodes\"\n", sep, token, name, name)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("adding a token for %s to %s: %w", name, path, err)
	}
	return token, nil
}

// LoadTokenFile reads the tokens of path.
func LoadTokenFile(path string) (*TokenFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	records, err := r.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("reading token file %s: %w", path, err)
	}
	tf := &TokenFile{Path: path, tokens: map[string]*user.DefaultInfo{}}
	for i, rec := range records {
		if len(rec) < 3 || rec[0] == "" || rec[1] == "" {
			return nil, fmt.Errorf("token file %s line %d: want token,user,uid[,\"group1,group2\"]", path, i+1)
		}
		u := &user.DefaultInfo{Name: rec[1], UID: rec[2]}
		if len(rec) > 3 && rec[3] != "" {
			u.Groups = strings.Split(rec[3], ",")
		}
		tf.tokens[rec[0]] = u
	}
	return tf, nil
}

// AuthenticateToken implements authenticator.Token.
func (tf *TokenFile) AuthenticateToken(_ context.Context, token string) (*authenticator.Response, bool, error) {
	for known, u := range tf.tokens {
		// Constant-time comparison so response timing does not reveal token prefixes.
		if subtle.ConstantTimeCompare([]byte(known), []byte(token)) == 1 {
			return &authenticator.Response{User: withAuthenticated(u)}, true, nil
		}
	}
	return nil, false, nil
}

func withAuthenticated(u *user.DefaultInfo) user.Info {
	groups := append([]string{}, u.Groups...)
	groups = append(groups, user.AllAuthenticated)
	return &user.DefaultInfo{Name: u.Name, UID: u.UID, Groups: groups, Extra: u.Extra}
}

func randomToken() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// publicPaths may be read without credentials, as upstream's system:public-info-viewer allows.
func isPublicPath(path string) bool {
	for _, p := range []string{"/livez", "/readyz", "/healthz", "/version"} {
		if path == p || strings.HasPrefix(path, p+"/") {
			return true
		}
	}
	return false
}

// NewRequestAuthenticator authenticates bearer tokens with tokens and lets requests without
// credentials through as anonymous only on the public paths.
func NewRequestAuthenticator(tokens authenticator.Token) authenticator.Request {
	bearer := bearertoken.New(tokens)
	return authenticator.RequestFunc(func(req *http.Request) (*authenticator.Response, bool, error) {
		resp, ok, err := bearer.AuthenticateRequest(req)
		if ok || err != nil {
			return resp, ok, err
		}
		if req.Header.Get("Authorization") == "" && isPublicPath(req.URL.Path) {
			return &authenticator.Response{User: &user.DefaultInfo{
				Name: user.Anonymous, Groups: []string{user.AllUnauthenticated},
			}}, true, nil
		}
		return nil, false, nil
	})
}

// Authorizer allows every authenticated user everything, and anonymous users the public paths.
type Authorizer struct{}

var _ authorizer.Authorizer = Authorizer{}

func (Authorizer) Authorize(_ context.Context, a authorizer.Attributes) (authorizer.Decision, string, error) {
	u := a.GetUser()
	if u == nil {
		return authorizer.DecisionDeny, "no user", nil
	}
	if u.GetName() == user.Anonymous {
		if !a.IsResourceRequest() && a.GetVerb() == "get" && isPublicPath(a.GetPath()) {
			return authorizer.DecisionAllow, "", nil
		}
		return authorizer.DecisionDeny, "anonymous requests may only read health and version", nil
	}
	return authorizer.DecisionAllow, "", nil
}

// ConditionsAwareAuthorize gives the same answer as Authorize: svcplane has no conditional policy.
func (z Authorizer) ConditionsAwareAuthorize(ctx context.Context, a authorizer.Attributes) authorizer.ConditionsAwareDecision {
	return authorizer.ConditionsAwareDecisionFromParts(z.Authorize(ctx, a))
}

// EvaluateConditions fails closed, as an authorizer without conditions must.
func (Authorizer) EvaluateConditions(context.Context, authorizer.ConditionsAwareDecision, authorizer.ConditionsData) (authorizer.Decision, string, error) {
	return authorizer.DecisionDeny, "", authorizer.ErrorConditionEvaluationNotSupported
}
