package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/p2pbft/p2pbft/client"
	"github.com/p2pbft/p2pbft/identity"
	"github.com/p2pbft/p2pbft/node/api/apitypes"
	"github.com/p2pbft/p2pbft/node/app/kv"
	"github.com/p2pbft/p2pbft/node/config"
	"github.com/p2pbft/p2pbft/p2p"
	"github.com/p2pbft/p2pbft/pbft"
)

// CLIKeyFile is the default client key of `p2pbft tx`, inside --home. It is not the node's client_key
// (which the node's HTTP API signs with): two processes signing with one key would supersede each
// other's requests.
const CLIKeyFile = "cli_key"

type txOptions struct {
	genesis   string
	key       string
	bootstrap []string
	mdns      bool
	timeout   time.Duration
	api       string
	valueFile string
	local     bool
	asJSON    bool
	b64       bool
	absent    bool
	logLevel  string
}

func newTxCmd(opts *rootOptions) *cobra.Command {
	o := &txOptions{}
	cmd := &cobra.Command{
		Use:   "tx put|get|del|cas ...",
		Short: "Send a key-value transaction and wait until f+1 replicas agree on its result",
		Long: `tx sends one key-value transaction to the chain and prints its result.

By default it is a client of the chain over libp2p: it signs the request with a client key (--key,
default <home>/cli_key, created on first use), sends it to every replica it reaches (again, marked as a
retransmission, if f+1 matching replies do not come within a second), and accepts the result once f+1
replicas sent matching signed replies. The replicas come from the genesis (--genesis, default
<home>/genesis.toml), --bootstrap addresses, peer exchange with the replicas reached, and --mdns.

With --api it goes through a node's HTTP API instead (the node signs with its own client key and one
replica answers); the API address is the --api value ("home": the one in --home's config).

Keys and values are taken as UTF-8 text, or as standard base64 with --base64. A new value (put VALUE,
cas NEW) may instead come from a file, --value-file FILE, or from standard input, "-" in its place or
--value-file -; it is taken as it is (bytes, not base64). "get" prints the value (or fails with "not
found"); "cas" fails with the current value when the expectation does not hold.

` + exitCodes,
		Example: `  p2pbft tx --home testnet/run/client put color red
  p2pbft tx --home testnet/run/client get color
  p2pbft tx --home testnet/run/client cas color red green
  p2pbft tx --home testnet/run/client cas --absent lock me
  p2pbft tx --home testnet/run/client del color
  p2pbft tx --home testnet/run/client put config --value-file config.json
  echo -n blue | p2pbft tx --home testnet/run/client put color -
  p2pbft tx --api 127.0.0.1:26680 put color blue
  p2pbft tx --api 127.0.0.1:26680 --local get color     # one replica's committed state, no consensus`,
	}
	pf := cmd.PersistentFlags()
	homeFlag(pf, opts)
	pf.StringVar(&o.genesis, "genesis", "", "the chain's genesis file (default <home>/genesis.toml)")
	pf.StringVar(&o.key, "key", "", "the client key file (default <home>/"+CLIKeyFile+", created if missing)")
	pf.StringArrayVar(&o.bootstrap, "bootstrap", nil, "a replica to dial, /ip4/HOST/tcp/PORT/p2p/PEER-ID (repeat; the genesis addresses are dialled too)")
	pf.BoolVar(&o.mdns, "mdns", false, "also find the replicas on the local network with mDNS (they must run with p2p.mdns on)")
	pf.DurationVar(&o.timeout, "timeout", 30*time.Second, "give up after this long (the transaction may still execute)")
	apiFlag(pf, &o.api, "go through this node's HTTP API (host:port or URL; \"home\": the one in --home's config) instead of libp2p", "http")
	pf.BoolVar(&o.local, "local", false, "get: read the node's committed state through --api, without consensus (fast, one replica's word)")
	pf.BoolVar(&o.asJSON, "json", false, "print the result as JSON")
	pf.BoolVar(&o.b64, "base64", false, "keys and values are standard base64 (output values too)")
	pf.StringVar(&o.logLevel, "log-level", "warn", "client log level: debug, info, warn or error")

	run := func(build func(cmd *cobra.Command, args []string) (kv.Op, error)) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			op, err := build(cmd, args)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
			defer cancel()
			if o.api != "" {
				return txHTTP(ctx, cmd.OutOrStdout(), o, opts, op)
			}
			return txP2P(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), o, opts, op)
		}
	}
	dec := func(s string) ([]byte, error) {
		if !o.b64 {
			return []byte(s), nil
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, usagef("%q is not standard base64 (--base64): %v", s, err)
		}
		return b, nil
	}
	// value returns the new value: from --value-file, from standard input ("-"), or the argument (args
	// holds it last unless --value-file is given).
	value := func(cmd *cobra.Command, args []string) ([]byte, error) {
		switch {
		case o.valueFile != "":
			return readValue(cmd.InOrStdin(), o.valueFile)
		case args[len(args)-1] == "-":
			return readValue(cmd.InOrStdin(), "-")
		}
		return dec(args[len(args)-1])
	}
	// withValue checks the argument count: n with the value, n-1 when --value-file gives it.
	withValue := func(n int) cobra.PositionalArgs {
		return func(cmd *cobra.Command, args []string) error {
			want := n
			if o.valueFile != "" {
				want--
			}
			return cobra.ExactArgs(want)(cmd, args)
		}
	}
	decAll := func(args []string) ([][]byte, error) {
		out := make([][]byte, len(args))
		for i, a := range args {
			b, err := dec(a)
			if err != nil {
				return nil, err
			}
			out[i] = b
		}
		return out, nil
	}
	put := &cobra.Command{Use: "put KEY VALUE|-", Short: "Set KEY to VALUE (-: standard input; or --value-file FILE)", Args: withValue(2),
		RunE: run(func(cmd *cobra.Command, a []string) (kv.Op, error) {
			k, err := dec(a[0])
			if err != nil {
				return kv.Op{}, err
			}
			v, err := value(cmd, a)
			if err != nil {
				return kv.Op{}, err
			}
			return kv.Put(k, v), nil
		})}
	put.Flags().StringVar(&o.valueFile, "value-file", "", "take VALUE from this file (-: standard input), as it is")
	get := &cobra.Command{Use: "get KEY", Short: "Read KEY through consensus (linearizable; --local with --api: a local read)", Args: cobra.ExactArgs(1),
		RunE: run(func(_ *cobra.Command, a []string) (kv.Op, error) {
			b, err := decAll(a)
			if err != nil {
				return kv.Op{}, err
			}
			return kv.Get(b[0]), nil
		})}
	del := &cobra.Command{Use: "del KEY", Aliases: []string{"delete"}, Short: "Delete KEY", Args: cobra.ExactArgs(1),
		RunE: run(func(_ *cobra.Command, a []string) (kv.Op, error) {
			b, err := decAll(a)
			if err != nil {
				return kv.Op{}, err
			}
			return kv.Delete(b[0]), nil
		})}
	cas := &cobra.Command{Use: "cas KEY EXPECT NEW|- | cas --absent KEY NEW|-", Short: "Set KEY to NEW if it holds EXPECT (or, with --absent, if it does not exist)",
		Args: func(cmd *cobra.Command, args []string) error {
			if o.absent {
				return withValue(2)(cmd, args)
			}
			return withValue(3)(cmd, args)
		},
		RunE: run(func(cmd *cobra.Command, a []string) (kv.Op, error) {
			n := len(a)
			if o.valueFile == "" {
				n-- // the last argument is NEW
			}
			b, err := decAll(a[:n])
			if err != nil {
				return kv.Op{}, err
			}
			v, err := value(cmd, a)
			if err != nil {
				return kv.Op{}, err
			}
			if o.absent {
				return kv.CreateIfAbsent(b[0], v), nil
			}
			return kv.CAS(b[0], b[1], v), nil
		})}
	cas.Flags().BoolVar(&o.absent, "absent", false, "create KEY only if it does not exist")
	cas.Flags().StringVar(&o.valueFile, "value-file", "", "take NEW from this file (-: standard input), as it is")
	cmd.AddCommand(put, get, del, cas)
	return cmd
}

