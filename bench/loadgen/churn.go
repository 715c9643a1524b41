package main

// The churn scenario: subscribers that come and go while comments are
// published, as a soak needs them (bench/soak.py).
//
// K subscribers on C post: channels, subscriber j on channel j % C, connect
// and subscribe; then each connection lives a random lifetime (uniform in
// [½, 1½] × --lifetime), closes (1000), waits a random pause (uniform in
// [0, 2] × --reconnect-delay), reconnects and subscribes with since = the
// offset and epoch of the last publication it received. The server answers
// recovered: true with exactly the publications missed meanwhile, which are
// counted like the live ones (recovered), or recovered: false (counted: the
// history no longer held them). A connection the server ends is reconnected
// the same way at once. The producer publishes comments at --rate events/s
// ({"type":"comment","user":"soak-author-<seq % 100>","post":<channel id>,
// "text":"soak", "run","seq","sent_ns"}, producer.go).
//
// So every subscriber should end with every event of its channel: lost is
// exact (the bitsets of subscribers.go). Offsets are checked as they
// arrive, live or recovered: each must be the last one + 1 (offset_gaps
// counts the jumps; only this run publishes on these channels).
//
// When the producer stops, the churn settles: no connection is closed any
// more, the disconnected reconnect at once, then the run drains and closes
// as fanout does.
//
// Every --interval, one "@" event on stderr:
//
//	{"event":"interval","end_ns","seconds","online",
//	 "deliveries":{"count","p50","p99","max"},       live pubs, sent_ns -> arrival, ms
//	 "publish":{"calls","events","errors","p50","p99","max"},  realtime.publish_many round trips, ms
//	 "subscribe":{"count","failures","p50","p99","max"},       reconnects: dial -> subscribe reply, ms
//	 "recovered","recovery_failures","offset_gaps","server_closes"}

import (
	"context"
	"math/rand"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/gobwas/ws"
	"github.com/valyala/fastjson"
)

// settleTimeout bounds the wait for every subscriber to be back once the producer stopped.
const settleTimeout = 30 * time.Second

type churn struct {
	f        *fleet
	settling atomic.Bool // the producer stopped: no more closes, reconnect at once
	online   atomic.Int64

	// totals, for the interval events (deltas) and the report
	recovered        atomic.Int64
	recoveryFailures atomic.Int64
	offsetGaps       atomic.Int64
	serverCloses     atomic.Int64
	reconnectErrors  atomic.Int64

	mu            sync.Mutex
	reconnects    int64
	subscribeTime *hdrhistogram.Histogram // µs, since the last interval event
	allSubscribe  *hdrhistogram.Histogram // µs, the whole run
	closeCodes    map[int]int
	last          intervalTotals
	began         time.Time
}

type intervalTotals struct{ recovered, failures, gaps, serverCloses, reconnectErrors int64 }

func newChurn(f *fleet) *churn {
	return &churn{
		f: f, subscribeTime: newHistogram(), allSubscribe: newHistogram(), closeCodes: map[int]int{},
		began: time.Now(),
	}
}

// lifetime is one connection's random lifetime; pause, the wait before a reconnect.
func (c *churn) lifetime() time.Duration {
	mean := c.f.cfg.lifetime
	return mean/2 + time.Duration(rand.Int63n(int64(mean)+1))
}

func (c *churn) pause() time.Duration {
	return time.Duration(rand.Int63n(2*int64(c.f.cfg.reconnectDelay) + 1))
}

// subscribed takes a subscribe reply: the channel's epoch and offset, and on a
// resubscribe the publications recovered (or the failure to recover).
func (c *churn) subscribed(s *subscriber, result *fastjson.Value) {
	offset := result.GetInt64("offset")
	if s.epoch != "" {
		if result.GetBool("recovered") {
			for _, publication := range result.GetArray("publications") {
				c.take(s, publication.GetInt64("offset"), publication.Get("data"), true)
			}
			if offset > s.lastOffset { // recovered, yet some publications were not given
				s.offsetGaps++
				c.offsetGaps.Add(1)
			}
		} else {
			s.recoveryFailures++
			c.recoveryFailures.Add(1)
		}
	}
	if offset > s.lastOffset {
		s.lastOffset = offset
	}
	s.epoch = string(result.GetStringBytes("epoch"))
}

// pub takes one live pub of s's channel; its sent_ns and whether it counts.
func (c *churn) pub(s *subscriber, offset int64, data *fastjson.Value) (int64, bool) {
	return c.take(s, offset, data, false)
}

