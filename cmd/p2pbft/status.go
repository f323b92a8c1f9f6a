package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/p2pbft/p2pbft/node/api/apitypes"
	"github.com/p2pbft/p2pbft/node/config"
)

// apiURL resolves the HTTP API to talk to: the flag if given, else the api.http of the home's config,
// else the default address.
func apiURL(flag, home string) (string, error) {
	if flag != "" {
		if !strings.Contains(flag, "://") {
			flag = "http://" + flag
		}
		return strings.TrimRight(flag, "/"), nil
	}
	addr := config.Default().API.HTTP
	if _, err := os.Stat(filepath.Join(home, config.ConfigFile)); err == nil {
		cfg, err := config.Load(home)
		if err != nil {
			return "", err
		}
		if cfg.API.HTTP == "" {
			return "", fmt.Errorf("the node at %s has its HTTP API disabled (api.http is empty); give --api", home)
		}
		addr = cfg.API.HTTP
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("API address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

// apiCall does one request against the HTTP API and decodes the JSON answer into out. Error answers
// become errors carrying the API's message and the exit status they call for: a node that cannot be
// reached or did not answer in time is exitUnavailable, a request the API refused exitRejected. A 404 is
// returned with its status code and no error, for the caller to judge.
func apiCall(ctx context.Context, method, url string, body io.Reader, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, withCode(exitUnavailable, fmt.Errorf("HTTP API: %w (is the node running? is --api right?)", err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("HTTP API: read answer: %w", err)
	}
	if resp.StatusCode >= 300 && resp.StatusCode != http.StatusNotFound {
		var er apitypes.ErrorResponse
		err := fmt.Errorf("HTTP API: %s: %s", resp.Status, strings.TrimSpace(string(data)))
		if json.Unmarshal(data, &er) == nil && er.Error != "" {
			err = fmt.Errorf("HTTP API: %s (%d %s)", er.Error, resp.StatusCode, er.Code)
		}
		return resp.StatusCode, withCode(statusExitCode(resp.StatusCode), err)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("HTTP API: decode answer: %w", err)
		}
	}
	return resp.StatusCode, nil
}

// statusExitCode maps an HTTP API error status to the exit status it calls for.
func statusExitCode(status int) int {
	switch {
	case status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout || status == http.StatusBadGateway:
		return exitUnavailable
	case status == http.StatusNotFound:
		return exitNotFound
	case status >= 400 && status < 500:
		return exitRejected
	}
	return exitError
}

// apiFlag adds --api, the HTTP API a client command talks to (host:port or URL), and the name an older
// release used for it, deprecated (still accepted, with a warning, and hidden from --help).
func apiFlag(fs *pflag.FlagSet, p *string, usage, oldName string) {
	fs.StringVar(p, "api", "", usage)
	if oldName != "" {
		fs.StringVar(p, oldName, "", usage)
		_ = fs.MarkDeprecated(oldName, "use --api")
	}
}

func newStatusCmd(opts *rootOptions) *cobra.Command {
	var url string
	var asJSON bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "status [--api ADDR] [--json]",
		Short: "Show a running replica's status through its HTTP API",
		Long: `status asks a running replica's HTTP API (GET /v1/status) for its state: chain, replica index, view
and primary, mode (normal, view-change, syncing), last executed block, stable checkpoint and watermarks,
pending requests and connected peers. The API address comes from --api, or else from the config.toml in
--home, or else the default 127.0.0.1:26680.`,
		Example: `  p2pbft status --home ~/.p2pbft
  p2pbft status --api 127.0.0.1:26681 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			base, err := apiURL(url, opts.home)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			var st apitypes.Status
			if _, err := apiCall(ctx, http.MethodGet, base+"/v1/status", nil, &st); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, st)
			}
			printStatus(out, st)
			return nil
		},
	}
	homeFlag(cmd.Flags(), opts)
	apiFlag(cmd.Flags(), &url, "the replica's HTTP API, host:port or URL, e.g. 127.0.0.1:26680 (default: from --home's config)", "api-url")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "give up after this long")
	return cmd
}

func printStatus(w io.Writer, st apitypes.Status) {
	name := ""
	if st.Moniker != "" {
		name = fmt.Sprintf(" (%s)", st.Moniker)
	}
	fmt.Fprintf(w, "chain       %s  n=%d f=%d\n", st.ChainID, st.N, st.F)
	fmt.Fprintf(w, "replica     %d%s  %s\n", st.Replica, name, st.PeerID)
	fmt.Fprintf(w, "view        %d  primary %d  mode %s\n", st.View, st.Primary, st.Mode)
	fmt.Fprintf(w, "height      %d  (head %d)  app digest %s\n", st.Height, st.Head, short(st.AppDigest))
	fmt.Fprintf(w, "checkpoint  stable %d  high watermark %d  pending requests %d\n", st.StableCheckpoint, st.HighWatermark, st.Pending)
	peers := make([]string, len(st.Peers))
	for i, p := range st.Peers {
		peers[i] = fmt.Sprint(p.Replica)
	}
	fmt.Fprintf(w, "peers       %d connected: %s\n", len(st.Peers), strings.Join(peers, " "))
	if st.Sync != nil {
		fmt.Fprintf(w, "syncing     to %d by %s from replica %d: %d blocks, %d bytes since %s\n",
			st.Sync.Target, st.Sync.Method, st.Sync.Peer, st.Sync.Blocks, st.Sync.Bytes, st.Sync.Started.Format(time.TimeOnly))
	}
	for _, a := range st.ListenAddrs {
		fmt.Fprintf(w, "address     %s\n", a)
	}
}

func short(s string) string {
	if len(s) > 16 {
		return s[:16]
	}
	return s
}

var errNotFound = errors.New("not found")
