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
//     by default a Linux bridge (Bridge): a switch with no delay and no loss; or the link emulator
//     (Emulator, below): delay, jitter, loss, bandwidth and one-way cuts per ordered pair of hosts. It has a namespace of its
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
// # The link emulator
//
// This kernel may have no netem (`tc qdisc add ... netem` fails with "Specified qdisc kind is unknown"),
// so delay and loss are emulated in user space. An Emulator, given as Config.Fabric, replaces the bridge
// with a switch in the test process: a packet socket (AF_PACKET, SOCK_RAW) on every link end of the
// fabric namespace, opened from a thread that entered the namespace (setns) for the purpose, so that no
// helper process runs there. Each frame read on a port goes
//
//   - if IPv4: onto the link from that port to the port of its destination address (the lab knows every
//     host's; the root namespace is the port named Root, at Lab.Gateway), and to every other port for a
//     broadcast or an address no port has, each copy on its own link;
//   - if ARP: to the port of its target address (every other port for an announcement) at once, with no
//     property applied: address resolution is the local network's business, and a one-way cut must not
//     keep the other direction from resolving its neighbour (B->A works while A->B is cut only if B can
//     still learn A's address);
//   - otherwise (IPv6 neighbour discovery and the like: the lab is IPv4): nowhere.
//
// A link, one direction from one port to another, has LinkProps: a delay, a jitter (uniform, without
// reordering unless asked), a loss probability, a bandwidth cap (a packet waits for those ahead of it
// and takes size/bandwidth to send; a queue of bounded bytes, tail drop), and a cut. A packet's fate is
// decided when it enters the link (loss, queue) and its time of delivery computed then; a goroutine per
// port writes the frames due there in order of that time (a heap), woken by a timer. Properties change
// at any time (SetLink, UpdateLink, SetGroups, Cut, Heal, Apply with a latency Matrix of regions) and
// apply to the packets that enter the link afterwards; a cut also drops the packets already on their
// way. Loss and jitter draw from a generator per link seeded with EmulatorConfig.Seed, so a link's n-th
// packet meets the same fate in every run. Stats count each link's packets and their fates.
//
// The hosts' ends of the links hand over frames the way a real network card would not: veth offloads
// checksums and segmentation by default, so a frame read from the fabric may be a 64 KB TCP segment with
// no checksum, which the other host would drop once it is written again through a packet socket.
// Connect therefore turns off checksum offload (and with it TCP and UDP segmentation offload), generic
// segmentation and receive offload on every host's eth0, on the root namespace's link and on the fabric
// ends (the ethtool ioctl, SIOCETHTOOL): the hosts' stacks then send MTU-sized frames with their
// checksums, as to a real wire. The hosts' traffic is processed by their kernels in the emulator's
// system calls (a write to a veth runs the receiving host's stack), so the emulator's CPU time includes
// it. On the project's 2-core machine it forwarded 8,400 datagrams of 200 bytes per second at 11% of a
// core, and a TCP transfer at 180 MB/s without a bandwidth cap (TestEmulatorForwards logs the figures).
//
// Libraries: golang.org/x/sys/unix (kept by the Go team, already a dependency) for the sockets, setns
// and the ioctls. No packet-parsing library: the switch reads four fixed fields of a frame (EtherType,
// IPv4 destination, ARP target), which gopacket (github.com/google/gopacket, unmaintained since 2021; its
// fork a new dependency tree) would decode into allocated layers per packet for nothing more.
//
// Host.Do runs a function on a thread inside a host's namespace: sockets opened there belong to the host,
// which lets a test talk from host to host without helper processes (emulator_test.go).
package netlab
