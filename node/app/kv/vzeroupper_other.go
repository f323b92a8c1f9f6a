//go:build !amd64

package kv

// clearUpperVectors is needed only on amd64 (see vzeroupper_amd64.go).
func clearUpperVectors() {}
