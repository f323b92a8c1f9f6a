package netlab

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// LinkProps are the properties of one direction of a link, from one port (host) to another. The zero
// value is a perfect link: no delay, no loss, no bandwidth cap.
type LinkProps struct {
	// Delay is the one-way delay added to every packet.
	Delay time.Duration `json:"delay_ns"`
	// Jitter adds a delay drawn uniformly from [-Jitter, +Jitter] to each packet (the total is never
	// below zero). Packets of a link keep their order unless Reorder is set: a packet is never delivered
	// before the one sent ahead of it, so jitter then delays but does not reorder.
	Jitter  time.Duration `json:"jitter_ns,omitempty"`
	Reorder bool          `json:"reorder,omitempty"`
	// Loss is the probability, 0 to 1, that a packet is dropped (each independently).
	Loss float64 `json:"loss,omitempty"`
	// Bandwidth caps the link, in bits per second (0: no cap): a packet leaves after the packets ahead
	// of it and takes its size over the bandwidth to send; the queue this forms holds Queue bytes, and a
	// packet that finds it full is dropped (tail drop).
	Bandwidth int64 `json:"bandwidth_bps,omitempty"`
	// Queue is the queue of a capped link, in bytes. Default: 200 ms of its bandwidth, at least 64 KiB.
	Queue int `json:"queue_bytes,omitempty"`
	// Cut drops every packet, those already on their way included: a one-way cut when the reverse
	// direction is not cut.
	Cut bool `json:"cut,omitempty"`
}

// String describes the properties briefly ("20ms ±2ms loss 1% 10mbit cut").
func (p LinkProps) String() string {
	var parts []string
	if p.Delay > 0 || p.Jitter == 0 {
		parts = append(parts, p.Delay.String())
	}
	if p.Jitter > 0 {
		j := "±" + p.Jitter.String()
		if p.Reorder {
			j += " (reordering)"
		}
		parts = append(parts, j)
	}
	if p.Loss > 0 {
		parts = append(parts, "loss "+strconv.FormatFloat(100*p.Loss, 'g', 4, 64)+"%")
	}
	if p.Bandwidth > 0 {
		parts = append(parts, FormatBandwidth(p.Bandwidth))
	}
	if p.Cut {
		parts = append(parts, "cut")
	}
	return strings.Join(parts, " ")
}

// Validate checks the properties.
func (p LinkProps) Validate() error {
	switch {
	case p.Delay < 0 || p.Jitter < 0:
		return fmt.Errorf("negative delay or jitter (%s, %s)", p.Delay, p.Jitter)
	case p.Delay > time.Minute || p.Jitter > time.Minute:
		return fmt.Errorf("delay or jitter above a minute (%s, %s)", p.Delay, p.Jitter)
	case math.IsNaN(p.Loss) || p.Loss < 0 || p.Loss > 1:
		return fmt.Errorf("loss %g: want 0 to 1", p.Loss)
	case p.Bandwidth < 0 || p.Queue < 0:
		return fmt.Errorf("negative bandwidth or queue (%d, %d)", p.Bandwidth, p.Queue)
	case p.Bandwidth > 0 && p.Bandwidth < 8000:
		return fmt.Errorf("bandwidth %d bit/s: want at least 8kbit (or 0, no cap)", p.Bandwidth)
	}
	return nil
}

func (p LinkProps) queue() int64 {
	if p.Queue > 0 {
		return int64(p.Queue)
	}
	return max(64<<10, p.Bandwidth/8/5)
}

// ParseBandwidth reads a bandwidth as tc(8) writes it: a number of bits per second with an optional
// unit, bit, kbit, mbit or gbit (powers of 1000; "10mbit"), or bytes per second as bps, kbps, mbps,
// gbps ("1mbps" is 8mbit). "0" is no cap.
func ParseBandwidth(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	units := []struct {
		suffix string
		mult   float64
	}{
		{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1},
		{"gbps", 8e9}, {"mbps", 8e6}, {"kbps", 8e3}, {"bps", 8},
	}
	mult := 1.0
	for _, u := range units {
		if num, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(num), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) || v*mult > 1e12 {
		return 0, fmt.Errorf("bandwidth %q: want a rate such as 10mbit, 512kbit, 1gbit or 2mbps (bytes), up to 1000gbit", s)
	}
	return int64(math.Round(v * mult)), nil
}

// FormatBandwidth writes bits per second as ParseBandwidth reads them ("10mbit").
func FormatBandwidth(bps int64) string {
	switch {
	case bps == 0:
		return "0"
	case bps%1e9 == 0:
		return strconv.FormatInt(bps/1e9, 10) + "gbit"
	case bps%1e6 == 0:
		return strconv.FormatInt(bps/1e6, 10) + "mbit"
	case bps%1e3 == 0:
		return strconv.FormatInt(bps/1e3, 10) + "kbit"
	}
	return strconv.FormatInt(bps, 10) + "bit"
}