// take checks one publication's offset against the last one and counts its event.
func (c *churn) take(s *subscriber, offset int64, data *fastjson.Value, recovered bool) (int64, bool) {
	switch {
	case offset <= s.lastOffset:
		s.offsetViolations++
	case offset > s.lastOffset+1 && s.lastOffset >= 0:
		s.offsetGaps++
		c.offsetGaps.Add(1)
		s.lastOffset = offset
	default:
		s.lastOffset = offset
	}
	if data == nil {
		s.malformed++
		return 0, false
	}
	sent, ok, fresh := s.count(data)
	if recovered && fresh {
		s.recovered++
		c.recovered.Add(1)
		return sent, false // not a live delivery: no latency
	}
	return sent, ok && fresh
}

// live runs subscriber s from its first subscription to the end of the run:
// read until the connection ends (its lifetime closes it), pause, reconnect
// with since, again.
func (c *churn) live(s *subscriber) {
	f := c.f
	defer f.readers.Done()
	c.online.Add(1)
	// The first connection lives a uniform share of a lifetime and a pause, so
	// that the subscribers, all in at once, reconnect at the steady rate (one
	// per subscriber per lifetime + pause) from the start, not in a wave.
	life := time.Duration(rand.Int63n(int64(c.f.cfg.lifetime+c.f.cfg.reconnectDelay) + 1))
	for {
		s.writing.Lock()
		gen := s.gen
		s.writing.Unlock()
		var timer *time.Timer
		if !c.settling.Load() {
			timer = time.AfterFunc(life, func() { c.leave(s, gen) })
		}
		life = c.lifetime()
		for {
			done, err := f.readFrame(s)
			if done || err != nil {
				break
			}
		}
		if timer != nil {
			timer.Stop()
		}
		s.conn.Close()
		c.online.Add(-1)
		s.writing.Lock()
		left := s.left
		s.writing.Unlock()
		if !left && !f.stopping.Load() { // the server (or the network) ended it
			code := s.closeCode
			if code == 0 {
				code = closeNoFrame
			}
			c.serverCloses.Add(1)
			c.mu.Lock()
			c.closeCodes[code]++
			c.mu.Unlock()
		}
		if f.stopping.Load() {
			s.closed.Store(true)
			return
		}
		if !c.settling.Load() {
			time.Sleep(c.pause())
		}
		if !c.reconnect(s) {
			s.closed.Store(true)
			s.earlyClose = true
			return
		}
		c.online.Add(1)
		if f.stopping.Load() { // the run closed the others meanwhile
			c.leave(s, s.gen)
		}
	}
}

// reconnect dials and subscribes s with since, retrying as connect does; whether it is back.
func (c *churn) reconnect(s *subscriber) bool {
	f := c.f
	for attempt := 0; attempt <= f.cfg.dialRetries; attempt++ {
		if attempt > 0 {
			backoff := (100 * time.Millisecond) << (attempt - 1)
			time.Sleep(backoff/2 + time.Duration(rand.Int63n(int64(backoff))))
		}
		started := time.Now()
		s.writing.Lock() // attempt swaps s.conn: not while a close is being written
		s.gen++
		s.left = false
		err := f.attempt(s)
		s.writing.Unlock()
		c.mu.Lock()
		if err == nil {
			c.reconnects++
			micros := time.Since(started).Microseconds()
			record(c.subscribeTime, micros)
			record(c.allSubscribe, micros)
		}
		c.mu.Unlock()
		if err == nil {
			return true
		}
		c.reconnectErrors.Add(1)
		f.mu.Lock()
		f.errorKinds["reconnect: "+err.Error()]++
		f.mu.Unlock()
	}
	return false
}

// leave closes connection gen of s (1000) unless it already ended; the reader
// sees the server's close frame, or times out.
func (c *churn) leave(s *subscriber, gen int) {
	s.writing.Lock()
	defer s.writing.Unlock()
	if s.gen != gen || s.conn == nil {
		return
	}
	s.left = true
	_ = s.conn.SetWriteDeadline(time.Now().Add(closeTimeout))
	_, _ = s.conn.Write(clientFrame(ws.OpClose, ws.NewCloseFrameBody(closeNormal, "")))
	_ = s.conn.SetReadDeadline(time.Now().Add(closeTimeout))
}

