package testnet

import "testing"

func TestParseMetrics(t *testing.T) {
	m := ParseMetrics([]byte(`# HELP x y
# TYPE p2pbft_consensus_sends_total counter
p2pbft_consensus_sends_total{kind="commit",path="direct",result="ok"} 10
p2pbft_consensus_sends_total{kind="prepare",path="direct",result="ok"} 5
p2pbft_consensus_sends_total{kind="prepare",path="direct",result="failed"} 2
p2pbft_chain_height 42
bogus line
p2pbft_chain_block_requests_sum 1.5e+03
`))
	if m["p2pbft_chain_height"] != 42 || m["p2pbft_consensus_sends_total"] != 17 || m["p2pbft_chain_block_requests_sum"] != 1500 {
		t.Fatalf("%v", m)
	}
	if got := m.Sum("p2pbft_consensus_sends_total", `result="ok"`); got != 15 {
		t.Fatalf("ok sends %v", got)
	}
	if got := m.Sum("p2pbft_consensus_sends_total", `result="ok"`, `kind="prepare"`); got != 5 {
		t.Fatalf("ok prepares %v", got)
	}
	if m.Has("nothing") || !m.Has("p2pbft_chain_height") {
		t.Fatal("Has")
	}
}
