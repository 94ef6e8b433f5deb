package validation

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// wantErr is one expected error: its type and path exactly, and, when detail is set, a part
// of its message (the detail, or for Invalid/NotSupported errors the rendered value too).
type wantErr struct {
	typ    field.ErrorType
	path   string
	detail string
}

func required(path string, detail ...string) wantErr {
	return wantErr{field.ErrorTypeRequired, path, strings.Join(detail, "")}
}
func invalid(path string, detail ...string) wantErr {
	return wantErr{field.ErrorTypeInvalid, path, strings.Join(detail, "")}
}
func forbidden(path string, detail ...string) wantErr {
	return wantErr{field.ErrorTypeForbidden, path, strings.Join(detail, "")}
}
func unsupported(path string, detail ...string) wantErr {
	return wantErr{field.ErrorTypeNotSupported, path, strings.Join(detail, "")}
}
func duplicate(path string, detail ...string) wantErr {
	return wantErr{field.ErrorTypeDuplicate, path, strings.Join(detail, "")}
}
func tooMany(path string, detail ...string) wantErr {
	return wantErr{field.ErrorTypeTooMany, path, strings.Join(detail, "")}
}

// expectErrors compares got with want in order: the same count, and at each position the same
// type and path, and the detail when one is given.
func expectErrors(t *testing.T, got field.ErrorList, want []wantErr) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%s", len(got), len(want), render(got))
	}
	for i, w := range want {
		g := got[i]
		if g.Type != w.typ || g.Field != w.path {
			t.Errorf("error %d: got %s %s, want %s %s\n%s", i, g.Type, g.Field, w.typ, w.path, render(got))
			continue
		}
		if w.detail != "" && !strings.Contains(g.ErrorBody(), w.detail) {
			t.Errorf("error %d: %q does not contain %q", i, g.ErrorBody(), w.detail)
		}
	}
}

func render(errs field.ErrorList) string {
	var b strings.Builder
	for _, e := range errs {
		b.WriteString("  ")
		b.WriteString(e.Error())
		b.WriteString("\n")
	}
	return b.String()
}
