package node

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"

	"github.com/multiformats/go-multiaddr"
)

// checkListenAddrs tries each fixed TCP or UDP port of the listen addresses before the p2p host binds
// them. libp2p binds TCP with SO_REUSEPORT, so a second node configured with the same port would start
// "successfully" and share the port with the first (the kernel spreading connections between them); a
// plain bind fails on a port that anything listens on, which gives the clear error instead.
func checkListenAddrs(addrs []string) error {
	for _, s := range addrs {
		a, err := multiaddr.NewMultiaddr(s)
		if err != nil {
			return fmt.Errorf("p2p.listen %q: %w", s, err)
		}
		host := ""
		for _, p := range []int{multiaddr.P_IP4, multiaddr.P_IP6} {
			if v, err := a.ValueForProtocol(p); err == nil {
				host = v
			}
		}
		if host == "" {
			continue // DNS names and the like: libp2p reports those itself
		}
		if port, err := a.ValueForProtocol(multiaddr.P_TCP); err == nil && port != "0" {
			l, err := net.Listen("tcp", net.JoinHostPort(host, port))
			if err != nil {
				return listenError(s, err)
			}
			l.Close()
		}
		if port, err := a.ValueForProtocol(multiaddr.P_UDP); err == nil && port != "0" {
			if _, err := strconv.Atoi(port); err == nil {
				c, err := net.ListenPacket("udp", net.JoinHostPort(host, port))
				if err != nil {
					return listenError(s, err)
				}
				c.Close()
			}
		}
	}
	return nil
}

func listenError(addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("node: cannot listen on %s: address already in use (another node, or another program, listens there; change p2p.listen): %w", addr, err)
	}
	return fmt.Errorf("node: cannot listen on %s: %w", addr, err)
}
