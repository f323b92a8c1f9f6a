//go:build !race

package sim

// ciSeeds is the number of seeds `go test ./pbft/...` runs; scenarioSeeds the seeds per targeted scenario.
const (
	ciSeeds       = 1000
	scenarioSeeds = 3
)
