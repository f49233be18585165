// Package policy decides whether verified claims are good enough: the
// attestation policy (reference values per TEE, minimum TCB, debug and
// migration off, VMPL 0), the binding of report data and host data to
// what the guest sent, and the resource policy (which evidence may read
// which resource). Every decision is a pure function over plain values;
// every rejection names the field, the expected and the seen value.
package policy

import (
	"fmt"
	"strings"
)

// Violation is one reason to reject.
type Violation struct {
	Field    string `json:"field"`
	Expected string `json:"expected"`
	Seen     string `json:"seen"`
}

func (v Violation) String() string {
	return fmt.Sprintf("%s: expected %s, seen %s", v.Field, v.Expected, v.Seen)
}

// Rejection is an error listing every violation found.
type Rejection struct {
	Violations []Violation
}

func (r *Rejection) Error() string {
	parts := make([]string, len(r.Violations))
	for i, v := range r.Violations {
		parts[i] = v.String()
	}
	return "rejected: " + strings.Join(parts, "; ")
}

// Reject returns nil when vs is empty and a *Rejection otherwise.
func Reject(vs []Violation) error {
	if len(vs) == 0 {
		return nil
	}
	return &Rejection{Violations: vs}
}
