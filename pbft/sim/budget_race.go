//go:build race

package sim

// ciSeeds is the number of seeds `go test -race ./pbft/...` runs: the race detector slows the simulator
// down about tenfold, so the race run covers fewer seeds (the plain run covers 1000).
const ciSeeds = 150
