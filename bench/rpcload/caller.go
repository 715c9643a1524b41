package main

// The callers: one per connection, a writer and a reader around a ledger of
// the calls in flight. Per burst of requests: one clock read, one lock of the
// ledger per call, one write. Per reply frame: one clock read, one parse, one
// lock of the ledger per reply. The reader owns its tally and histogram, merged
// after the run, so no lock is shared between connections.

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/gobwas/ws"
	"github.com/valyala/fastjson"
)

const (
	readBufferBytes = 64 << 10
	maxFrameBytes   = 16 << 20
	closeTimeout    = time.Second
	// maxDistinctResults bounds what --record-results keeps per params line.
	maxDistinctResults = 8
)

// plan is what every caller of a run shares: the requests, the depth, the window.
type plan struct {
	params    [][]byte // compact JSON objects
	requests  [][]byte // per params line: the request up to its id, `{"jsonrpc":"2.0","method":M,"params":P,"id":`
	methods   []*methodInfo
	methodOf  []int32 // per params line: its method's index in methods
	depth     int
	record    bool
	next      atomic.Uint64 // the next params line, round-robin over every connection
	window    window
	stopping  atomic.Bool // the run is closing the connections
	intervals *intervals  // --interval, else nil
	mix       bool        // --mix: each method at its rate (mix.go), else a closed loop
}

func newPlan(method string, params [][]byte, depth int, record bool) *plan {
	return newMixPlan([]mixEntry{{method: method, params: params}}, depth, record)
}

// newMixPlan is the plan of the methods of mix, their lines one method after the
// other; it paces them (plan.mix) if they have rates.
func newMixPlan(mix []mixEntry, depth int, record bool) *plan {
	p := &plan{depth: depth, record: record, mix: mix[0].rate > 0}
	for m, entry := range mix {
		name, _ := json.Marshal(entry.method)
		p.methods = append(p.methods, &methodInfo{
			name: entry.method, first: int32(len(p.params)), lines: len(entry.params), rate: entry.rate,
		})
		for _, object := range entry.params {
			request := append([]byte(`{"jsonrpc":"2.0","method":`), name...)
			request = append(request, `,"params":`...)
			request = append(request, object...)
			p.requests = append(p.requests, append(request, `,"id":`...))
			p.params = append(p.params, object)
			p.methodOf = append(p.methodOf, int32(m))
		}
	}
	p.window.set(math.MaxInt64, math.MaxInt64)
	return p
}

// nextLine is the params line of the next call.
func (p *plan) nextLine() int32 {
	return int32((p.next.Add(1) - 1) % uint64(len(p.requests)))
}

// appendRequest appends call id's request frame for params line (masked: a client masks every frame).
func (p *plan) appendRequest(b []byte, line int32, id int64) []byte {
	var digits [20]byte
	number := strconv.AppendInt(digits[:0], id, 10)
	body := p.requests[line]
	mask := ws.NewMask()
	b = appendTextHeader(b, len(body)+len(number)+1, mask)
	start := len(b)
	b = append(append(append(b, body...), number...), '}')
	ws.Cipher(b[start:], mask, 0)
	return b
}

// appendTextHeader appends a masked client text frame's header (RFC 6455 section
// 5.2: FIN and opcode 1; MASK and the payload length in 7, 7+16 or 7+64 bits; the mask).
func appendTextHeader(b []byte, length int, mask [4]byte) []byte {
	b = append(b, 0x80|byte(ws.OpText))
	switch {
	case length < 126:
		b = append(b, 0x80|byte(length))
	case length <= math.MaxUint16:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(length))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(length))
	}
	return append(b, mask[:]...)
}

// clientFrame is one masked frame, header and payload in one slice (control frames).
func clientFrame(op ws.OpCode, payload []byte) []byte {
	frame, err := ws.CompileFrame(ws.MaskFrame(ws.NewFrame(op, true, payload)))
	if err != nil {
		panic(err) // only for control frames over 125 bytes, which we never send
	}
	return frame
}

// window is the measured interval, unix ns; it contains nothing until set.
type window struct{ start, end atomic.Int64 }

func (w *window) set(startNs, endNs int64) {
	w.end.Store(endNs)
	w.start.Store(startNs)
}

func (w *window) contains(ns int64) bool {
	return w.start.Load() <= ns && ns < w.end.Load()
}

// -- the ledger: calls in flight -------------------------------------------------

// call is a request written and not yet answered.
type call struct {
	sentNs int64 // unix ns, just before the write of its burst (--mix: when it was due)
	line   int32 // its params line
}

