// Package buildinfo says which build of p2pbft is running: the module version and the VCS revision the
// binary was built from, as the Go toolchain records them (runtime/debug.ReadBuildInfo). The command line
// prints them (p2pbft version, --version) and a replica exports them as p2pbft_build_info on /metrics, so
// that a dashboard can tell which replicas run which build.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Info is what the toolchain recorded about the running binary.
type Info struct {
	// Version is the main module's version: "(devel)" for a build from a source tree, a tag or
	// pseudo-version for `go install module@version`, "unknown" without build information (a test binary
	// may have none).
	Version string
	// Revision is the VCS commit, empty when the build did not record one (-buildvcs=false, or not a
	// checkout).
	Revision string
	// Modified reports uncommitted changes in the tree the binary was built from.
	Modified bool
	// GoVersion is the toolchain that built the binary.
	GoVersion string
}

// Read returns the running binary's build information.
func Read() Info {
	in := Info{Version: "unknown", GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return in
	}
	if bi.Main.Version != "" {
		in.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			in.Revision = s.Value
		case "vcs.modified":
			in.Modified = s.Value == "true"
		}
	}
	return in
}

// String is the one-line form the command line prints: version, revision, "(modified)".
func (in Info) String() string {
	s := in.Version
	if in.Revision != "" {
		s += " " + in.Revision
	}
	if in.Modified {
		s += " (modified)"
	}
	return s
}
