//go:build !race

package sim

// ciSeeds is the number of seeds `go test ./pbft/...` runs.
const ciSeeds = 1000