// ledger is one connection's calls in flight, by id; ids are 1, 2, 3 ... per connection.
type ledger struct {
	mu      sync.Mutex
	sent    int64
	pending map[int64]call
}

// open records a call about to be written; its id.
func (l *ledger) open(sentNs int64, line int32) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pending == nil {
		l.pending = map[int64]call{}
	}
	l.sent++
	l.pending[l.sent] = call{sentNs, line}
	return l.sent
}

// settle takes call id out of the ledger; false if it is not in flight (unknown or answered).
func (l *ledger) settle(id int64) (call, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.pending[id]
	if ok {
		delete(l.pending, id)
	}
	return c, ok
}

func (l *ledger) inFlight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.pending)
}

// inFlightLines is the params line of every call in flight.
func (l *ledger) inFlightLines() []int32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	lines := make([]int32, 0, len(l.pending))
	for _, c := range l.pending {
		lines = append(lines, c.line)
	}
	return lines
}

func (l *ledger) counts() (sent, inFlight int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sent, int64(len(l.pending))
}

// -- the tally: what came back ---------------------------------------------------

// tally is what one connection's reader counted; owned by the reader until it ends.
type tally struct {
	replies       int64           // replies matched by id to a call in flight
	ok            int64           // ... with a result
	errors        map[int64]int64 // ... with an error: error.code -> replies
	unmatched     int64           // replies whose id is no call in flight (unknown, answered, null)
	malformed     int64           // frames that are not JSON; replies with neither result nor error
	notifications int64           // messages without an id (server pushes)
	completed     int64           // matched replies that arrived inside the window
	windowOK      int64
	windowErrors  map[int64]int64
	latency       *hdrhistogram.Histogram // µs, of the replies inside the window
	results       []resultSet             // per params line (--record-results)
	firstError    string                  // the first error reply or unmatched reply, as received
	perMethod     []methodTally           // per method of the plan, inside the window
}

// methodTally is what one method's replies inside the window came to.
type methodTally struct {
	completed int64
	ok        int64
	errors    map[int64]int64
	latency   *hdrhistogram.Histogram // µs
}

// resultSet is the distinct results of one params line, with how many calls gave each.
type resultSet struct {
	distinct map[string]int64
	more     int64 // results beyond maxDistinctResults distinct ones
}

func newTally(p *plan) tally {
	t := tally{errors: map[int64]int64{}, windowErrors: map[int64]int64{}, latency: newHistogram()}
	if p.record {
		t.results = make([]resultSet, len(p.params))
	}
	for range p.methods {
		t.perMethod = append(t.perMethod, methodTally{errors: map[int64]int64{}, latency: newHistogram()})
	}
	return t
}

// -- the caller: one connection ----------------------------------------------------

type caller struct {
	index   int
	conn    net.Conn
	br      *bufio.Reader
	plan    *plan
	free    chan struct{} // one token per call that may be written (depth in all)
	writing sync.Mutex    // the writer's bursts and the reader's control frames
	ledger  ledger
	closed  atomic.Bool // the reader ended

	// reader
	parser     fastjson.Parser
	tally      tally
	closeCode  int  // the server's close code, 1005 for none given
	earlyClose bool // the connection ended before the run closed it
}

func newCaller(index int, conn net.Conn, br *bufio.Reader, p *plan) *caller {
	if br == nil {
		br = bufio.NewReaderSize(conn, readBufferBytes)
	}
	c := &caller{index: index, conn: conn, br: br, plan: p, free: make(chan struct{}, p.depth), tally: newTally(p)}
	for i := 0; i < p.depth; i++ {
		c.free <- struct{}{}
	}
	return c
}

// send writes one whole frame under the write lock.
func (c *caller) send(frame []byte) error {
	c.writing.Lock()
	defer c.writing.Unlock()
	_, err := c.conn.Write(frame)
	return err
}

// write keeps depth calls in flight until stop: it waits for room, takes all
// the room there is, and writes that burst of requests in one write.
func (c *caller) write(stop <-chan struct{}) error {
	burst := make([]byte, 0, 64<<10)
	for {
		select {
		case <-stop:
			return nil
		case <-c.free:
		}
		n := 1
	more:
		for n < c.plan.depth {
			select {
			case <-c.free:
				n++
			default:
				break more
			}
		}
		burst = burst[:0]
		now := time.Now().UnixNano()
		for i := 0; i < n; i++ {
			line := c.plan.nextLine()
			burst = c.plan.appendRequest(burst, line, c.ledger.open(now, line))
		}
		if err := c.send(burst); err != nil {
			return err
		}
	}
}

