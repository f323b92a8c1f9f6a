package layers

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/p2pbft/p2pbft"

// allowed lists, for every package of the module (path below the module), the packages of the module it may
// import directly. Imports outside the module are checked only where a rule says so (heavy below).
var allowed = map[string][]string{
	"wire":                 {},
	"wire/wiretest":        {"wire"},
	"identity":             {"wire"},
	"pbft":                 {"wire"},
	"pbft/sim":             {"pbft", "wire", "wire/wiretest"},
	"pbft/sim/cmd/pbftsim": {"pbft/sim"},
	"p2p":                  {"identity", "wire", "internal/logs"},
	"internal/buildinfo":   {},
	"internal/logs":        {},
	"internal/netlab":      {},
	"internal/layers":      {},
	"node/app":             {"wire"},
	"node/app/kv":          {"node/app", "wire"},
	"node/app/apptest":     {"node/app", "node/store", "wire"},
	"node/trace":           {},
	"node/signstate":       {},
	"node/store":           {"node/app", "pbft", "wire"},
	"node/statesync":       {"node/store", "node/app", "pbft", "wire", "identity", "node/api/apitypes"},
	"node/config":          {"node/store", "p2p"},
	"node/api/apitypes":    {"node/app/kv", "node/trace"},
	"node": {"identity", "internal/buildinfo", "internal/logs", "node/api/apitypes", "node/app", "node/app/kv",
		"node/config", "node/signstate", "node/statesync", "node/store", "node/trace", "p2p", "pbft", "wire"},
	"client/session": {"identity", "pbft", "wire"},
	"client":         {"client/session", "identity", "node/app/kv", "p2p", "pbft", "wire"},
	"ui":             {"node/api/apitypes", "node/trace"},
	"node/api": {"client/session", "identity", "internal/logs", "node", "node/api/apitypes", "node/app/kv",
		"node/store", "node/trace", "p2p", "pbft", "ui", "wire"},
	"internal/timeline":  {"node/api/apitypes", "node/trace"},
	"internal/linearize": {"client"},
	"testnet":            {"client", "identity", "node/api/apitypes", "node/app/kv", "node/config", "node/store", "ui"},
	"bench": {"client", "client/session", "identity", "node/api/apitypes", "node/app/kv", "node/config", "pbft",
		"testnet", "wire"},
	"bench/scenario": {"bench", "internal/netlab", "internal/timeline", "node/config", "node/store", "pbft", "wire"},
	"cmd/p2pbft":     nil, // the command may import anything
}

// heavy are modules that a package which only speaks HTTP or only decides must not pull in, even
// indirectly: the network stack (libp2p's hosts, transports and pubsub; its core key and peer-ID types
// are fine, identity is built on them), the database and the metrics library.
var heavy = []string{"github.com/libp2p/go-libp2p/p2p/", "github.com/libp2p/go-libp2p-pubsub", "github.com/quic-go/",
	"github.com/cockroachdb/pebble", "github.com/prometheus/"}

// light are the packages that must not depend on heavy modules at all (transitively).
var light = []string{"wire", "identity", "pbft", "node/app", "node/app/kv", "node/trace", "node/api/apitypes", "ui",
	"internal/timeline"}

type pkg struct {
	imports []string // direct imports
	deps    []string // transitive dependencies
}

func listPackages(t *testing.T) map[string]pkg {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps=false", "-f",
		"{{.ImportPath}}\t{{join .Imports \" \"}}\t{{join .Deps \" \"}}", module+"/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	pkgs := map[string]pkg{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 3 {
			t.Fatalf("go list line %q", line)
		}
		pkgs[strings.TrimPrefix(strings.TrimPrefix(f[0], module), "/")] = pkg{imports: strings.Fields(f[1]), deps: strings.Fields(f[2])}
	}
	if len(pkgs) < 10 {
		t.Fatalf("go list found %d packages", len(pkgs))
	}
	return pkgs
}

func TestImportRules(t *testing.T) {
	pkgs := listPackages(t)
	names := make([]string, 0, len(pkgs))
	for name := range pkgs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		rule, ok := allowed[name]
		if !ok {
			t.Errorf("package %s is not in the layering table (internal/layers): place it on purpose", name)
			continue
		}
		if rule == nil {
			continue
		}
		for _, imp := range pkgs[name].imports {
			own, ok := strings.CutPrefix(imp, module+"/")
			if !ok {
				continue
			}
			if !slices.Contains(rule, own) {
				t.Errorf("%s imports %s, which the layering does not allow (allowed: %s)", name, own, strings.Join(rule, ", "))
			}
		}
	}
	for name := range allowed {
		if _, ok := pkgs[name]; !ok {
			t.Errorf("the layering table names %s, which is not a package of the module any more", name)
		}
	}
}

func TestLightPackagesStayLight(t *testing.T) {
	pkgs := listPackages(t)
	for _, name := range light {
		for _, d := range pkgs[name].deps {
			for _, h := range heavy {
				if strings.HasPrefix(d, h) {
					t.Errorf("%s depends on %s (through its imports): it must build without the network stack, the database or metrics", name, d)
				}
			}
		}
	}
}

// README's layout table has a row for every package, so that a reader of the README finds each one.
func TestReadmeLayoutCoversEveryPackage(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]bool{}
	for _, line := range strings.Split(string(readme), "\n") {
		if rest, ok := strings.CutPrefix(line, "| `"); ok {
			if end := strings.IndexByte(rest, '`'); end > 0 {
				rows[strings.TrimSuffix(rest[:end], "/")] = true
			}
		}
	}
	for name := range listPackages(t) {
		if !rows[name] {
			t.Errorf("README's layout table has no row for package %s", name)
		}
	}
}
