//go:build !linux

package netlab

import "errors"

var errLinuxOnly = errors.New("netlab: the link emulator needs Linux (AF_PACKET sockets, network namespaces)")

// Connect fails: the emulator needs Linux.
func (e *Emulator) Connect(l *Lab, links []Link) error { return errLinuxOnly }

// Close does nothing.
func (e *Emulator) Close() error { return nil }

// Do fails: network namespaces are Linux's.
func (h *Host) Do(f func() error) error { return errLinuxOnly }

// port is a link end's socket, on Linux.
type port struct{ q *queue }