// read handles the server's frames until it closes or the connection ends.
func (c *caller) read() {
	var payload, fragments []byte
	for {
		h, err := ws.ReadHeader(c.br)
		if err != nil || h.Length < 0 || h.Length > maxFrameBytes {
			break
		}
		if int64(cap(payload)) < h.Length {
			payload = make([]byte, h.Length)
		}
		payload = payload[:h.Length]
		if _, err := io.ReadFull(c.br, payload); err != nil {
			break
		}
		if h.Masked {
			ws.Cipher(payload, h.Mask, 0)
		}
		switch h.OpCode {
		case ws.OpText, ws.OpBinary:
			if !h.Fin {
				fragments = append(fragments[:0], payload...)
				continue
			}
			c.handle(payload, time.Now().UnixNano())
		case ws.OpContinuation:
			fragments = append(fragments, payload...)
			if h.Fin {
				c.handle(fragments, time.Now().UnixNano())
				fragments = fragments[:0]
			}
		case ws.OpPing:
			_ = c.send(clientFrame(ws.OpPong, payload))
		case ws.OpClose:
			code, _ := ws.ParseCloseFrameData(payload)
			c.closeCode = int(code)
			if code == 0 {
				c.closeCode = 1005 // no status code (RFC 6455 section 7.1.5)
			}
			_ = c.send(clientFrame(ws.OpClose, ws.NewCloseFrameBody(code, "")))
		}
		if h.OpCode == ws.OpClose {
			break
		}
	}
	c.earlyClose = !c.plan.stopping.Load()
	if c.earlyClose {
		logf("connection %d ended by the server (close code %d; 0: no close frame)", c.index, c.closeCode)
	}
	c.closed.Store(true)
	c.conn.Close()
}

// handle counts one text message: a reply, or a batch (a JSON array) of them.
func (c *caller) handle(message []byte, nowNs int64) {
	value, err := c.parser.ParseBytes(message)
	if err != nil {
		c.tally.malformed++
		return
	}
	if value.Type() != fastjson.TypeArray {
		c.reply(value, nowNs)
		return
	}
	items, _ := value.Array()
	for _, item := range items {
		c.reply(item, nowNs)
	}
}

// reply settles the call a reply answers and counts it; the call's room goes back to the writer.
func (c *caller) reply(item *fastjson.Value, nowNs int64) {
	t := &c.tally
	id := item.Get("id")
	if id == nil {
		t.notifications++
		return
	}
	number, err := id.Int64()
	var sent call
	matched := err == nil
	if matched {
		sent, matched = c.ledger.settle(number)
	}
	if !matched {
		t.unmatched++
		c.noteError(item)
		return
	}
	c.free <- struct{}{} // never blocks: only a settled call gives its room back
	t.replies++
	inWindow := c.plan.window.contains(nowNs)
	m := c.plan.methodOf[sent.line]
	per := &t.perMethod[m]
	micros := (nowNs - sent.sentNs) / 1000
	failure := item.Get("error")
	if failure != nil {
		code := failure.GetInt64("code")
		t.errors[code]++
		if inWindow {
			t.windowErrors[code]++
			per.errors[code]++
		}
		c.noteError(item)
	} else if result := item.Get("result"); result != nil {
		t.ok++
		if inWindow {
			t.windowOK++
			per.ok++
		}
		if t.results != nil {
			t.results[sent.line].add(string(result.MarshalTo(nil)), 1)
		}
	} else {
		t.malformed++
	}
	if inWindow {
		t.completed++
		record(t.latency, micros)
		per.completed++
		record(per.latency, micros)
	}
	if c.plan.intervals != nil {
		c.plan.intervals.record(m, micros, failure != nil)
	}
}

func (c *caller) noteError(item *fastjson.Value) {
	if c.tally.firstError == "" {
		c.tally.firstError = fmt.Sprintf("connection %d: %s", c.index, item.MarshalTo(nil))
	}
}

// add counts calls answered with result (compact JSON); beyond maxDistinctResults
// distinct values, only how many calls gave another one.
func (r *resultSet) add(result string, calls int64) {
	if r.distinct == nil {
		r.distinct = map[string]int64{}
	}
	if _, seen := r.distinct[result]; seen || len(r.distinct) < maxDistinctResults {
		r.distinct[result] += calls
	} else {
		r.more += calls
	}
}

// merge adds another connection's results of the same line.
func (r *resultSet) merge(other *resultSet) {
	for result, calls := range other.distinct {
		r.add(result, calls)
	}
	r.more += other.more
}
