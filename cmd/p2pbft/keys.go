package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/spf13/cobra"

	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/node/config"
)

func newInitCmd(opts *rootOptions) *cobra.Command {
	var moniker string
	var listen []string
	var apiAddr string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a node's home directory: a new node key and a commented config.toml",
		Long: `init creates the home directory (mode 0700) with a new ed25519 node key (node_key, mode 0600) and a
commented config.toml. It never overwrites an existing key or config.

Then build the genesis from every replica's peer ID (p2pbft genesis) and copy it to each home as
genesis.toml.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			home := opts.home
			cfg := config.Default()
			cfg.Home = home
			cfg.Moniker = moniker
			if len(listen) > 0 {
				cfg.P2P.Listen = listen
			}
			if cmd.Flags().Changed("api") {
				cfg.API.HTTP = apiAddr
			}
			// Validate before creating anything: a mistyped flag must not leave an empty home behind.
			if err := cfg.Validate(); err != nil {
				return withCode(exitUsage, err)
			}
			if err := os.MkdirAll(home, 0o700); err != nil {
				return fmt.Errorf("create home: %w", err)
			}
			cfgPath := filepath.Join(home, config.ConfigFile)
			if _, err := os.Stat(cfgPath); err == nil {
				return fmt.Errorf("%s already exists; init never overwrites a node's files", cfgPath)
			}
			key, created, err := identity.GenerateOrLoadKey(cfg.Path(cfg.Key))
			if err != nil {
				return err
			}
			b, err := config.Commented(cfg)
			if err != nil {
				return err
			}
			if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
				return fmt.Errorf("write config: %w", err)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, struct {
					Home       string `json:"home"`
					Key        string `json:"key"`
					KeyCreated bool   `json:"key_created"`
					Config     string `json:"config"`
					PeerID     string `json:"peer_id"`
					Genesis    string `json:"genesis"`
				}{home, cfg.Path(cfg.Key), created, cfgPath, key.PeerID().String(), cfg.Path(cfg.Genesis)})
			}
			verb := "created"
			if !created {
				verb = "kept existing"
			}
			fmt.Fprintf(out, "home:    %s\nkey:     %s (%s)\nconfig:  %s\npeer ID: %s\n", home, cfg.Path(cfg.Key), verb, cfgPath, key.PeerID())
			fmt.Fprintf(out, "next:    put the chain's genesis at %s (see p2pbft genesis --help)\n", cfg.Path(cfg.Genesis))
			return nil
		},
	}
	homeFlag(cmd.Flags(), opts)
	cmd.Flags().StringVar(&moniker, "moniker", "", "a human-readable name for this node")
	cmd.Flags().StringSliceVar(&listen, "listen", nil, "p2p listen multiaddrs (default TCP and QUIC on port "+defaultP2PPort+")")
	cmd.Flags().StringVar(&apiAddr, "api", "", "HTTP API listen address (default "+config.DefaultAPIAddr+"; empty disables)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print what was created as JSON")
	return cmd
}

func newKeygenCmd() *cobra.Command {
	var out string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "keygen --out FILE",
		Short: "Generate an ed25519 key file (node or client key) and print its peer ID",
		Long: `keygen writes a new ed25519 private key to FILE (PKCS#8 PEM, mode 0600) and prints its peer ID.
The same kind of key serves a replica (its peer ID goes into the genesis) or a client (it signs
transactions). It never overwrites an existing file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usagef("--out FILE is required")
			}
			k, err := identity.GenerateKey()
			if err != nil {
				return err
			}
			if err := identity.SaveKey(out, k); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), struct {
					PeerID string `json:"peer_id"`
					File   string `json:"file"`
				}{k.PeerID().String(), out})
			}
			fmt.Fprintln(cmd.OutOrStdout(), k.PeerID())
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "the key file to create")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the peer ID and the file as JSON")
	return cmd
}

func newIDCmd(opts *rootOptions) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "id",
		Short: "Print this node's peer ID and the multiaddrs others can bootstrap from",
		Long: `id prints the node's peer ID and, for each configured external address (p2p.external) or else
listen address, the full multiaddr (ending in /p2p/<peer-id>) that other nodes can pass to --bootstrap.
A wildcard listen address (0.0.0.0, ::) is shown as the addresses of this machine's network interfaces
it stands for, loopback last: pick one the other nodes can reach.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(opts.home)
			if err != nil {
				return err
			}
			key, err := identity.LoadKey(cfg.Path(cfg.Key))
			if err != nil {
				return err
			}
			addrs := cfg.P2P.External
			if len(addrs) == 0 {
				addrs = cfg.P2P.Listen
			}
			full, err := dialableAddrs(addrs)
			if err != nil {
				return err
			}
			id := key.PeerID().String()
			for i := range full {
				full[i] += "/p2p/" + id
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, struct {
					PeerID string   `json:"peer_id"`
					Addrs  []string `json:"addrs"`
				}{id, full})
			}
			fmt.Fprintln(out, id)
			for _, a := range full {
				fmt.Fprintln(out, a)
			}
			return nil
		},
	}
	homeFlag(cmd.Flags(), opts)
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"peer_id": ..., "addrs": [...]}`)
	return cmd
}

