package client

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/p2p"
	"github.com/p2pbft/p2pbft/pbft"
	"github.com/p2pbft/p2pbft/wire"
)

// Config configures a Client. Zero values take the defaults given on each field.
type Config struct {
	// Key is the client key: the identity of the first libp2p host and the base of the session keys.
	// It must not be a replica's key. Required.
	Key *identity.Key
	// Genesis is the replica set of the chain. Required.
	Genesis *identity.Genesis
	// Bootstrap holds multiaddrs ending in /p2p/<peer-id> to dial at start, in addition to the
	// addresses in the genesis. One reachable replica is enough.
	Bootstrap []string
	// ListenAddrs are the client hosts' listen addresses. Default: TCP and QUIC on 127.0.0.1, port 0
	// (a client dials out; it need not be reachable).
	ListenAddrs []string
	// Sessions is how many requests may be outstanding at once (one per session key). Default 1.
	Sessions int
	// SessionsPerHost is how many sessions share one libp2p host. Each host keeps one link to each
	// replica (p2p.Link), on which the requests of its sessions go and the replicas' replies come back.
	// Default: all sessions on one host. More hosts only model more client machines.
	SessionsPerHost int
	// Verifier checks the replicas' reply signatures (once per batch and replica; the client caches the
	// result). Default: an identity.Verifier with the replicas' keys.
	Verifier wire.Verifier
	// RetryTimeout is how long to wait for f+1 matching replies before sending the request to every
	// replica; retransmissions follow at this interval, doubling up to MaxRetryTimeout. Default 1s.
	RetryTimeout time.Duration
	// MaxRetryTimeout caps the retransmission interval. Default 8s.
	MaxRetryTimeout time.Duration
	// ConnectTimeout bounds how long a request waits for a link to any replica before it fails without
	// having been sent. Default 10s.
	ConnectTimeout time.Duration
	// FailUnreachable makes a request that finds no link up fail at once, wrapping ErrUnreachable,
	// instead of waiting ConnectTimeout, as soon as an attempt to reach every replica has failed
	// (connection refused, no address known: nothing to wait for); WaitConnected then returns that
	// error too. A replica slow to accept keeps its attempt open and is still waited for. Off by default:
	// a client started together with its chain (a testnet, a test) waits for the replicas to come up.
	// For a one-shot command line client, which should say at once that nothing listens.
	FailUnreachable bool
	// MaxRequestBytes is the replicas' request size limit (pbft.Config.MaxRequestBytes): larger requests
	// fail at once. Default pbft.DefaultMaxRequestBytes.
	MaxRequestBytes int
	// Logger receives the client's logs. Default: slog.Default().
	Logger *slog.Logger
	// Registerer, if set, gets the client's Prometheus metrics.
	Registerer prometheus.Registerer
	// P2P lets a caller tune the client hosts; Key, Genesis, ListenAddrs, Bootstrap, Logger and
	// Registerer are set from the fields above.
	P2P p2p.Config
}

func (c Config) withDefaults() Config {
	if c.Sessions == 0 {
		c.Sessions = 1
	}
	if c.SessionsPerHost == 0 {
		c.SessionsPerHost = max(c.Sessions, 1)
	}
	if c.RetryTimeout == 0 {
		c.RetryTimeout = time.Second
	}
	if c.MaxRetryTimeout == 0 {
		c.MaxRetryTimeout = 8 * time.Second
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = pbft.DefaultMaxRequestBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if len(c.ListenAddrs) == 0 {
		c.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	if c.Key == nil {
		errs = append(errs, errors.New("client: config: Key is required"))
	}
	if c.Genesis == nil {
		errs = append(errs, errors.New("client: config: Genesis is required"))
	}
	if c.Key != nil && c.Genesis != nil {
		if i, ok := c.Genesis.IndexOfPeer(c.Key.PeerID()); ok {
			errs = append(errs, fmt.Errorf("client: config: the client key is replica %d's key; use a separate client key (p2pbft keygen)", i))
		}
	}
	if c.Sessions < 1 || c.Sessions > 1<<16 {
		errs = append(errs, fmt.Errorf("client: config: sessions %d not in [1, 65536]", c.Sessions))
	}
	if c.SessionsPerHost < 1 {
		errs = append(errs, fmt.Errorf("client: config: sessions per host %d must be positive", c.SessionsPerHost))
	}
	if c.RetryTimeout <= 0 || c.MaxRetryTimeout < c.RetryTimeout {
		errs = append(errs, fmt.Errorf("client: config: retry timeouts [%s, %s] are not a range", c.RetryTimeout, c.MaxRetryTimeout))
	}
	return errors.Join(errs...)
}
