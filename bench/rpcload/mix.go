package main

// A mix (--mix): several methods, each called at its own rate (open loop),
// and the figures of every --interval while the run goes on.
//
// A pacer ticks every 5 ms and issues a ticket for every call due by then,
// per method (rate × time since the start, minus what it issued), params
// round-robin within the method's lines. A writer waits for room on its
// connection, takes a ticket and every further ticket there is room for, and
// writes them in one burst. A call's latency runs from the tick that issued
// it, so time spent waiting for room (the server fell behind) counts
// against the server, not hidden (no coordinated omission). A ticket the
// queue has no place for is dropped and counted: the server (or this
// generator) could not keep the rate.
//
// Intervals: each reply is also recorded, per method, in the current
// interval; every --interval one "@" event on stderr gives them and starts
// the next:
//
//	@{"event":"interval","end_ns":..,"seconds":..,"in_flight":..,
//	  "methods":{"feed.get":{"calls":..,"errors":..,"dropped":..,"p50":..,"p99":..,"max":..}, ...}}
//
// p50/p99/max are in ms (null with no call in the interval).

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/valyala/fastjson"
)

const (
	paceTick = 5 * time.Millisecond
	// ticketBacklog is how many due calls may wait for room before the pacer drops some.
	ticketBacklog = 1 << 14
)

// mixEntry is one method of a mix: its rate and its params, used round-robin.
type mixEntry struct {
	method string
	rate   float64  // calls/s
	params [][]byte // compact JSON objects
}

// parseMix reads a mix: one JSON object per line, {"method": M, "rate": calls/s,
// "params": [object, ...]}; a method appears once.
func parseMix(text []byte) ([]mixEntry, error) {
	var mix []mixEntry
	seen := map[string]bool{}
	var parser fastjson.Parser
	for number, line := range strings.Split(string(text), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		value, err := parser.Parse(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", number+1, err)
		}
		method := string(value.GetStringBytes("method"))
		rate := value.GetFloat64("rate")
		params := value.GetArray("params")
		switch {
		case method == "":
			return nil, fmt.Errorf("line %d: no method", number+1)
		case seen[method]:
			return nil, fmt.Errorf("line %d: %s given twice", number+1, method)
		case rate <= 0:
			return nil, fmt.Errorf("line %d: rate must be > 0 calls/s", number+1)
		case len(params) == 0:
			return nil, fmt.Errorf("line %d: params must be a non-empty array of objects", number+1)
		}
		seen[method] = true
		entry := mixEntry{method: method, rate: rate}
		for _, object := range params {
			if object.Type() != fastjson.TypeObject {
				return nil, fmt.Errorf("line %d: params holds %s, not an object", number+1, object.Type())
			}
			entry.params = append(entry.params, object.MarshalTo(nil))
		}
		mix = append(mix, entry)
	}
	if len(mix) == 0 {
		return nil, errors.New("no method: the file holds no JSON object")
	}
	return mix, nil
}

// ticket is one call due: its params line and when it was due (unix ns).
type ticket struct {
	line  int32
	dueNs int64
}

// pace issues the tickets of every method of the mix from start until stop.
func (p *plan) pace(start time.Time, stop <-chan struct{}, tickets chan<- ticket) {
	issued := make([]int64, len(p.methods))
	next := make([]int64, len(p.methods))
	ticker := time.NewTicker(paceTick)
	defer ticker.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ticker.C:
		}
		now := time.Now()
		elapsed := now.Sub(start).Seconds()
		for m, method := range p.methods {
			due := int64(method.rate*elapsed) - issued[m]
			for k := int64(0); k < due; k++ {
				line := method.first + int32(next[m]%int64(method.lines))
				next[m]++
				select {
				case tickets <- ticket{line, now.UnixNano()}:
				default:
					method.dropped.Add(1)
				}
			}
			issued[m] += max(due, 0)
		}
	}
}