// maxValueBytes bounds a value read from a file or standard input: far above what one request carries
// (p2p.max_message_size, 4 MiB by default), so the replicas' limit is the one a user meets, with its
// message.
const maxValueBytes = 64 << 20

// readValue reads a value from a file, or standard input for "-".
func readValue(stdin io.Reader, path string) ([]byte, error) {
	r, name := stdin, "standard input"
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, withCode(exitUsage, fmt.Errorf("--value-file: %w", err))
		}
		defer f.Close()
		r, name = f, path
	}
	b, err := io.ReadAll(io.LimitReader(r, maxValueBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read the value from %s: %w", name, err)
	}
	if len(b) > maxValueBytes {
		return nil, usagef("the value in %s is larger than %d bytes", name, maxValueBytes)
	}
	return b, nil
}

// txOutcome is what tx prints.
type txOutcome struct {
	Op        string `json:"op"`
	Key       string `json:"key"`
	Status    string `json:"status"`
	Value     string `json:"value,omitempty"`
	Exists    bool   `json:"exists"`
	Height    uint64 `json:"height,omitempty"`
	View      uint64 `json:"view"`
	Replicas  []int  `json:"replicas,omitempty"`
	Replica   *int   `json:"replica,omitempty"`
	Timestamp uint64 `json:"timestamp"`
	Latency   string `json:"latency"`
	Via       string `json:"via"`
}

