package p2p

import (
	"encoding/binary"
	"time"

	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/p2pbft/p2pbft/wire"
)

// Direct streams carry frames: a 4-byte big-endian length, then that many bytes. A frame is never empty
// and never longer than the limit the reader passes; the reader checks the length before allocating.
const frameHeaderSize = 4

// ErrFrameTooLarge is returned by readFrame for a frame over the limit.
var ErrFrameTooLarge = errors.New("p2p: frame too large")

// errEmptyFrame is returned by readFrame for a zero-length frame.
var errEmptyFrame = errors.New("p2p: empty frame")

// writeFrame writes one frame.
func writeFrame(w io.Writer, body []byte) error {
	if len(body) == 0 {
		return errEmptyFrame
	}
	if uint64(len(body)) > uint64(wire.MaxMessageSize) {
		return fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, len(body))
	}
	buf := make([]byte, frameHeaderSize+len(body))
	binary.BigEndian.PutUint32(buf, uint32(len(body)))
	copy(buf[frameHeaderSize:], body)
	_, err := w.Write(buf) // one write: one yamux/QUIC frame for small messages
	return err
}

// readFrameHeader reads a frame's length and checks it against limit.
func readFrameHeader(r io.Reader, limit int) (int, error) {
	var hdr [frameHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 {
		return 0, errEmptyFrame
	}
	if uint64(n) > uint64(limit) {
		return 0, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, n, limit)
	}
	return int(n), nil
}

// readFrameBody reads a frame body of n bytes.
func readFrameBody(r io.Reader, n int) ([]byte, error) {
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("p2p: frame body: %w", err)
	}
	return body, nil
}

// readFrame reads one whole frame of at most limit bytes.
func readFrame(r io.Reader, limit int) ([]byte, error) {
	n, err := readFrameHeader(r, limit)
	if err != nil {
		return nil, err
	}
	return readFrameBody(r, n)
}

// A response on the request protocol is one frame: a status byte, then for statusOK the response
// envelope, for statusError a UTF-8 message of at most maxErrorLen bytes.
const (
	statusOK    byte = 0
	statusError byte = 1
	maxErrorLen      = 1024
)

// RemoteError is an error the remote peer returned for a request.
type RemoteError struct{ Msg string }

func (e *RemoteError) Error() string { return "p2p: remote: " + e.Msg }

func encodeResponse(env *wire.Envelope, herr error) ([]byte, error) {
	return appendResponse(nil, env, herr)
}

// appendResponse appends the encoded response to dst (sessions put the request number in front).
func appendResponse(dst []byte, env *wire.Envelope, herr error) ([]byte, error) {
	if herr != nil {
		msg := strings.ToValidUTF8(herr.Error(), "?")
		if len(msg) > maxErrorLen {
			msg = msg[:maxErrorLen]
			for !utf8.ValidString(msg) { // the cut split a rune
				msg = msg[:len(msg)-1]
			}
		}
		dst = append(dst, statusError)
		return append(dst, msg...), nil
	}
	b, err := env.Marshal()
	if err != nil {
		return nil, err
	}
	dst = append(dst, statusOK)
	return append(dst, b...), nil
}

// decodeResponse decodes a response frame. A remote error comes back as a *RemoteError.
func decodeResponse(b []byte) (*wire.Envelope, error) {
	if len(b) == 0 {
		return nil, errEmptyFrame
	}
	switch b[0] {
	case statusOK:
		e, err := wire.DecodeEnvelope(b[1:])
		if err != nil {
			return nil, fmt.Errorf("p2p: response: %w", err)
		}
		return e, nil
	case statusError:
		msg := b[1:]
		if len(msg) > maxErrorLen || !utf8.Valid(msg) {
			return nil, errors.New("p2p: response: malformed error message")
		}
		return nil, &RemoteError{Msg: string(msg)}
	default:
		return nil, fmt.Errorf("p2p: response: unknown status %d", b[0])
	}
}

// maxCoalesce bounds the bytes one write gathers from queued frames: one write, one muxer frame and one
// system call for many small responses (or requests) instead of one each.
const maxCoalesce = 64 << 10

// appendFrameTo appends one frame (length prefix and body) to dst.
func appendFrameTo(dst, body []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(body)))
	return append(dst, body...)
}

// writeQueued writes the frame first and whatever else is queued on q right now (up to maxCoalesce
// bytes) in one write with a StreamTimeout deadline. It returns how many frames it wrote, the buffer for
// reuse, and whether q was found closed.
func (h *Host) writeQueued(st network.Stream, q <-chan []byte, first []byte, buf []byte) (int, []byte, bool, error) {
	buf = appendFrameTo(buf[:0], first)
	n := 1
	closed := false
gather:
	for len(buf) < maxCoalesce {
		select {
		case b, ok := <-q:
			if !ok {
				closed = true
				break gather
			}
			buf = appendFrameTo(buf, b)
			n++
		default:
			break gather
		}
	}
	_ = st.SetWriteDeadline(time.Now().Add(h.cfg.StreamTimeout))
	_, err := st.Write(buf)
	if cap(buf) > 4*maxCoalesce { // one huge response: do not keep its buffer
		buf = nil
	}
	return n, buf, closed, err
}
