package timeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// FilesLimit is how many slots a result folder's trace asks each replica for: more than a replica keeps by
// default (trace.slots, 1024), so the folder holds all it had.
const FilesLimit = 10000

// Names of the files WriteFiles writes into a result folder.
const (
	FileJSON     = "trace.json"
	FileText     = "trace.txt"
	FileTimeline = "trace.png"
	FilePhases   = "phases.png"
)

// Collect fetches the records of every replica (base URLs of their HTTP APIs) for a result folder: all
// they keep, within timeout. A replica that is down is listed among the sources.
func Collect(ctx context.Context, urls []string, timeout time.Duration) (*Trace, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return Fetch(ctx, &http.Client{Timeout: timeout}, urls, Query{Limit: FilesLimit})
}

// WriteFiles writes t into folder dir: the merged records (trace.json), a text summary (trace.txt: the
// sources, the slowest slot, every view change and the latest slots), the swimlane of the latest slots
// (trace.png) and the breakdown by phase of every slot (phases.png). title heads the pictures.
func WriteFiles(dir string, t *Trace, title string) error {
	var errs []error
	b, err := json.MarshalIndent(t, "", "  ")
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, FileJSON), append(b, '\n'), 0o644)
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("timeline: %s: %w", FileJSON, err))
	}
	err = writeFile(filepath.Join(dir, FileText), func(w io.Writer) error {
		WriteSummary(w, t, 20)
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	if err := WriteTimelinePNG(t, title, filepath.Join(dir, FileTimeline)); err != nil {
		errs = append(errs, err)
	}
	if err := WritePhasesPNG(t, title, filepath.Join(dir, FilePhases)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// WriteSummary writes what a person looks at first in a long trace: which replicas answered, the slowest
// slot (from its pre-prepare to the last replica's commit), every view change, and the latest slots.
func WriteSummary(w io.Writer, t *Trace, latest int) {
	fmt.Fprintf(w, "trace records of %d slots and %d view changes from %d replicas\n", len(t.Slots), len(t.ViewChanges), len(t.Sources))
	for _, s := range t.Sources {
		switch {
		case s.Error != "":
			fmt.Fprintf(w, "  %s: no records: %s\n", s.API, s.Error)
		case !s.Enabled:
			fmt.Fprintf(w, "  %s: replica %d keeps no records (trace.enabled is off)\n", s.API, s.Replica)
		default:
			fmt.Fprintf(w, "  %s: replica %d\n", s.API, s.Replica)
		}
	}
	if len(t.Slots) == 0 && len(t.ViewChanges) == 0 {
		fmt.Fprintln(w, "(no trace records)")
		return
	}
	fmt.Fprintln(w, "\ntimes in ms after the primary's pre-prepare; * marks the quorum moments; votes are replica@ms")
	if s := t.Slowest(); s != nil {
		fmt.Fprintf(w, "\n== the slowest slot ==\n")
		WriteSlot(w, s)
	}
	if len(t.ViewChanges) > 0 {
		fmt.Fprintf(w, "\n== view changes ==\n")
		for i := range t.ViewChanges {
			WriteViewChange(w, &t.ViewChanges[i])
		}
	}
	slots := t.Slots
	if len(slots) > latest {
		slots = slots[len(slots)-latest:]
	}
	fmt.Fprintf(w, "\n== the latest %d slots ==\n", len(slots))
	for i := range slots {
		WriteSlot(w, &slots[i])
	}
}