// report prints a result and turns outcomes a script must notice (missing key, failed cas) into errors.
func report(w io.Writer, o *txOptions, op kv.Op, res kv.Result, out txOutcome) error {
	out.Op, out.Status, out.Exists = op.Type.String(), res.Status.String(), res.Exists
	out.Key = string(op.Key)
	val := string(res.Value)
	if o.b64 {
		out.Key = base64.StdEncoding.EncodeToString(op.Key)
		val = base64.StdEncoding.EncodeToString(res.Value)
	}
	if res.Value != nil {
		out.Value = val
	}
	if res.Status == kv.StatusInvalid {
		return withCode(exitRejected, fmt.Errorf("the replicas rejected the operation: %s", res.Error))
	}
	if o.asJSON {
		if err := printJSON(w, out); err != nil {
			return err
		}
	} else {
		who := fmt.Sprintf("replicas %s agree", joinInts(out.Replicas))
		if out.Replica != nil {
			who = fmt.Sprintf("replica %d answered", *out.Replica)
		}
		if out.Via == "local" {
			who = "local read"
		}
		switch {
		case op.Type == kv.OpGet && res.Status == kv.StatusOK:
			fmt.Fprintln(w, val)
		case res.Status == kv.StatusOK:
			fmt.Fprintf(w, "ok: %s %q at height %d, view %d (%s, %s)\n", out.Op, out.Key, out.Height, out.View, who, out.Latency)
		}
	}
	switch {
	case res.Status == kv.StatusNotFound && op.Type == kv.OpGet:
		return withCode(exitNotFound, fmt.Errorf("key %q: %w", out.Key, errNotFound))
	case res.Status == kv.StatusNotFound:
		return withCode(exitNotFound, fmt.Errorf("%s %q: %w (nothing deleted)", out.Op, out.Key, errNotFound))
	case res.Status == kv.StatusConflict && res.Exists:
		return withCode(exitConflict, fmt.Errorf("cas %q: conflict: the key holds %q", out.Key, val))
	case res.Status == kv.StatusConflict:
		return withCode(exitConflict, fmt.Errorf("cas %q: conflict: the key does not exist", out.Key))
	}
	return nil
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ",")
}

