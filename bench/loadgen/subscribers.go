package main

// The subscribers: one goroutine per connection reading frames with a small
// bufio.Reader; payload buffers and JSON parsers come from pools and are
// held only while a frame is processed, so an idle connection costs its
// socket, its goroutine and its 4 KiB reader. Per frame: one parse, the
// bookkeeping of each pub, and one lock of a histogram shard.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/gobwas/ws"
	"github.com/golang-jwt/jwt/v5"
	"github.com/valyala/fastjson"
)

const (
	readBufferBytes = 4096
	maxFrameBytes   = 16 << 20
	histogramShards = 32
	subscribeID     = 1
	pingTick        = 100 * time.Millisecond
	closeTimeout    = time.Second
)

// Close codes the server uses (protocols/ws_session.py, protocols/ws.py).
const (
	closeNoFrame          = 1006 // the connection ended without a close frame
	closeTryAgainLater    = 1013
	closeUnauthenticated  = 4001
	closeTokenExpired     = 4003
	closeSlowConsumer     = 4008
	closeNormal           = 1000
	closeGoingAway        = 1001
	methodNotFound        = -32601
	defaultReadBufferSize = readBufferBytes
)

var (
	parsers     fastjson.ParserPool
	payloadPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}
	pingFrame   = clientFrame(ws.OpText, []byte(`{"jsonrpc":"2.0","method":"ping"}`))
)

// subscriber is one connection. Fields below "reader" are owned by the
// connection's goroutine; unique and closed are read by others.
type subscriber struct {
	index   int
	channel int
	name    []byte // its channel's name
	user    string // its token's subject
	conn    net.Conn
	br      *bufio.Reader
	writing sync.Mutex
	ready   atomic.Bool  // subscribed and reading
	closed  atomic.Bool  // the connection ended
	unique  atomic.Int64 // distinct seqs received

	// reader
	seen             []uint64
	maxSeq           int64
	lastOffset       int64
	duplicated       int64
	outOfOrder       int64
	offsetViolations int64
	offsetGaps       int64 // following
	foreign          int64
	malformed        int64
	fragments        []byte
	subscribeReply   int // 0 waiting, 1 result, -1 error
	subscribeError   string
	closeCode        int
	earlyClose       bool // the server ended it before the run did
	connected        bool
	connectTime      time.Duration
	readyAt          time.Duration
	epoch            string // churn: the channel's epoch, from the last subscribe reply
	recovered        int64  // churn: pubs recovered by a subscribe with since
	recoveryFailures int64  // churn: subscribes with since answered recovered: false
	gen              int    // churn: the connection's number, under writing (churn.go)
	left             bool   // churn: this side closed connection gen, under writing
}

type shard struct {
	sync.Mutex
	latency          *hdrhistogram.Histogram
	interval         *hdrhistogram.Histogram // churn: every live pub's latency since the last interval event
	intervalPubs     int64
	frames           int64
	framesInWindow   int64
	messagesInWindow int64
	measured         int64
}

// fleet is every subscriber of the run.
type fleet struct {
	cfg         *config
	graph       *followGraph // following, else nil
	run         []byte
	subs        []*subscriber
	shards      [histogramShards]shard
	windowStart atomic.Int64 // unix ns; MaxInt64 until the producer's schedule is known
	windowEnd   atomic.Int64
	stopping    atomic.Bool
	readers     sync.WaitGroup
	dialer      ws.Dialer
	reader      func(*subscriber) // runs a subscribed connection: read, or churn's live
	churn       *churn            // churn, else nil

	mu         sync.Mutex
	errorKinds map[string]int
	retryKinds map[string]int
	firstError string
	retries    int
}

