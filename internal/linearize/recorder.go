package linearize

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Outcome is how an operation ended.
type Outcome uint8

const (
	// Open: the operation has not returned yet. History treats it as Unknown.
	Open Outcome = iota
	// OK: the operation returned a result.
	OK
	// Failed: the operation certainly did not take effect; it is left out of the history.
	Failed
	// Unknown: the operation may or may not have taken effect (indeterminate).
	Unknown
)

func (o Outcome) String() string {
	switch o {
	case Open:
		return "open"
	case OK:
		return "ok"
	case Failed:
		return "failed"
	case Unknown:
		return "unknown"
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

// Recorder records a history of operations from concurrent clients. Its methods are safe for
// concurrent use. Times are read from the monotonic clock relative to the recorder's creation.
type Recorder struct {
	start time.Time

	mu  sync.Mutex
	ops []record
}

type record struct {
	client  int
	in      Input
	out     Output
	call    int64
	ret     int64
	outcome Outcome
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder { return &Recorder{start: time.Now()} }

// Call is an operation in progress, returned by Recorder.Begin. Exactly one of Return, Fail and
// Indeterminate ends it; later calls are ignored.
type Call struct {
	r *Recorder
	i int
}

func (r *Recorder) now() int64 { return int64(time.Since(r.start)) }

// Begin records the invocation of in by client (a small index, porcupine's ClientId: one sequential
// process). Call it before the request leaves, so that the recorded interval contains the real one.
func (r *Recorder) Begin(client int, in Input) *Call {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, record{client: client, in: in, call: r.now()})
	return &Call{r: r, i: len(r.ops) - 1}
}

func (c *Call) end(outcome Outcome, out Output) {
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	op := &c.r.ops[c.i]
	if op.outcome != Open {
		return
	}
	op.outcome, op.out, op.ret = outcome, out, c.r.now()
}

// Return records that the operation returned out.
func (c *Call) Return(out Output) { c.end(OK, out) }

// Fail records that the operation certainly did not take effect.
func (c *Call) Fail() { c.end(Failed, Output{}) }

// Indeterminate records that the operation's outcome is unknown.
func (c *Call) Indeterminate() { c.end(Unknown, Output{Unknown: true}) }

// Counts returns how many operations ended each way (indexed by Outcome), and their total.
func (r *Recorder) Counts() (counts [4]int, total int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, op := range r.ops {
		counts[op.outcome]++
	}
	return counts, len(r.ops)
}

// History returns the recorded operations for porcupine. Failed operations are left out. An operation
// that is indeterminate or still open returns at the end of the history (after every other return)
// with an output that matches anything, so that the checker may place it anywhere after its call, or
// in effect nowhere. An indeterminate Get constrains nothing and is left out too.
func (r *Recorder) History() []porcupine.Operation {
	r.mu.Lock()
	defer r.mu.Unlock()
	end := r.now()
	for _, op := range r.ops {
		end = max(end, op.ret)
	}
	end++
	h := make([]porcupine.Operation, 0, len(r.ops))
	for _, op := range r.ops {
		switch {
		case op.outcome == Failed:
			continue
		case op.outcome == OK:
			h = append(h, porcupine.Operation{ClientId: op.client, Input: op.in, Call: op.call, Output: op.out, Return: op.ret})
		case op.in.Kind == Get:
			continue
		default:
			h = append(h, porcupine.Operation{ClientId: op.client, Input: op.in, Call: op.call, Output: Output{Unknown: true}, Return: end})
		}
	}
	return h
}

// ErrNotLinearizable is wrapped by Check's error when the history has no linearization.
var ErrNotLinearizable = errors.New("history is not linearizable")

// ErrCheckTimeout is wrapped by Check's error when the checker gave up before a verdict.
var ErrCheckTimeout = errors.New("linearizability check timed out")

// Check checks history against Model within timeout (0: no limit). It returns nil if the history is
// linearizable. Otherwise, if dir is not empty, it writes porcupine's visualization of the history
// (with the longest partial linearizations it found) to dir/linearizability.html, and the error names
// that file.
func Check(history []porcupine.Operation, timeout time.Duration, dir string) error {
	res, info := porcupine.CheckOperationsVerbose(Model, history, timeout)
	var err error
	switch res {
	case porcupine.Ok:
		return nil
	case porcupine.Illegal:
		err = fmt.Errorf("linearize: %d operations: %w", len(history), ErrNotLinearizable)
	default:
		err = fmt.Errorf("linearize: %d operations, after %s: %w", len(history), timeout, ErrCheckTimeout)
	}
	if dir == "" {
		return err
	}
	path := filepath.Join(dir, "linearizability.html")
	if verr := writeVisualization(info, path); verr != nil {
		return errors.Join(err, verr)
	}
	return fmt.Errorf("%w (visualization: %s)", err, path)
}

func writeVisualization(info porcupine.LinearizationInfo, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("linearize: visualization: %w", err)
	}
	if err := porcupine.VisualizePath(Model, info, path); err != nil {
		return fmt.Errorf("linearize: visualization: %w", err)
	}
	return nil
}