// txP2P runs the transaction as a libp2p client of the chain.
func txP2P(ctx context.Context, w, errw io.Writer, o *txOptions, opts *rootOptions, op kv.Op) error {
	if o.local {
		return usagef("--local reads one node's state through its HTTP API: add --api ADDR")
	}
	genPath := o.genesis
	if genPath == "" {
		genPath = filepath.Join(opts.home, config.GenesisFile)
	}
	g, err := identity.LoadGenesis(genPath)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("no genesis at %s: give --genesis FILE or --home DIR (the testnet prints one), or use --api", genPath)
		}
		return err
	}
	keyPath := o.key
	if keyPath == "" {
		keyPath = filepath.Join(opts.home, CLIKeyFile)
	}
	key, _, err := identity.GenerateOrLoadKey(keyPath)
	if err != nil {
		return err
	}
	log, err := newLogger(errw, o.logLevel, "text")
	if err != nil {
		return err
	}
	// A one-shot command says at once when every replica refused the connection, rather than waiting
	// ConnectTimeout for a replica to come up; with mDNS the replicas' addresses may still be found.
	c, err := client.New(client.Config{Key: key, Genesis: g, Bootstrap: o.bootstrap, Logger: log, P2P: p2p.Config{MDNS: o.mdns},
		FailUnreachable: !o.mdns})
	if err != nil {
		return err
	}
	defer c.Close()
	// Connections form in the background; a short head start saves a retry round: a quorum, then a
	// moment for the rest (a replica may be down).
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	_ = c.WaitConnected(wctx, pbft.Quorum(g.N()))
	cancel()
	wctx, cancel = context.WithTimeout(ctx, 200*time.Millisecond)
	_ = c.WaitConnected(wctx, g.N())
	cancel()
	res, rep, err := c.KV(ctx, op)
	if err != nil && rep == nil {
		if errors.Is(err, client.ErrUnknownOutcome) || errors.Is(err, client.ErrUnreachable) || errors.Is(err, context.DeadlineExceeded) {
			return withCode(exitUnavailable, fmt.Errorf("%w\n(connected to %d of %d replicas; is the network running and the genesis right?)", err, len(c.Host().ConnectedReplicas()), g.N()))
		}
		return err
	}
	out := txOutcome{Height: rep.Seq, View: rep.View, Replicas: rep.Replicas, Timestamp: rep.Timestamp,
		Latency: rep.Latency.Round(10 * time.Microsecond).String(), Via: "p2p"}
	return report(w, o, op, res, out)
}

// txHTTP runs the transaction through a node's HTTP API.
func txHTTP(ctx context.Context, w io.Writer, o *txOptions, opts *rootOptions, op kv.Op) error {
	flag := o.api
	if flag == "home" {
		flag = ""
	}
	base, err := apiURL(flag, opts.home)
	if err != nil {
		return err
	}
	start := time.Now()
	if o.local {
		if op.Type != kv.OpGet {
			return usagef("--local only reads: use it with get")
		}
		var kr apitypes.KVResponse
		code, err := apiCall(ctx, http.MethodGet, base+"/v1/kv/"+url.PathEscape(base64.URLEncoding.EncodeToString(op.Key))+"?encoding=base64", nil, &kr)
		if err != nil {
			return err
		}
		res := kv.Result{Status: kv.StatusNotFound}
		if code == http.StatusOK && kr.Found {
			v, err := base64.StdEncoding.DecodeString(kr.ValueBase64)
			if err != nil {
				return fmt.Errorf("HTTP API: bad value: %w", err)
			}
			res = kv.Result{Status: kv.StatusOK, Value: v, Exists: true}
		}
		return report(w, o, op, res, txOutcome{Height: kr.Height, Latency: time.Since(start).Round(10 * time.Microsecond).String(), Via: "local"})
	}
	jop := apitypes.Op{Type: op.Type.String(), Key: base64.StdEncoding.EncodeToString(op.Key),
		Value: base64.StdEncoding.EncodeToString(op.Value), Expect: base64.StdEncoding.EncodeToString(op.Expect),
		ExpectAbsent: op.ExpectAbsent}
	body, _ := json.Marshal(apitypes.TxRequest{Op: &jop, Encoding: "base64"})
	var tr apitypes.TxResponse
	if _, err := apiCall(ctx, http.MethodPost, base+"/v1/tx?timeout="+o.timeout.String(), bytes.NewReader(body), &tr); err != nil {
		return err
	}
	raw, err := base64.StdEncoding.DecodeString(tr.ResultBase64)
	if err != nil {
		return fmt.Errorf("HTTP API: bad result: %w", err)
	}
	res, err := kv.DecodeResult(raw)
	if err != nil {
		return fmt.Errorf("HTTP API: the result is not a key-value result: %w", err)
	}
	return report(w, o, op, res, txOutcome{Height: tr.Height, View: tr.View, Replica: tr.Replica, Timestamp: tr.Timestamp,
		Latency: time.Since(start).Round(10 * time.Microsecond).String(), Via: "http"})
}