// writePaced writes the tickets' calls until stop: it waits for room, then for a
// ticket, and takes every further ticket there is room for into the same write.
func (c *caller) writePaced(stop <-chan struct{}, tickets <-chan ticket) error {
	burst := make([]byte, 0, 64<<10)
	for {
		select {
		case <-stop:
			return nil
		case <-c.free:
		}
		var t ticket
		select {
		case <-stop:
			c.free <- struct{}{}
			return nil
		case t = <-tickets:
		}
		burst = c.plan.appendRequest(burst[:0], t.line, c.ledger.open(t.dueNs, t.line))
	more:
		for n := 1; n < c.plan.depth; n++ {
			select {
			case <-c.free:
			default:
				break more
			}
			select {
			case t = <-tickets:
				burst = c.plan.appendRequest(burst, t.line, c.ledger.open(t.dueNs, t.line))
			default:
				c.free <- struct{}{} // never blocks: the room was just taken
				break more
			}
		}
		if err := c.send(burst); err != nil {
			return err
		}
	}
}

// -- intervals ---------------------------------------------------------------------

// intervals is the current interval's figures per method, shared by the readers.
type intervals struct {
	mu      sync.Mutex
	calls   []int64
	errors  []int64
	latency []*hdrhistogram.Histogram // µs
	began   time.Time
}

func newIntervals(methods int) *intervals {
	iv := &intervals{calls: make([]int64, methods), errors: make([]int64, methods), began: time.Now()}
	for m := 0; m < methods; m++ {
		iv.latency = append(iv.latency, newHistogram())
	}
	return iv
}

// record adds one reply of method m.
func (iv *intervals) record(m int32, micros int64, failed bool) {
	iv.mu.Lock()
	iv.calls[m]++
	if failed {
		iv.errors[m]++
	}
	record(iv.latency[m], micros)
	iv.mu.Unlock()
}

type intervalMethod struct {
	Calls   int64    `json:"calls"`
	Errors  int64    `json:"errors"`
	Dropped int64    `json:"dropped"`
	P50     *float64 `json:"p50"`
	P99     *float64 `json:"p99"`
	Max     *float64 `json:"max"`
}

type intervalEvent struct {
	Event    string                    `json:"event"`
	EndNs    int64                     `json:"end_ns"`
	Seconds  float64                   `json:"seconds"`
	InFlight int                       `json:"in_flight"`
	Methods  map[string]intervalMethod `json:"methods"`
}

// cut ends the current interval: its event, and the next interval begins empty.
func (iv *intervals) cut(p *plan, dropped []int64, inFlight int) intervalEvent {
	now := time.Now()
	iv.mu.Lock()
	defer iv.mu.Unlock()
	event := intervalEvent{
		Event: "interval", EndNs: now.UnixNano(), Seconds: round(now.Sub(iv.began).Seconds(), 3),
		InFlight: inFlight, Methods: map[string]intervalMethod{},
	}
	for m, method := range p.methods {
		figures := intervalMethod{Calls: iv.calls[m], Errors: iv.errors[m], Dropped: dropped[m]}
		if summary := latencyOf(iv.latency[m]); summary != nil {
			figures.P50, figures.P99, figures.Max = &summary.P50, &summary.P99, &summary.Max
		}
		event.Methods[method.name] = figures
		iv.calls[m], iv.errors[m] = 0, 0
		iv.latency[m].Reset()
	}
	iv.began = now
	return event
}

// reportIntervals prints an interval event every period until stop.
func reportIntervals(p *plan, callers []*caller, period time.Duration, stop <-chan struct{}, done *sync.WaitGroup) {
	defer done.Done()
	ticker := time.NewTicker(period)
	defer ticker.Stop()
	last := make([]int64, len(p.methods))
	for {
		select {
		case <-stop:
			return
		case <-ticker.C:
		}
		dropped := make([]int64, len(p.methods))
		for m, method := range p.methods {
			total := method.dropped.Load()
			dropped[m], last[m] = total-last[m], total
		}
		inFlight := 0
		for _, c := range callers {
			inFlight += c.ledger.inFlight()
		}
		announce(p.intervals.cut(p, dropped, inFlight))
	}
}

var announceMu sync.Mutex

// announce writes one driver event on stderr: "@" and a JSON object.
func announce(event any) {
	line, _ := json.Marshal(event)
	announceMu.Lock()
	fmt.Fprintf(os.Stderr, "@%s\n", line)
	announceMu.Unlock()
}

// methodInfo is one method of a plan: the params lines that call it.
type methodInfo struct {
	name    string
	first   int32   // its first line
	lines   int     // how many
	rate    float64 // --mix: calls/s; 0 in a closed loop
	dropped atomic.Int64
}

// totalRate is the calls/s of every method of a mix.
func (p *plan) totalRate() float64 {
	total := 0.0
	for _, method := range p.methods {
		total += method.rate
	}
	return total
}