func newFleet(cfg *config) *fleet {
	f := &fleet{cfg: cfg, graph: cfg.graph, run: []byte(cfg.run), errorKinds: map[string]int{}, retryKinds: map[string]int{}}
	f.windowStart.Store(math.MaxInt64)
	f.windowEnd.Store(math.MaxInt64)
	for i := range f.shards {
		f.shards[i].latency = newHistogram()
		f.shards[i].interval = newHistogram()
	}
	f.subs = make([]*subscriber, cfg.subscribers)
	for j := range f.subs {
		channel := j % cfg.channels
		f.subs[j] = &subscriber{
			index: j, channel: channel, name: []byte(cfg.channelPrefix + strconv.Itoa(channel)),
			user: cfg.userPrefix + strconv.Itoa(j), maxSeq: -1, lastOffset: -1,
		}
		if f.graph != nil {
			f.subs[j].user = f.graph.users[j]
			f.subs[j].name = []byte(followingPrefix + f.graph.users[j])
		}
	}
	f.dialer = ws.Dialer{Timeout: cfg.dialTimeout, ReadBufferSize: readBufferBytes, WriteBufferSize: 1024}
	f.reader = f.read
	if cfg.scenario == "churn" {
		f.churn = newChurn(f)
		f.reader = f.churn.live
	}
	return f
}

func (f *fleet) setWindow(startNs, endNs int64) {
	f.windowEnd.Store(endNs)
	f.windowStart.Store(startNs)
}

// -- connecting --------------------------------------------------------------------

// errConnect is a failed attempt: kind names it in the report; retry says
// whether another attempt may cure it.
type errConnect struct {
	kind  string
	retry bool
	err   error
}

func (e *errConnect) Error() string { return e.kind + ": " + e.err.Error() }

// connectAll connects and subscribes every subscriber, at most
// cfg.dialConcurrency attempts at once, retrying what a retry may cure
// (refused or reset dials, timeouts, 1013) after a jittered backoff.
func (f *fleet) connectAll() connectReport {
	slots := make(chan struct{}, f.cfg.dialConcurrency)
	var wg sync.WaitGroup
	began := time.Now()
	for _, s := range f.subs {
		wg.Add(1)
		go func(s *subscriber) {
			defer wg.Done()
			f.connect(s, slots, began)
		}(s)
	}
	wg.Wait()
	elapsed := time.Since(began)
	rep := connectReport{Attempted: len(f.subs), ErrorKinds: f.errorKinds, RetryKinds: f.retryKinds, FirstError: f.firstError, Retries: f.retries}
	var perClient, sinceStart []time.Duration
	var last time.Duration
	for _, s := range f.subs {
		if !s.connected {
			rep.Errors++
			continue
		}
		rep.Connected++
		perClient = append(perClient, s.connectTime)
		sinceStart = append(sinceStart, s.readyAt)
		if s.readyAt > last {
			last = s.readyAt
		}
	}
	if rep.Connected == 0 {
		last = elapsed
	}
	rep.SubscribeSeconds = round(last.Seconds(), 3)
	if last > 0 {
		rep.PerSecond = round(float64(rep.Connected)/last.Seconds(), 1)
	}
	rep.PerClientMs = quantilesOf(perClient)
	rep.SinceStartMs = quantilesOf(sinceStart)
	return rep
}

func (f *fleet) connect(s *subscriber, slots chan struct{}, began time.Time) {
	var started time.Time
	for attempt := 0; attempt <= f.cfg.dialRetries; attempt++ {
		if attempt > 0 {
			backoff := (100 * time.Millisecond) << (attempt - 1)
			time.Sleep(backoff/2 + time.Duration(rand.Int63n(int64(backoff))))
		}
		slots <- struct{}{}
		if attempt == 0 {
			started = time.Now()
		}
		err := f.attempt(s)
		<-slots
		if err == nil {
			s.connectTime = time.Since(started)
			s.readyAt = time.Since(began)
			s.connected = true
			s.ready.Store(true)
			f.readers.Add(1)
			go f.reader(s)
			return
		}
		var failure *errConnect
		if !errors.As(err, &failure) {
			failure = &errConnect{"other", false, err}
		}
		f.mu.Lock()
		if failure.retry && attempt < f.cfg.dialRetries {
			f.retries++
			f.retryKinds[failure.kind]++
			f.mu.Unlock()
			continue
		}
		f.errorKinds[failure.kind]++
		if f.firstError == "" {
			f.firstError = fmt.Sprintf("subscriber %d: %v", s.index, failure)
			logf("first connect error: %s", f.firstError)
		}
		f.mu.Unlock()
		return
	}
}