// settle stops the churn and waits until every subscriber is back (or the timeout).
func (c *churn) settle() {
	c.settling.Store(true)
	deadline := time.Now().Add(settleTimeout)
	for c.online.Load() < int64(c.expected()) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

// expected is how many subscribers should be online: those that got in and did not give up.
func (c *churn) expected() int {
	n := 0
	for _, s := range c.f.subs {
		if s.ready.Load() && !s.closed.Load() {
			n++
		}
	}
	return n
}

// closeAll closes every connection at the end of the run and waits for the readers.
func (c *churn) closeAll() {
	c.f.stopping.Store(true)
	for _, s := range c.f.subs {
		if s.ready.Load() {
			c.leave(s, s.genNow())
		}
	}
	c.f.readers.Wait()
}

func (s *subscriber) genNow() int {
	s.writing.Lock()
	defer s.writing.Unlock()
	return s.gen
}

// -- intervals ---------------------------------------------------------------------

type latencyFigures struct {
	Count int64    `json:"count"`
	P50   *float64 `json:"p50"`
	P99   *float64 `json:"p99"`
	Max   *float64 `json:"max"`
}

func figuresOf(h *hdrhistogram.Histogram) latencyFigures {
	figures := latencyFigures{Count: h.TotalCount()}
	if summary := latencyOf(h); summary != nil {
		figures.P50, figures.P99, figures.Max = &summary.P50, &summary.P99, &summary.Max
	}
	return figures
}

type publishFigures struct {
	latencyFigures
	Events int64 `json:"events"`
	Errors int64 `json:"errors"`
}

type subscribeFigures struct {
	latencyFigures
	Failures int64 `json:"failures"`
}

type churnInterval struct {
	Event            string           `json:"event"`
	EndNs            int64            `json:"end_ns"`
	Seconds          float64          `json:"seconds"`
	Online           int64            `json:"online"`
	Deliveries       latencyFigures   `json:"deliveries"`
	Publish          publishFigures   `json:"publish"`
	Subscribe        subscribeFigures `json:"subscribe"`
	Recovered        int64            `json:"recovered"`
	RecoveryFailures int64            `json:"recovery_failures"`
	OffsetGaps       int64            `json:"offset_gaps"`
	ServerCloses     int64            `json:"server_closes"`
}

// cut ends the current interval: its event; the next begins empty.
func (c *churn) cut(p *producer) churnInterval {
	now := time.Now()
	deliveries := newHistogram()
	for i := range c.f.shards {
		sh := &c.f.shards[i]
		sh.Lock()
		deliveries.Merge(sh.interval)
		sh.interval.Reset()
		sh.intervalPubs = 0
		sh.Unlock()
	}
	event := churnInterval{Event: "interval", EndNs: now.UnixNano(), Online: c.online.Load(), Deliveries: figuresOf(deliveries)}
	p.mu.Lock()
	event.Publish = publishFigures{figuresOf(p.callInterval), p.intervalEvents, p.intervalErrors}
	p.callInterval.Reset()
	p.intervalEvents, p.intervalErrors = 0, 0
	p.mu.Unlock()
	totals := intervalTotals{
		c.recovered.Load(), c.recoveryFailures.Load(), c.offsetGaps.Load(), c.serverCloses.Load(), c.reconnectErrors.Load(),
	}
	c.mu.Lock()
	event.Seconds = round(now.Sub(c.began).Seconds(), 3)
	c.began = now
	event.Subscribe = subscribeFigures{figuresOf(c.subscribeTime), totals.reconnectErrors - c.last.reconnectErrors}
	c.subscribeTime.Reset()
	event.Recovered = totals.recovered - c.last.recovered
	event.RecoveryFailures = totals.failures - c.last.failures
	event.OffsetGaps = totals.gaps - c.last.gaps
	event.ServerCloses = totals.serverCloses - c.last.serverCloses
	c.last = totals
	c.mu.Unlock()
	return event
}

// report prints an interval event every --interval until stop.
func (c *churn) report(p *producer, stop <-chan struct{}, done *sync.WaitGroup) {
	defer done.Done()
	ticker := time.NewTicker(c.f.cfg.interval)
	defer ticker.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ticker.C:
			announce(c.cut(p))
		}
	}
}

// churnReport is what the churn did over the whole run.
type churnReport struct {
	Reconnects       int64          `json:"reconnects"`
	ReconnectErrors  int64          `json:"reconnect_errors"`
	SubscribeMs      *latencyReport `json:"subscribe_ms"` // reconnects: dial -> subscribe reply
	Recovered        int64          `json:"recovered"`
	RecoveryFailures int64          `json:"recovery_failures"`
	OffsetGaps       int64          `json:"offset_gaps"`
	ServerCloses     int64          `json:"server_closes"`
	CloseCodes       map[string]int `json:"close_codes"` // of the server's closes
	LifetimeSeconds  float64        `json:"lifetime_s"`
	PauseSeconds     float64        `json:"reconnect_delay_s"`
}

