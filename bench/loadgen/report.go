package main

import (
	"math/bits"
	"sort"
	"starling/bench/loadkit"
	"strconv"
	"time"
)

// The JSON document printed on stdout at the end of a run. Times are in the
// units their names say; counts are whole-run unless the name says "window".
type report struct {
	Scenario     string            `json:"scenario"`
	Run          string            `json:"run"`
	Settings     settings          `json:"settings"`
	Connect      connectReport     `json:"connect"`
	Producer     *producerReport   `json:"producer"`
	Deliveries   *deliveriesReport `json:"deliveries"`
	Latency      *latencyReport    `json:"latency_ms"`
	Frames       *framesReport     `json:"frames"`
	Disconnects  map[string]int    `json:"disconnects"` // close code (or "1006": no close frame) -> connections
	Disconnected int               `json:"disconnected"`
	CPU          cpuUsage          `json:"cpu"`
	Window       *windowReport     `json:"window"`
	Churn        *churnReport      `json:"churn,omitempty"` // churn: reconnects and recoveries
}

type settings struct {
	Server          string  `json:"server"`
	Subscribers     int     `json:"subscribers"`
	Channels        int     `json:"channels"`
	Rate            int     `json:"rate"`
	DurationSeconds float64 `json:"duration_s"`
	WarmupSeconds   float64 `json:"warmup_s"`
	DrainSeconds    float64 `json:"drain_s"`
	HoldSeconds     float64 `json:"hold_s"`
	Producer        string  `json:"producer"`
	PublishMany     bool    `json:"publish_many"`
	DialConcurrency int     `json:"dial_concurrency"`
	HTTPInflight    int     `json:"http_inflight"`
	Follows         string  `json:"follows,omitempty"` // following: the follow lists' file
	Seed            int64   `json:"seed,omitempty"`
	Authors         int     `json:"authors,omitempty"` // following: users some subscriber follows
	FollowEdges     int     `json:"follow_edges,omitempty"`
	PerActivity     float64 `json:"deliveries_per_activity,omitempty"` // following: mean recipients of the draw
}

func settingsOf(c *config) settings {
	s := settings{
		Server: c.server, Subscribers: c.subscribers, Channels: c.channels, Rate: c.rate,
		DurationSeconds: c.duration.Seconds(), WarmupSeconds: c.warmup.Seconds(),
		DrainSeconds: c.drain.Seconds(), HoldSeconds: c.hold.Seconds(), Producer: c.producer,
		PublishMany: c.publishMany, DialConcurrency: c.dialConcurrency, HTTPInflight: c.httpInflight,
	}
	if g := c.graph; g != nil {
		s.Follows, s.Seed, s.Authors = c.followsFile, c.seed, len(g.authors)
		for _, authors := range g.follows {
			s.FollowEdges += len(authors)
		}
		s.PerActivity = round(g.deliveriesPerActivity(), 3)
	}
	return s
}

// connectReport: how the subscribers got in.
type connectReport struct {
	Attempted        int            `json:"attempted"`
	Connected        int            `json:"connected"`
	Errors           int            `json:"connect_errors"`
	ErrorKinds       map[string]int `json:"error_kinds"` // "dial", "handshake", "close 1013", "subscribe", "timeout", ...
	FirstError       string         `json:"first_error"`
	Retries          int            `json:"retries"`
	RetryKinds       map[string]int `json:"retry_kinds"` // what the retries were for
	SubscribeSeconds float64        `json:"subscribe_s"` // first dial -> last subscribed
	PerSecond        float64        `json:"subscribed_per_s"`
	PerClientMs      *quantiles     `json:"per_client_ms"`  // one client's connect + subscribe (its retries included)
	SinceStartMs     *quantiles     `json:"since_start_ms"` // first dial of the run -> this client subscribed
}

// producerReport: what entered the stream.
type producerReport struct {
	Mode       string           `json:"mode"` // redis | http-batch | http-publish-many
	Events     int64            `json:"events"`
	PerChannel []int64          `json:"per_channel"`
	InWindow   int64            `json:"in_window"` // accepted events stamped inside the window
	Errors     int64            `json:"errors"`    // events refused or lost on the way
	Unsent     int64            `json:"unsent"`    // http: events still queued when the run ended, never sent
	FirstError string           `json:"first_error"`
	Requests   int64            `json:"requests"` // pipelines (redis) or POSTs (http)
	MaxLagMs   float64          `json:"max_lag_ms"`
	P99LagMs   float64          `json:"p99_lag_ms"` // send time - the tick the event was due, per request
	EventsPerS float64          `json:"window_events_per_s"`
	FellBack   bool             `json:"fell_back"`            // publish_many answered -32601: batches of realtime.publish instead
	PublishMs  *latencyReport   `json:"publish_ms,omitempty"` // http: request round trips sent inside the window, ms
	PerAuthor  map[string]int64 `json:"per_author,omitempty"` // following: activities accepted per author
	accepted   [][]uint64
	all        []uint64 // following: the seqs accepted
	authorOf   []int32  // following: the author of each seq
	perAuthor  []int64  // following: per author index
}

