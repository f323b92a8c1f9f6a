package pbft

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The core imports nothing but the standard library, the project's wire types and their CBOR library
// (docs/design/architecture.md): `go list -deps ./pbft` must show nothing else.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	allowed := map[string]bool{
		"github.com/p2pbft/p2pbft/pbft": true,
		"github.com/p2pbft/p2pbft/wire": true,
		"github.com/fxamacker/cbor/v2":  true,
		"github.com/x448/float16":       true, // the CBOR library's own dependency
	}
	for _, p := range strings.Fields(string(out)) {
		if !allowed[p] {
			t.Errorf("pbft depends on %s", p)
		}
	}
}

// The core is a pure state machine: no goroutines, no clock, no I/O, no global randomness, no locks.
func TestNoGoroutinesClockOrIO(t *testing.T) {
	forbidden := map[string]bool{
		"time": true, "math/rand": true, "math/rand/v2": true, "crypto/rand": true, "os": true, "io": true,
		"net": true, "sync": true, "sync/atomic": true, "syscall": true, "log": true, "log/slog": true,
		"unsafe": true, "os/exec": true, "io/fs": true, "runtime": true,
	}
	files, _ := filepath.Glob("*.go")
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if forbidden[p] {
				t.Errorf("%s imports %s", name, p)
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if g, ok := n.(*ast.GoStmt); ok {
				t.Errorf("%s: go statement at %s", name, fset.Position(g.Pos()))
			}
			return true
		})
	}
}