func (c *churn) summary() *churnReport {
	c.mu.Lock()
	defer c.mu.Unlock()
	rep := &churnReport{
		Reconnects: c.reconnects, ReconnectErrors: c.reconnectErrors.Load(), SubscribeMs: latencyOf(c.allSubscribe),
		Recovered: c.recovered.Load(), RecoveryFailures: c.recoveryFailures.Load(), OffsetGaps: c.offsetGaps.Load(),
		ServerCloses: c.serverCloses.Load(), CloseCodes: map[string]int{},
		LifetimeSeconds: c.f.cfg.lifetime.Seconds(), PauseSeconds: c.f.cfg.reconnectDelay.Seconds(),
	}
	for code, n := range c.closeCodes {
		rep.CloseCodes[closeKey(code)] += n
	}
	return rep
}

// runChurn is the churn scenario's run: subscribe everyone, publish through the
// warm-up and the window while the subscribers churn, settle, drain, close, report.
func runChurn(cfg *config) (*report, error) {
	began := cpuNow()
	f := newFleet(cfg)
	prod, err := newProducer(cfg)
	if err != nil {
		return nil, err
	}
	defer prod.close()
	logf("churn: connecting %d subscribers to %s (%d channels), each living ~%s, back after ~%s",
		cfg.subscribers, cfg.wsURL, cfg.channels, cfg.lifetime, cfg.reconnectDelay)
	conn := f.connectAll()
	logf("%d/%d subscribed in %.2f s (%d errors, %d retries)",
		conn.Connected, cfg.subscribers, conn.SubscribeSeconds, conn.Errors, conn.Retries)
	announce(map[string]any{"event": "subscribed", "connected": conn.Connected, "errors": conn.Errors})
	rep := &report{Scenario: cfg.scenario, Run: cfg.run, Settings: settingsOf(cfg), Connect: conn}
	// Pings keep a long-lived connection from the server's idle timeout (60 s); they
	// write under the subscriber's lock, as a reconnect swaps its connection.
	stopPings := f.startPings()
	defer stopPings()

	start := time.Now().Add(cfg.startDelay)
	windowStart := start.Add(cfg.warmup)
	windowEnd := windowStart.Add(cfg.duration)
	f.setWindow(windowStart.UnixNano(), windowEnd.UnixNano())
	prod.setWindow(windowStart.UnixNano(), windowEnd.UnixNano())
	announce(map[string]any{"event": "window", "start_ns": windowStart.UnixNano(), "end_ns": windowEnd.UnixNano()})
	stopReports := make(chan struct{})
	var reporting sync.WaitGroup
	if cfg.interval > 0 {
		f.churn.began = start
		reporting.Add(1)
		go f.churn.report(prod, stopReports, &reporting)
	}
	cpuWindow := make(chan [2]cpuSample, 1)
	go func() {
		sleepUntil(windowStart)
		first := cpuNow()
		sleepUntil(windowEnd)
		cpuWindow <- [2]cpuSample{first, cpuNow()}
	}()
	logf("publishing %d comments/s (%s) from %s: %s warm-up, %s measured",
		cfg.rate, cfg.producer, start.Format("15:04:05.000"), cfg.warmup, cfg.duration)
	produced := prod.run(context.Background(), start, windowEnd)
	window := <-cpuWindow
	close(stopReports)
	reporting.Wait()
	logf("produced %d events (%d errors); settling the churn", produced.Events, produced.Errors)
	f.churn.settle()
	drainStart := time.Now()
	drained := f.drain(f.wanted(&produced), drainStart.Add(cfg.drain))
	drainSeconds := time.Since(drainStart).Seconds()
	f.churn.closeAll()

	rep.Producer = &produced
	rep.Deliveries, rep.Latency, rep.Frames = f.deliveries(&produced, cfg.duration)
	rep.Deliveries.Drained = drained
	rep.Deliveries.DrainSeconds = round(drainSeconds, 3)
	rep.Window = &windowReport{StartNs: windowStart.UnixNano(), EndNs: windowEnd.UnixNano(), Seconds: cfg.duration.Seconds()}
	rep.CPU = cpuReport(began, window[0], window[1], rep.Frames.MessagesInWindow)
	rep.Disconnects, rep.Disconnected = f.disconnects()
	rep.Churn = f.churn.summary()
	return rep, nil
}