// deliveriesReport: what the subscribers received, checked against the producer.
type deliveriesReport struct {
	Received          int64            `json:"received"` // distinct (subscriber, event) pairs of this run
	Expected          int64            `json:"expected"` // sum over subscribers of their channel's accepted events
	Lost              int64            `json:"lost"`     // accepted, subscribed, never received
	Duplicated        int64            `json:"duplicated"`
	OutOfOrder        int64            `json:"out_of_order"`            // seq below the highest seq already seen on that channel
	OffsetViolations  int64            `json:"offset_order_violations"` // offset not above the last offset seen on that channel
	OffsetGaps        int64            `json:"offset_gaps"`             // following: offset above the last + 1 (offsets skipped)
	LostPairs         map[string]int64 `json:"lost_pairs,omitempty"`    // following: lost per "follower <- author", the first 20 pairs
	LosingSubscribers int64            `json:"losing_subscribers"`      // following: subscribers that lost something
	SilentSubscribers int64            `json:"silent_subscribers"`      // following: of them, those that got nothing they wanted
	Unexpected        int64            `json:"unexpected"`              // this run's seqs the producer never saw accepted
	Foreign           int64            `json:"foreign"`                 // pubs of another run or channel
	Malformed         int64            `json:"malformed"`               // frames or pubs that did not parse
	InWindow          int64            `json:"in_window"`               // deliveries of events sent inside the window
	PerSecond         float64          `json:"window_per_s"`
	Drained           bool             `json:"drained"`
	DrainSeconds      float64          `json:"drain_s"`
}

type framesReport struct {
	Total            int64   `json:"total"`
	InWindow         int64   `json:"in_window"`          // frames received inside the window
	MessagesInWindow int64   `json:"messages_in_window"` // this run's pubs in them
	MessagesPerFrame float64 `json:"messages_per_frame"`
	PerSecond        float64 `json:"window_per_s"`
}

type latencyReport = loadkit.Latency

type quantiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

type windowReport struct {
	StartNs int64   `json:"start_ns"`
	EndNs   int64   `json:"end_ns"`
	Seconds float64 `json:"seconds"`
}

// The histograms and CPU samples are loadkit's (shared with the other load generator).
var (
	newHistogram = loadkit.NewHistogram
	record       = loadkit.Record
	latencyOf    = loadkit.LatencyOf
	cpuNow       = loadkit.CPUNow
	round        = loadkit.Round
)

// quantilesOf gives exact quantiles (nearest rank) of durations, in ms.
func quantilesOf(values []time.Duration) *quantiles {
	if len(values) == 0 {
		return nil
	}
	sorted := append([]time.Duration(nil), values...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	at := func(q float64) float64 {
		rank := int(q*float64(len(sorted))+0.999999) - 1
		if rank < 0 {
			rank = 0
		}
		return round(float64(sorted[rank])/1e6, 3)
	}
	return &quantiles{P50: at(0.5), P90: at(0.9), P99: at(0.99), Max: round(float64(sorted[len(sorted)-1])/1e6, 3)}
}

// -- CPU --------------------------------------------------------------------------

type cpuSample = loadkit.CPUSample

type cpuUsage struct {
	UserSeconds         float64 `json:"user_s"` // the whole run
	SystemSeconds       float64 `json:"sys_s"`
	WindowSeconds       float64 `json:"window_s"` // user + sys inside the window (or the hold)
	MicrosPerDelivery   float64 `json:"us_per_delivery"`
	DeliveriesMeasured  int64   `json:"window_deliveries"` // pubs received inside the window
	IncludesTheProducer bool    `json:"includes_the_producer"`
}

func cpuReport(began, from, to cpuSample, deliveries int64) cpuUsage {
	end := cpuNow()
	window := (to.User + to.System - from.User - from.System).Seconds()
	usage := cpuUsage{
		UserSeconds:         round((end.User - began.User).Seconds(), 3),
		SystemSeconds:       round((end.System - began.System).Seconds(), 3),
		WindowSeconds:       round(window, 3),
		DeliveriesMeasured:  deliveries,
		IncludesTheProducer: true,
	}
	if deliveries > 0 {
		usage.MicrosPerDelivery = round(window*1e6/float64(deliveries), 3)
	}
	return usage
}

// -- bitsets of seqs ---------------------------------------------------------------

// setBit marks seq in *set (growing it); whether it was already marked.
func setBit(set *[]uint64, seq int64) bool {
	word, bit := int(seq>>6), uint64(1)<<(uint(seq)&63)
	if word >= len(*set) {
		grown := make([]uint64, word+1+word/2)
		copy(grown, *set)
		*set = grown
	}
	had := (*set)[word]&bit != 0
	(*set)[word] |= bit
	return had
}

// hasBit says whether seq is marked in set.
func hasBit(set []uint64, seq int64) bool {
	word := int(seq >> 6)
	return word < len(set) && set[word]&(uint64(1)<<(uint(seq)&63)) != 0
}

// missing counts the bits of want that have is lacks; extra those of have that want lacks.
func missing(want, have []uint64) (lost, extra int64) {
	for i := 0; i < len(want) || i < len(have); i++ {
		var w, h uint64
		if i < len(want) {
			w = want[i]
		}
		if i < len(have) {
			h = have[i]
		}
		lost += int64(bits.OnesCount64(w &^ h))
		extra += int64(bits.OnesCount64(h &^ w))
	}
	return lost, extra
}

func closeKey(code int) string { return strconv.Itoa(code) }