// dialableAddrs turns configured multiaddrs into ones another machine can dial: a wildcard IP becomes
// each address of this machine's interfaces of that family (non-loopback first). A wildcard that
// matches no interface is kept as it is.
func dialableAddrs(addrs []string) ([]string, error) {
	var ifaces []multiaddr.Multiaddr
	var out, loopback []string
	for _, a := range addrs {
		ma, err := multiaddr.NewMultiaddr(a)
		if err != nil {
			return nil, fmt.Errorf("address %q in config: %w", a, err)
		}
		if !manet.IsIPUnspecified(ma) {
			out = append(out, ma.String())
			continue
		}
		if ifaces == nil {
			if ifaces, err = manet.InterfaceMultiaddrs(); err != nil {
				return nil, fmt.Errorf("list the network interfaces: %w", err)
			}
		}
		resolved, err := manet.ResolveUnspecifiedAddress(ma, ifaces)
		if err != nil {
			out = append(out, ma.String())
			continue
		}
		for _, r := range resolved {
			if manet.IsIP6LinkLocal(r) {
				continue
			}
			if manet.IsIPLoopback(r) {
				loopback = append(loopback, r.String())
			} else {
				out = append(out, r.String())
			}
		}
	}
	return append(out, loopback...), nil
}

func newGenesisCmd() *cobra.Command {
	var chainID, out string
	var replicas, homes []string
	var force bool
	cmd := &cobra.Command{
		Use:   "genesis --chain-id ID (--replica SPEC... | --from-home DIR...) [--out FILE]",
		Short: "Build a replica set (genesis) from the replicas' peer IDs",
		Long: `genesis builds the replica set of a chain: its chain ID and the replicas in order (a replica's index
is its position; replica 0 is the first primary). Give each replica as

  --replica [NAME=]PEER-ID[@MULTIADDR[,MULTIADDR...]]

or point at node homes made by p2pbft init with --from-home DIR (their keys are read; the listen addresses
of their configs are not copied, since wildcard addresses are not reachable). n replicas tolerate
f = (n-1)/3 faults. The file is printed, or written to --out, which refuses to replace an existing file
(as init and keygen do) unless --force is given.`,
		Example: `  p2pbft genesis --chain-id lab --replica a=12D3KooW...@/ip4/10.0.0.1/tcp/26690 --replica b=12D3KooW... ...
  p2pbft genesis --chain-id lab --from-home n0 --from-home n1 --from-home n2 --from-home n3 --out genesis.toml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out != "" && !force {
				if _, err := os.Stat(out); err == nil {
					return fmt.Errorf("%s already exists: a replica set is not replaced by accident (give --force to replace it)", out)
				}
			}
			var rs []identity.Replica
			for _, spec := range replicas {
				r, err := parseReplicaSpec(spec)
				if err != nil {
					return withCode(exitUsage, err)
				}
				rs = append(rs, r)
			}
			for _, h := range homes {
				cfg, err := config.Load(h)
				if err != nil {
					return err
				}
				k, err := identity.LoadKey(cfg.Path(cfg.Key))
				if err != nil {
					return err
				}
				name := cfg.Moniker
				if name == "" {
					name = filepath.Base(h)
				}
				rs = append(rs, identity.Replica{Name: name, PeerID: k.PeerID()})
			}
			g, err := identity.NewGenesis(chainID, rs)
			if err != nil {
				return withCode(exitUsage, err)
			}
			if w := faultToleranceWarning(g.N(), g.F()); w != "" {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning: "+w)
			}
			if out != "" {
				if err := g.Save(out); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: chain %s, n=%d, f=%d\n", out, g.ChainID(), g.N(), g.F())
				return nil
			}
			b, err := g.Marshal()
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	}
	cmd.Flags().StringVar(&chainID, "chain-id", "", "the chain ID ([A-Za-z0-9._-], at most 64 characters)")
	cmd.Flags().StringArrayVar(&replicas, "replica", nil, "a replica as [NAME=]PEER-ID[@MULTIADDR,...] (repeat, in order)")
	cmd.Flags().StringArrayVar(&homes, "from-home", nil, "a node home directory to read the peer ID from (repeat, in order)")
	cmd.Flags().StringVar(&out, "out", "", "write the genesis to this file instead of standard output (an existing file only with --force)")
	cmd.Flags().BoolVar(&force, "force", false, "with --out: replace an existing file")
	return cmd
}

// parseReplicaSpec parses [NAME=]PEER-ID[@MULTIADDR[,MULTIADDR...]].
func parseReplicaSpec(spec string) (identity.Replica, error) {
	var r identity.Replica
	rest := spec
	if name, after, ok := strings.Cut(rest, "="); ok {
		r.Name, rest = name, after
	}
	idPart, addrPart, _ := strings.Cut(rest, "@")
	id, err := peer.Decode(idPart)
	if err != nil {
		return r, fmt.Errorf("--replica %q: peer ID %q: %w", spec, idPart, err)
	}
	r.PeerID = id
	if addrPart != "" {
		for _, a := range strings.Split(addrPart, ",") {
			ma, err := multiaddr.NewMultiaddr(a)
			if err != nil {
				return r, fmt.Errorf("--replica %q: address %q: %w", spec, a, err)
			}
			r.Addrs = append(r.Addrs, ma)
		}
	}
	return r, nil
}

// faultToleranceWarning says what a replica count tolerates when it is not what one would expect: fewer
// than 4 replicas tolerate no fault at all, and a count between two 3f+1 values pays for replicas that add
// no tolerance.
func faultToleranceWarning(n, f int) string {
	switch {
	case f == 0:
		return fmt.Sprintf("n=%d tolerates no faulty replica (f=0): one crash stops the chain, and one Byzantine replica "+
			"can break it; PBFT tolerates f faults with n=3f+1 replicas, 4 for f=1 (fine for development)", n)
	case n != 3*f+1:
		return fmt.Sprintf("n=%d tolerates f=%d, as n=%d does: the other %d replica(s) add messages, not tolerance", n, f, 3*f+1, n-(3*f+1))
	}
	return ""
}
