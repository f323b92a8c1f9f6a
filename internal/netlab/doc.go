// Package netlab builds small virtual networks of Linux network namespaces for tests that need hosts with
// addresses of their own: processes on one machine that reach each other as if from different machines,
// not over 127.0.0.1 (which libp2p, among others, exempts from its per-address limits).
//
// # Design
//
// A Lab is one /24 of private IPv4 addresses (10.77.X.0/24, X chosen free on this machine) and these
// namespaces:
//
//	root namespace (the test process)     fabric namespace <tag>-fabric       host namespaces <tag>-<name>
//	  <tag>r   10.77.X.1  ── veth ──  root ─┐
//	                                        br0 ── h0 ── veth ──  eth0 10.77.X.2   (host 0)
//	                                         ├──── h1 ── veth ──  eth0 10.77.X.3   (host 1)
//	                                         └──── ...
//
// In detail:
//
//   - Every host is a namespace with loopback up and one interface, eth0, holding its address: host k
//     has 10.77.X.(k+2). The address is the host's identity, as a machine's would be: listen on it, put
//     it in configurations, dial it from the other hosts.
//   - The fabric namespace holds the other ends of the hosts' links (h0, h1, ...) and what joins them,
//     by default a Linux bridge (Bridge): a switch with no delay and no loss. It has a namespace of its
//     own so that bridged traffic never passes the root namespace's firewall (docker's FORWARD policy is
//     DROP, and br_netfilter sends bridged frames through it) and so that its interface names never
//     clash with anything.
//   - The root namespace joins the fabric too, as address .1 (Lab.Gateway), so the test process reaches
//     every host directly (HTTP APIs, health checks). This is the only thing the lab adds to the root
//     namespace: one veth interface, <tag>r, and the route of its /24.
//
// Commands run in a host with Host.Command: `ip netns exec NS CMD...`, which execs CMD in place (the
// exec.Cmd's PID is CMD's, so signals reach it).
//
// # Names, parallel runs and leftovers
//
// Every name carries a tag unique to the lab: "nl" + the process ID in base 36 + "-" + a counter
// (nl1k2f-0). Parallel test packages therefore never share a name, and each picks its own /24 under a
// lock file (os.TempDir()/p2pbft-netlab.lock), skipping every /24 an interface or route of the root
// namespace already uses. New first removes leftovers of earlier runs that died without Close: any
// namespace or root interface with a tag whose process no longer exists (its processes are killed by
// PID, then the namespaces and the interface are deleted), and anything already bearing the new lab's
// own names.
//
// Close kills every process still running in the lab's namespaces (by PID: they can only have been
// started through the lab) and deletes the namespaces and the root interface. ForTest does all of this
// for a test: it skips the test when the machine cannot run a lab (not root, no `ip`), and closes the lab
// in t.Cleanup.
//
// # Growing it
//
// The lab keeps one address per host and one link per host into the fabric, so that a link emulator can
// replace the bridge without the hosts noticing: a Fabric is handed every link end in the fabric
// namespace (Lab.FabricNS, Link). A user-space emulator would leave them unbridged, read and write frames
// on each (AF_PACKET sockets, from a process run in the fabric namespace with Lab.FabricCommand), and
// forward them between hosts with delay, loss, a bandwidth cap or a one-way cut per ordered pair of hosts,
// found by the frames' IP addresses. Hosts, addresses and commands stay as they are.
package netlab