// attempt dials, upgrades and subscribes once; on success s.conn and s.br are set.
func (f *fleet) attempt(s *subscriber) error {
	token, err := f.token(s.user)
	if err != nil {
		return &errConnect{"token", false, err}
	}
	deadline := time.Now().Add(f.cfg.dialTimeout)
	conn, br, _, err := f.dialer.Dial(context.Background(), f.cfg.wsURL+"?token="+token)
	if err != nil {
		var status ws.StatusError
		switch {
		case errors.As(err, &status):
			return &errConnect{"http " + strconv.Itoa(int(status)), int(status) >= 500 || int(status) == 429, err}
		case isTimeout(err):
			return &errConnect{"timeout", true, err}
		default:
			return &errConnect{"dial", true, err}
		}
	}
	if br == nil {
		br = bufio.NewReaderSize(conn, defaultReadBufferSize)
	}
	s.conn, s.br = conn, br
	s.subscribeReply, s.closeCode, s.fragments = 0, 0, nil
	_ = conn.SetDeadline(deadline)
	request := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"subscribe","params":{"channel":%q}}`, subscribeID, s.name)
	if s.epoch != "" { // churn: a resubscribe recovers what it missed
		request = fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"subscribe","params":{"channel":%q,"since":{"offset":%d,"epoch":%q}}}`,
			subscribeID, s.name, s.lastOffset, s.epoch)
	}
	if _, err := conn.Write(clientFrame(ws.OpText, []byte(request))); err != nil {
		conn.Close()
		return &errConnect{"subscribe write", true, err}
	}
	for s.subscribeReply == 0 {
		done, err := f.readFrame(s)
		if err != nil || done {
			conn.Close()
			switch {
			case s.closeCode == closeTryAgainLater:
				return &errConnect{"close 1013", true, errors.New("too many connections")}
			case s.closeCode != 0:
				return &errConnect{"close " + strconv.Itoa(s.closeCode), false, fmt.Errorf("closed %d before the subscribe reply", s.closeCode)}
			case isTimeout(err):
				return &errConnect{"timeout", true, err}
			default:
				return &errConnect{"subscribe read", true, err}
			}
		}
	}
	if s.subscribeReply < 0 {
		conn.Close()
		return &errConnect{"subscribe refused", false, errors.New(s.subscribeError)}
	}
	_ = conn.SetDeadline(time.Time{})
	return nil
}

// token signs user's HS256 JWT: {"sub", "iat", "exp"}, and "role" unless
// --token-role is user (auth/tokens.py issue_token).
func (f *fleet) token(user string) (string, error) {
	now := time.Now().Unix()
	claims := jwt.MapClaims{
		"sub": user,
		"iat": now,
		"exp": now + int64(f.cfg.tokenTTL/time.Second),
	}
	if f.cfg.tokenRole != "user" {
		claims["role"] = f.cfg.tokenRole
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(f.cfg.secret)
}

func isTimeout(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) && netErr.Timeout()
}

// clientFrame is one masked frame (RFC 6455 section 5.3: a client masks
// every frame), header and payload in one slice for one write.
func clientFrame(op ws.OpCode, payload []byte) []byte {
	frame, err := ws.CompileFrame(ws.MaskFrame(ws.NewFrame(op, true, payload)))
	if err != nil {
		panic(err) // only for control frames over 125 bytes, which we never send
	}
	return frame
}

// write sends one compiled frame under the connection's write lock.
func (s *subscriber) write(frame []byte, timeout time.Duration) error {
	s.writing.Lock()
	defer s.writing.Unlock()
	_ = s.conn.SetWriteDeadline(time.Now().Add(timeout))
	_, err := s.conn.Write(frame)
	return err
}

// -- reading -----------------------------------------------------------------------

func (f *fleet) read(s *subscriber) {
	defer f.readers.Done()
	for {
		done, err := f.readFrame(s)
		if done || err != nil {
			break
		}
	}
	s.earlyClose = !f.stopping.Load()
	s.closed.Store(true)
	s.conn.Close()
}

