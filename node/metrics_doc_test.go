package node

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// describedMetrics returns the names of every metric family a node registers (its own, its p2p host's,
// the runtime's), from the collectors' descriptions: a family with no sample yet is included.
func describedMetrics(t *testing.T, reg *prometheus.Registry) map[string]bool {
	t.Helper()
	ch := make(chan *prometheus.Desc)
	go func() {
		reg.Describe(ch)
		close(ch)
	}()
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	names := map[string]bool{}
	for d := range ch {
		m := fq.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("descriptor without a name: %s", d)
		}
		names[m[1]] = true
	}
	return names
}

// docMetrics returns the metric names docs/metrics.md lists in its tables (| `name` | ...).
func docMetrics(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `([a-z0-9_:]+)`")
	names := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(string(b), -1) {
		names[m[1]] = true
	}
	return names
}

// TestMetricsDocumented keeps docs/metrics.md and the node's metrics in step: every p2pbft_* family a
// replica registers is listed, every listed one (but the Go client's, p2pbft_client_*, registered by
// package client) exists, the Go runtime and process collectors and build_info are there, and the
// Prometheus rules only use metrics that exist.
func TestMetricsDocumented(t *testing.T) {
	c := newCluster(t, 1, nil)
	n, err := New(c.cfgs[0], Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	have := describedMetrics(t, n.registry)
	documented := docMetrics(t)
	for name := range have {
		if strings.HasPrefix(name, "p2pbft_") && !documented[name] {
			t.Errorf("%s is not in docs/metrics.md", name)
		}
	}
	for name := range documented {
		if strings.HasPrefix(name, "p2pbft_") && !strings.HasPrefix(name, "p2pbft_client_") && !have[name] {
			t.Errorf("docs/metrics.md lists %s, which a replica does not export", name)
		}
	}
	for _, name := range []string{"process_cpu_seconds_total", "process_resident_memory_bytes", "go_goroutines", "p2pbft_build_info", "p2pbft_node_info"} {
		if !have[name] {
			t.Errorf("%s not registered", name)
		}
	}

	// The rules name only metrics that exist (or Prometheus' own up, or their own recorded series).
	rules, err := os.ReadFile(filepath.Join("..", "docs", "prometheus", "p2pbft.rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	used := regexp.MustCompile(`\bp2pbft_[a-z0-9_]+`).FindAllString(string(rules), -1)
	for _, name := range used {
		base := name
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(name, suffix); ok && have[b] {
				base = b
			}
		}
		if !have[base] {
			t.Errorf("p2pbft.rules.yml uses %s, which a replica does not export", name)
		}
	}

	// Gathered (with values), the info series carry the replica's identity; every family is well formed.
	mfs, err := n.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "p2pbft_node_info" {
			continue
		}
		l := map[string]string{}
		for _, lp := range mf.GetMetric()[0].GetLabel() {
			l[lp.GetName()] = lp.GetValue()
		}
		if l["chain_id"] != testChain || l["replica"] != "0" || l["moniker"] != "r0" || l["peer_id"] != n.key.PeerID().String() {
			t.Errorf("p2pbft_node_info labels %v", l)
		}
	}
}

// envRequirePromtool, when set, makes TestPrometheusRules fail instead of skipping without promtool
// (.ci/run sets it: CI must check the rules).
const envRequirePromtool = "P2PBFT_REQUIRE_PROMTOOL"

// TestPrometheusRules checks docs/prometheus/p2pbft.rules.yml with promtool: its syntax and
// expressions (check rules) and its unit tests (test rules p2pbft.rules.test.yml: each alert fires on
// the series it is about, and not on healthy ones).
func TestPrometheusRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv(envRequirePromtool) != "" {
			t.Fatalf("promtool not found and %s is set: install it (Debian: apt-get install prometheus)", envRequirePromtool)
		}
		t.Skipf("promtool not found (Debian: apt-get install prometheus); set %s=1 to make this a failure", envRequirePromtool)
	}
	dir := filepath.Join("..", "docs", "prometheus")
	for _, args := range [][]string{{"check", "rules", "p2pbft.rules.yml"}, {"test", "rules", "p2pbft.rules.test.yml"}} {
		start := time.Now()
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out.String())
		}
		t.Logf("promtool %s: ok in %s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	}
	// Every alert has a unit test.
	rules, _ := os.ReadFile(filepath.Join(dir, "p2pbft.rules.yml"))
	tests, _ := os.ReadFile(filepath.Join(dir, "p2pbft.rules.test.yml"))
	for _, m := range regexp.MustCompile(`(?m)^\s*- alert: (\S+)`).FindAllStringSubmatch(string(rules), -1) {
		if !slices.Contains(strings.Fields(strings.ReplaceAll(string(tests), ":", " ")), m[1]) {
			t.Errorf("alert %s has no test in p2pbft.rules.test.yml", m[1])
		}
	}
}
