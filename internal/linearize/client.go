package linearize

import (
	"context"
	"errors"
	"fmt"

	"github.com/p2pbft/p2pbft/client"
)

// Do runs in through c (one request through consensus) and returns its result.
func Do(ctx context.Context, c *client.Client, in Input) (Output, error) {
	key := []byte(in.Key)
	switch in.Kind {
	case Put:
		return Output{}, c.Put(ctx, key, []byte(in.Value))
	case Get:
		v, found, err := c.Get(ctx, key)
		return Output{Found: found, Value: string(v)}, err
	case Del:
		existed, err := c.Delete(ctx, key)
		return Output{Found: existed}, err
	case CAS:
		if in.ExpectAbsent {
			ok, cur, err := c.CreateIfAbsent(ctx, key, []byte(in.Value))
			// A failed create-if-absent found the key.
			return Output{Swapped: ok, Found: !ok, Value: string(cur)}, err
		}
		ok, cur, exists, err := c.CAS(ctx, key, []byte(in.Expect), []byte(in.Value))
		return Output{Swapped: ok, Found: exists, Value: string(cur)}, err
	}
	return Output{}, fmt.Errorf("linearize: unknown operation %s", in.Kind)
}

// Classify says what a client error means for the history. A refusal (client.ErrRefused: f+1 replicas
// refused it, or the client never sent it) and an invalid operation (client.ErrInvalidOp: executed
// without effect) certainly changed nothing: Failed. Anything else, a timeout, client.ErrUnknownOutcome,
// a closed client or a network error after the request may have left, is Unknown: the request may still
// execute. Classifying a failure as Unknown is always safe; the reverse could hide a violation.
func Classify(err error) Outcome {
	switch {
	case err == nil:
		return OK
	case errors.Is(err, client.ErrRefused), errors.Is(err, client.ErrInvalidOp):
		return Failed
	}
	return Unknown
}

// Run records in as an operation of client (see Recorder.Begin), runs it through c, and records its
// outcome. It returns the operation's output (meaningful when the outcome is OK), the outcome and the
// client's error.
func (r *Recorder) Run(ctx context.Context, c *client.Client, clientID int, in Input) (Output, Outcome, error) {
	call := r.Begin(clientID, in)
	out, err := Do(ctx, c, in)
	switch o := Classify(err); o {
	case OK:
		call.Return(out)
		return out, o, nil
	case Failed:
		call.Fail()
		return Output{}, o, err
	default:
		call.Indeterminate()
		return Output{}, o, err
	}
}