// readFrame reads and handles one frame; done when the server closed.
func (f *fleet) readFrame(s *subscriber) (done bool, err error) {
	h, err := ws.ReadHeader(s.br)
	if err != nil {
		return false, err
	}
	if h.Length > maxFrameBytes || h.Length < 0 {
		return false, fmt.Errorf("frame of %d bytes", h.Length)
	}
	holder := payloadPool.Get().(*[]byte)
	defer payloadPool.Put(holder)
	if cap(*holder) < int(h.Length) {
		*holder = make([]byte, h.Length)
	}
	payload := (*holder)[:h.Length]
	if _, err := io.ReadFull(s.br, payload); err != nil {
		return false, err
	}
	if h.Masked {
		ws.Cipher(payload, h.Mask, 0)
	}
	switch h.OpCode {
	case ws.OpText, ws.OpBinary:
		if !h.Fin {
			s.fragments = append(s.fragments[:0], payload...)
			return false, nil
		}
		f.handle(s, payload)
	case ws.OpContinuation:
		s.fragments = append(s.fragments, payload...)
		if h.Fin {
			f.handle(s, s.fragments)
			s.fragments = nil
		}
	case ws.OpPing:
		return false, s.write(clientFrame(ws.OpPong, payload), closeTimeout)
	case ws.OpClose:
		code, _ := ws.ParseCloseFrameData(payload)
		s.closeCode = int(code)
		if code == 0 {
			s.closeCode = 1005 // no status code (RFC 6455 section 7.1.5)
		}
		_ = s.write(clientFrame(ws.OpClose, ws.NewCloseFrameBody(code, "")), closeTimeout)
		return true, nil
	}
	return false, nil
}

// handle processes one text message: a pub, a reply, or an array of them.
func (f *fleet) handle(s *subscriber, message []byte) {
	now := time.Now().UnixNano()
	parser := parsers.Get()
	defer parsers.Put(parser)
	value, err := parser.ParseBytes(message)
	if err != nil {
		s.malformed++
		return
	}
	windowStart, windowEnd := f.windowStart.Load(), f.windowEnd.Load()
	inWindow := windowStart <= now && now < windowEnd
	var latencies, lives [64]int64
	measured, live := latencies[:0], lives[:0]
	var pubs int64
	items := []*fastjson.Value{value}
	if value.Type() == fastjson.TypeArray {
		items, _ = value.Array()
	}
	for _, item := range items {
		sent, ok := f.pub(s, item)
		if !ok {
			continue
		}
		pubs++
		if windowStart <= sent && sent < windowEnd {
			measured = append(measured, (now-sent)/1000)
		}
		if f.churn != nil {
			live = append(live, (now-sent)/1000)
		}
	}
	sh := &f.shards[s.index%histogramShards]
	sh.Lock()
	sh.frames++
	if inWindow {
		sh.framesInWindow++
		sh.messagesInWindow += pubs
	}
	sh.measured += int64(len(measured))
	for _, micros := range measured {
		record(sh.latency, micros)
	}
	if f.churn != nil {
		sh.intervalPubs += int64(len(live))
		for _, micros := range live {
			record(sh.interval, micros)
		}
	}
	sh.Unlock()
}

