package client

import (
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/multiformats/go-multiaddr"

	"github.com/p2pbft/p2pbft/identity"
)

// unreachableGenesis is a 4-replica genesis whose replicas are at addrs (host:port).
func unreachableGenesis(t *testing.T, addrs []string) *identity.Genesis {
	t.Helper()
	var reps []identity.Replica
	for i, hp := range addrs {
		host, port, _ := strings.Cut(hp, ":")
		a, err := multiaddr.NewMultiaddr("/ip4/" + host + "/tcp/" + port)
		if err != nil {
			t.Fatal(err)
		}
		reps = append(reps, identity.Replica{PeerID: seedKey(t, "unreachable-replica-"+string(rune('0'+i))).PeerID(), Addrs: []multiaddr.Multiaddr{a}})
	}
	g, err := identity.NewGenesis("unreachable", reps)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// closedTCP is a loopback address nothing listens on.
func closedTCP(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// FailUnreachable gives up at once when every replica refuses the connection, but a replica that accepts
// the connection and is slow to answer (here: never answers its handshake) keeps the client waiting for
// ConnectTimeout, as without the option.
func TestFailUnreachable(t *testing.T) {
	// Every replica refuses: the request fails, unsent, well before ConnectTimeout.
	addrs := []string{closedTCP(t), closedTCP(t), closedTCP(t), closedTCP(t)}
	const connect = 20 * time.Second
	cl, err := New(Config{Key: seedKey(t, "unreachable-client"), Genesis: unreachableGenesis(t, addrs),
		Logger: testLogger(t), ConnectTimeout: connect, FailUnreachable: true})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = cl.Do(ctxT(t, 60*time.Second), []byte("x"))
	took := time.Since(start)
	cl.Close()
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "replica 3:") {
		t.Fatalf("err = %v, want ErrUnreachable naming every replica", err)
	}
	if took >= connect {
		t.Fatalf("failed after %s: it waited ConnectTimeout (%s)", took, connect)
	}

	// Replica 0 accepts TCP connections and never answers: its dial stays open, so the client waits.
	slow, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := slow.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	defer func() {
		slow.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()
	addrs[0] = slow.Addr().String()
	const short = time.Second
	cl, err = New(Config{Key: seedKey(t, "unreachable-client"), Genesis: unreachableGenesis(t, addrs),
		Logger: testLogger(t), ConnectTimeout: short, FailUnreachable: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	start = time.Now()
	_, err = cl.Do(ctxT(t, 60*time.Second), []byte("x"))
	if err == nil || errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "within "+short.String()) {
		t.Fatalf("err = %v, want the ConnectTimeout error (a slow replica is waited for)", err)
	}
	if took := time.Since(start); took < short {
		t.Fatalf("gave up after %s, before ConnectTimeout (%s), though replica 0 was still being dialled", took, short)
	}
}
