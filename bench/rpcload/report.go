package main

import (
	"encoding/json"
	"sort"
	"starling/bench/loadkit"
	"strconv"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// The JSON document printed on stdout at the end of a run. Times are in the
// units their names say. The top-level counts are of the window (replies that
// arrived inside it); totals are of the whole run, warm-up and drain included,
// and hold sent = replies + unanswered.
type report struct {
	Method         string                   `json:"method"`
	Settings       settings                 `json:"settings"`
	Window         windowReport             `json:"window"`
	Completed      int64                    `json:"completed"` // calls answered inside the window: ok + errors (+ malformed replies)
	OK             int64                    `json:"ok"`
	Errors         map[string]int64         `json:"errors"` // error.code -> calls answered with it inside the window
	CallsPerSecond float64                  `json:"calls_per_s"`
	Latency        *latencyReport           `json:"latency_ms"` // reply arrival - request write, replies inside the window
	Totals         totals                   `json:"totals"`
	Connections    connections              `json:"connections"`
	CPU            cpuUsage                 `json:"cpu"`
	Results        []lineResults            `json:"results,omitempty"` // --record-results
	Methods        map[string]*methodReport `json:"methods"`           // per method (one without --mix)
}

// methodReport is one method's figures: the window's (as the top level's) and the run's.
type methodReport struct {
	Rate           float64          `json:"rate"` // --mix: the calls/s aimed at; 0 in a closed loop
	Completed      int64            `json:"completed"`
	OK             int64            `json:"ok"`
	Errors         map[string]int64 `json:"errors"`
	CallsPerSecond float64          `json:"calls_per_s"`
	Latency        *latencyReport   `json:"latency_ms"`
	Unanswered     int64            `json:"unanswered"` // the whole run: written, no reply by the end of the drain
	Dropped        int64            `json:"dropped"`    // the whole run, --mix: due, but no room in the queue of due calls
}

type settings struct {
	Server          string  `json:"server"`
	User            string  `json:"user"`
	Connections     int     `json:"connections"`
	Depth           int     `json:"depth"`
	Params          int     `json:"params"` // params lines, used round-robin
	DurationSeconds float64 `json:"duration_s"`
	WarmupSeconds   float64 `json:"warmup_s"`
	DrainSeconds    float64 `json:"drain_s"`
}

type windowReport struct {
	StartNs int64   `json:"start_ns"`
	EndNs   int64   `json:"end_ns"`
	Seconds float64 `json:"seconds"`
}

// totals: every request of the run, and what became of it.
type totals struct {
	Sent          int64            `json:"sent"`       // requests written
	Replies       int64            `json:"replies"`    // replies matched by id to a request in flight
	OK            int64            `json:"ok"`         // ... with a result
	Errors        map[string]int64 `json:"errors"`     // ... with an error, by error.code
	Unanswered    int64            `json:"unanswered"` // written, no reply by the end of the drain
	Unsent        int64            `json:"unsent"`     // --mix: due calls still queued when the run stopped writing
	Unmatched     int64            `json:"unmatched"`  // replies whose id is no request in flight
	Malformed     int64            `json:"malformed"`  // frames not JSON, replies with neither result nor error
	Notifications int64            `json:"notifications"`
	Drained       bool             `json:"drained"` // nothing was in flight on an open connection at the end
	DrainSeconds  float64          `json:"drain_s"`
	FirstError    string           `json:"first_error"`
}

type connections struct {
	Opened      int            `json:"opened"`
	ClosedEarly int            `json:"closed_early"` // ended by the server (or the network) before the run closed them
	CloseCodes  map[string]int `json:"close_codes"`  // of those: the server's close code (1006: no close frame) -> connections
}

// lineResults is what the calls of one params line answered (--record-results):
// the distinct results, at most 8, each compact JSON, sorted.
type lineResults struct {
	Line     int               `json:"line"` // 0-based, blank lines skipped
	Params   json.RawMessage   `json:"params"`
	Calls    int64             `json:"calls"` // calls of this line answered with a result
	Distinct []json.RawMessage `json:"distinct"`
	More     int64             `json:"more"` // results of further distinct values, not kept
}

type latencyReport = loadkit.Latency

// summarize adds up every caller's ledger and tally (after their goroutines ended).
func summarize(cfg *config, p *plan, callers []*caller) *report {
	rep := &report{
		Method: cfg.method,
		Settings: settings{
			Server: cfg.server, User: cfg.user, Connections: cfg.connections, Depth: cfg.depth,
			Params: len(p.params), DurationSeconds: cfg.duration.Seconds(),
			WarmupSeconds: cfg.warmup.Seconds(), DrainSeconds: cfg.drain.Seconds(),
		},
		Errors:      map[string]int64{},
		Totals:      totals{Errors: map[string]int64{}},
		Connections: connections{Opened: len(callers), CloseCodes: map[string]int{}},
		Methods:     map[string]*methodReport{},
	}
	perMethod := make([]*hdrhistogram.Histogram, len(p.methods))
	for m, method := range p.methods {
		perMethod[m] = newHistogram()
		rep.Methods[method.name] = &methodReport{Rate: method.rate, Errors: map[string]int64{}, Dropped: method.dropped.Load()}
	}
	if p.mix {
		rep.Method = "mix"
	}
	latency := newHistogram()
	var results []resultSet
	if p.record {
		results = make([]resultSet, len(p.params))
	}
	for _, c := range callers {
		t := &c.tally
		sent, inFlight := c.ledger.counts()
		rep.Totals.Sent += sent
		rep.Totals.Unanswered += inFlight
		rep.Totals.Replies += t.replies
		rep.Totals.OK += t.ok
		rep.Totals.Unmatched += t.unmatched
		rep.Totals.Malformed += t.malformed
		rep.Totals.Notifications += t.notifications
		addCodes(rep.Totals.Errors, t.errors)
		addCodes(rep.Errors, t.windowErrors)
		rep.Completed += t.completed
		rep.OK += t.windowOK
		latency.Merge(t.latency)
		for m, per := range t.perMethod {
			figures := rep.Methods[p.methods[m].name]
			figures.Completed += per.completed
			figures.OK += per.ok
			addCodes(figures.Errors, per.errors)
			perMethod[m].Merge(per.latency)
		}
		for _, line := range c.ledger.inFlightLines() {
			rep.Methods[p.methods[p.methodOf[line]].name].Unanswered++
		}
		if rep.Totals.FirstError == "" {
			rep.Totals.FirstError = t.firstError
		}
		for line := range t.results {
			results[line].merge(&t.results[line])
		}
		if c.earlyClose {
			code := c.closeCode
			if code == 0 {
				code = 1006 // no close frame
			}
			rep.Connections.ClosedEarly++
			rep.Connections.CloseCodes[strconv.Itoa(code)]++
		}
	}
	rep.CallsPerSecond = round(float64(rep.Completed)/cfg.duration.Seconds(), 1)
	for m, method := range p.methods {
		figures := rep.Methods[method.name]
		figures.CallsPerSecond = round(float64(figures.Completed)/cfg.duration.Seconds(), 1)
		figures.Latency = latencyOf(perMethod[m])
	}
	rep.Latency = latencyOf(latency)
	for line, set := range results {
		rep.Results = append(rep.Results, set.report(line, p.params[line]))
	}
	return rep
}

func addCodes(into map[string]int64, from map[int64]int64) {
	for code, n := range from {
		into[strconv.FormatInt(code, 10)] += n
	}
}

func (r *resultSet) report(line int, params []byte) lineResults {
	out := lineResults{Line: line, Params: json.RawMessage(params), Distinct: []json.RawMessage{}, More: r.more}
	keys := make([]string, 0, len(r.distinct))
	for result, calls := range r.distinct {
		keys = append(keys, result)
		out.Calls += calls
	}
	sort.Strings(keys)
	for _, result := range keys {
		out.Distinct = append(out.Distinct, json.RawMessage(result))
	}
	out.Calls += r.more
	return out
}

// The histograms and CPU samples are loadkit's (shared with the other load generator).
var (
	newHistogram = loadkit.NewHistogram
	record       = loadkit.Record
	latencyOf    = loadkit.LatencyOf
	cpuNow       = loadkit.CPUNow
	round        = loadkit.Round
)

// -- CPU --------------------------------------------------------------------------

type cpuSample = loadkit.CPUSample

// cpuUsage is the load generator's own cost, so that a driver can show it beside the server's.
type cpuUsage struct {
	UserSeconds   float64 `json:"user_s"` // the whole run
	SystemSeconds float64 `json:"sys_s"`
	WindowSeconds float64 `json:"window_s"` // user + sys inside the window
	Cores         float64 `json:"cores"`    // window_s / the window's seconds (1.0 = one core busy)
	MicrosPerCall float64 `json:"us_per_call"`
}

func cpuReport(began, from, to cpuSample, window time.Duration, calls int64) cpuUsage {
	end := cpuNow()
	busy := (to.User + to.System - from.User - from.System).Seconds()
	usage := cpuUsage{
		UserSeconds:   round((end.User - began.User).Seconds(), 3),
		SystemSeconds: round((end.System - began.System).Seconds(), 3),
		WindowSeconds: round(busy, 3),
		Cores:         round(busy/window.Seconds(), 3),
	}
	if calls > 0 {
		usage.MicrosPerCall = round(busy*1e6/float64(calls), 3)
	}
	return usage
}