// pub checks one message; for a pub of this run, its sent_ns and true.
func (f *fleet) pub(s *subscriber, item *fastjson.Value) (sentNs int64, ok bool) {
	if !bytes.Equal(item.GetStringBytes("method"), []byte("pub")) {
		if item.Exists("id") && item.GetInt("id") == subscribeID && s.subscribeReply == 0 {
			if item.Exists("result") {
				s.subscribeReply = 1
				if f.graph != nil {
					// following: offsets go on consecutively from the channel's offset now.
					s.lastOffset = item.GetInt64("result", "offset")
				}
				if f.churn != nil {
					f.churn.subscribed(s, item.Get("result"))
				}
			} else {
				s.subscribeReply = -1
				s.subscribeError = string(item.MarshalTo(nil))
			}
		}
		return 0, false
	}
	params := item.Get("params")
	data := params.Get("data")
	if data == nil || !params.Exists("offset") {
		s.malformed++
		return 0, false
	}
	if f.graph != nil {
		return f.followingPub(s, params, data)
	}
	if !bytes.Equal(data.GetStringBytes("run"), f.run) || !bytes.Equal(params.GetStringBytes("channel"), s.name) {
		s.foreign++
		return 0, false
	}
	if f.churn != nil {
		return f.churn.pub(s, params.GetInt64("offset"), data)
	}
	sent, ok, fresh := s.count(data)
	if !fresh {
		return sent, ok
	}
	if offset := params.GetInt64("offset"); offset <= s.lastOffset {
		s.offsetViolations++
	} else {
		s.lastOffset = offset
	}
	return sent, true
}

// count checks one of this run's events by its seq: malformed (not ok),
// duplicated (ok, not fresh), or new (fresh: counted in unique, out of order if
// its seq is below the highest seen); sentNs is its producer's timestamp.
func (s *subscriber) count(data *fastjson.Value) (sentNs int64, ok, fresh bool) {
	seq, sent := data.GetInt64("seq"), data.GetInt64("sent_ns")
	if seq < 0 || !data.Exists("seq") || !data.Exists("sent_ns") {
		s.malformed++
		return 0, false, false
	}
	if setBit(&s.seen, seq) {
		s.duplicated++
		return sent, true, false
	}
	s.unique.Add(1)
	if seq < s.maxSeq {
		s.outOfOrder++
	} else {
		s.maxSeq = seq
	}
	return sent, true, true
}

// followingPub checks one pub on a following:<user> channel: the offsets
// of every pub on it must be consecutive (another run's pubs take offsets
// too), then this run's activities are counted as pub counts a fanout one.
func (f *fleet) followingPub(s *subscriber, params, data *fastjson.Value) (sentNs int64, ok bool) {
	if !bytes.Equal(params.GetStringBytes("channel"), s.name) {
		s.foreign++
		return 0, false
	}
	switch offset := params.GetInt64("offset"); {
	case offset <= s.lastOffset:
		s.offsetViolations++
	case offset > s.lastOffset+1:
		s.offsetGaps++
		s.lastOffset = offset
	default:
		s.lastOffset = offset
	}
	if !bytes.Equal(data.GetStringBytes("run"), f.run) {
		s.foreign++
		return 0, false
	}
	sent, ok, _ := s.count(data)
	return sent, ok
}

// -- keepalive, drain, close -------------------------------------------------------

// startPings sends each ready connection a JSON-RPC ping every cfg.pingEvery,
// spread evenly: every 100 ms the next share of the connections.
func (f *fleet) startPings() (stop func()) {
	done := make(chan struct{})
	go func() {
		ticker := time.NewTicker(pingTick)
		defer ticker.Stop()
		// Each tick pings this many connections, the fraction carried to the next tick.
		share := float64(len(f.subs)) * float64(pingTick) / float64(f.cfg.pingEvery)
		credit, next := 0.0, 0
		for {
			select {
			case <-done:
				return
			case <-ticker.C:
			}
			credit += share
			count := int(credit)
			credit -= float64(count)
			for k := 0; k < count; k++ {
				s := f.subs[next]
				next = (next + 1) % len(f.subs)
				if s.ready.Load() && !s.closed.Load() && !f.stopping.Load() {
					_ = s.write(pingFrame, closeTimeout)
				}
			}
		}
	}()
	return func() { close(done) }
}

// wanted is, per subscriber, the distinct events it should receive: its
// channel's accepted events (following: its followees' accepted activities).
func (f *fleet) wanted(produced *producerReport) []int64 {
	if f.graph != nil {
		return f.graph.wanted(produced.perAuthor)
	}
	perChannel := make([]int64, len(produced.accepted))
	for i, set := range produced.accepted {
		perChannel[i], _ = missing(set, nil)
	}
	want := make([]int64, len(f.subs))
	for j, s := range f.subs {
		want[j] = perChannel[s.channel]
	}
	return want
}

// drain waits until every open subscriber has as many distinct events as
// it wants (fleet.wanted), or the deadline; whether all arrived.
func (f *fleet) drain(want []int64, deadline time.Time) bool {
	for {
		complete := true
		for j, s := range f.subs {
			if s.ready.Load() && !s.closed.Load() && s.unique.Load() < want[j] {
				complete = false
				break
			}
		}
		if complete {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// closeAll closes every connection (close 1000) and waits for the readers.
func (f *fleet) closeAll() {
	f.stopping.Store(true)
	bye := clientFrame(ws.OpClose, ws.NewCloseFrameBody(closeNormal, ""))
	for _, s := range f.subs {
		if s.ready.Load() && !s.closed.Load() {
			_ = s.write(bye, closeTimeout)
		}
	}
	// The server answers with its close frame; the readers see it or time out.
	deadline := time.Now().Add(closeTimeout)
	for _, s := range f.subs {
		if s.ready.Load() {
			_ = s.conn.SetReadDeadline(deadline)
		}
	}
	f.readers.Wait()
}

// disconnects counts the connections the server ended before the run did,
// by close code (1006: no close frame).
func (f *fleet) disconnects() (map[string]int, int) {
	codes := map[string]int{}
	total := 0
	for _, s := range f.subs {
		if !s.ready.Load() || !s.earlyClose {
			continue
		}
		code := s.closeCode
		if code == 0 {
			code = closeNoFrame
		}
		codes[closeKey(code)]++
		total++
	}
	return codes, total
}

// deliveries sums the subscribers' receipts against the producer's accepted seqs.
func (f *fleet) deliveries(produced *producerReport, duration time.Duration) (*deliveriesReport, *latencyReport, *framesReport) {
	d := &deliveriesReport{}
	var followingLost []int64
	var want []int64
	if f.graph != nil {
		seen, subscribed := make([][]uint64, len(f.subs)), make([]bool, len(f.subs))
		for j, s := range f.subs {
			seen[j], subscribed[j] = s.seen, s.ready.Load()
		}
		followingLost, d.LostPairs = f.graph.lostPer(produced.all, produced.authorOf, seen, subscribed)
		want = f.wanted(produced)
	}
	for j, s := range f.subs {
		if !s.ready.Load() {
			continue
		}
		if f.graph != nil {
			// What it received beyond what it wanted and got is unexpected.
			d.Expected += want[j]
			d.Lost += followingLost[j]
			if followingLost[j] > 0 {
				d.LosingSubscribers++
				if followingLost[j] == want[j] {
					d.SilentSubscribers++
				}
			}
			d.Unexpected += s.unique.Load() - (want[j] - followingLost[j])
		} else {
			accepted := produced.accepted[s.channel]
			lost, extra := missing(accepted, s.seen)
			wanted, _ := missing(accepted, nil)
			d.Expected += wanted
			d.Lost += lost
			d.Unexpected += extra
		}
		d.Received += s.unique.Load()
		d.Duplicated += s.duplicated
		d.OutOfOrder += s.outOfOrder
		d.OffsetViolations += s.offsetViolations
		d.OffsetGaps += s.offsetGaps
		d.Foreign += s.foreign
		d.Malformed += s.malformed
	}
	latency := newHistogram()
	frames := &framesReport{}
	for i := range f.shards {
		sh := &f.shards[i]
		sh.Lock()
		latency.Merge(sh.latency)
		frames.Total += sh.frames
		frames.InWindow += sh.framesInWindow
		frames.MessagesInWindow += sh.messagesInWindow
		d.InWindow += sh.measured
		sh.Unlock()
	}
	seconds := duration.Seconds()
	d.PerSecond = round(float64(d.InWindow)/seconds, 1)
	frames.PerSecond = round(float64(frames.InWindow)/seconds, 1)
	if frames.InWindow > 0 {
		frames.MessagesPerFrame = round(float64(frames.MessagesInWindow)/float64(frames.InWindow), 2)
	}
	return d, latencyOf(latency), frames
}
