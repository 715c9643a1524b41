package main

// The producer: a tick every 5 ms sends the events due so far, channels
// round-robin, data = {"run", "seq", "sent_ns"} (seq counts per channel from
// 0; sent_ns is stamped when the request carrying it is written).
//
// redis: one FCALL starling_publish per tick (the server's Redis Function:
// each event numbered as it enters the stream; --redis-append fcall, the
// default), or one XADD pipeline per tick (--redis-append xadd: the
// transformers number them), in order, on one connection, so each channel's
// seqs enter the stream in order.
//
// http: --http-inflight workers, channel c belonging to worker c % n; a
// worker sends its events one request at a time, so a channel's events are
// never in two requests at once; what a worker has not sent by the end is
// dropped (counted as unsent), as the redis producer's late ticks are. A JSON-RPC batch runs its calls
// concurrently on the server, so a batch of realtime.publish carries at
// most one event per channel (several batches follow each other when a
// worker is behind); realtime.publish_many carries up to 1,000 in order.
//
// redis on a Redis Cluster (--redis-url redis+cluster://h:p,h:p): the stream
// is split into partitions (stores/partitions.py); --stream-keys,
// --offsets-keys and --generation-keys name each partition's keys (the
// driver computes them, so the hash tags are chosen in one place), and a
// channel's events go to partition crc32(name) % len(keys), the server's
// rule. A tick is one pipeline of one FCALL per partition (or of XADDs),
// which the cluster client splits by master; a channel's events stay in one
// partition, in order.
//
// following (following.go): the events are activities, seq numbering them
// across authors and posts, and the producer is one ordered sequence so
// that every following:<f> channel should see them in seq order: redis as
// above, http with one worker (--http-inflight 1 unless set) and, in a
// batch of realtime.publish (whose calls run concurrently), one activity
// per request.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/redis/go-redis/v9"
)

const (
	tickInterval  = 5 * time.Millisecond
	maxTickEvents = 5_000 // most events one tick sends when catching up
	maxBatch      = 1_000 // protocols.jsonrpc.MAX_BATCH
	workerBacklog = 1_024 // ticks a http worker may fall behind before the producer waits
	httpTimeout   = 60 * time.Second
)

type event struct {
	channel int
	seq     int64
	dueNs   int64 // the tick it was due at
	author  int32 // following: the author's index in the follow graph
}

type producer struct {
	cfg         *config
	names       [][]byte
	windowStart int64
	windowEnd   int64
	redis       redis.UniversalClient // *redis.Client, or *redis.ClusterClient on a cluster
	partitionOf []int                 // cluster: each channel's partition (index into cfg.streamKeys)
	http        *http.Client
	workers     []chan []event
	fellBack    atomic.Bool
	graph       *followGraph // following, else nil
	draws       *rand.Rand   // following: the authors' draw
	authorOf    []int32      // following: the author of each seq (written by run's loop)

	mu         sync.Mutex
	accepted   [][]uint64 // per channel, its seqs (following: unused)
	all        []uint64   // following: the seqs accepted
	perAuthor  []int64    // following: activities accepted per author
	counts     []int64
	inWindow   int64
	errors     int64
	unsent     int64
	firstError string
	requests   int64
	lag        *hdrhistogram.Histogram // µs

	// round trips of the requests (µs): of those sent in the window, and since
	// the last churn interval event (churn.go), with the events and errors since
	callWindow     *hdrhistogram.Histogram
	callInterval   *hdrhistogram.Histogram
	intervalEvents int64
	intervalErrors int64
	comments       [][]byte // churn: per channel, `{"type":"comment","post":"<id>","text":"soak",`
}

func newProducer(cfg *config) (*producer, error) {
	p := &producer{
		cfg: cfg, names: make([][]byte, cfg.channels), accepted: make([][]uint64, cfg.channels),
		counts: make([]int64, cfg.channels), lag: newHistogram(),
		callWindow: newHistogram(), callInterval: newHistogram(),
	}
	for i := range p.names {
		p.names[i] = []byte(cfg.channelPrefix + strconv.Itoa(i))
		if cfg.scenario == "churn" {
			post := jsonString(strings.TrimPrefix(string(p.names[i]), "post:"))
			p.comments = append(p.comments, []byte(`{"type":"comment","post":`+string(post)+`,"text":"soak",`))
		}
	}
	if g := cfg.graph; g != nil {
		p.graph, p.draws, p.perAuthor = g, rand.New(rand.NewSource(cfg.seed)), make([]int64, len(g.authors))
		for i, post := range g.posts {
			p.names[i] = []byte("post:" + post)
		}
	}
	switch cfg.producer {
	case "redis":
		if cfg.redisCluster {
			options, err := parseClusterURL(cfg.redisURL)
			if err != nil {
				return nil, fmt.Errorf("--redis-url: %w", err)
			}
			options.PoolSize = 2 // per master
			p.redis = redis.NewClusterClient(options)
			p.partitionOf = make([]int, len(p.names))
			for i, name := range p.names {
				p.partitionOf[i] = partitionOf(name, len(cfg.streamKeys))
			}
		} else {
			options, err := redis.ParseURL(cfg.redisURL)
			if err != nil {
				return nil, fmt.Errorf("--redis-url: %w", err)
			}
			options.PoolSize = 2
			p.redis = redis.NewClient(options)
		}
		if err := p.redis.Ping(context.Background()).Err(); err != nil {
			return nil, fmt.Errorf("redis at %s: %w", cfg.redisURL, err)
		}
	case "http":
		transport := &http.Transport{
			MaxIdleConns: cfg.httpInflight, MaxIdleConnsPerHost: cfg.httpInflight,
			DisableCompression: true, IdleConnTimeout: time.Minute,
		}
		p.http = &http.Client{Transport: transport, Timeout: httpTimeout}
	}
	return p, nil
}

func (p *producer) close() {
	if p.redis != nil {
		p.redis.Close()
	}
	if p.http != nil {
		p.http.CloseIdleConnections()
	}
}

func (p *producer) setWindow(startNs, endNs int64) { p.windowStart, p.windowEnd = startNs, endNs }

func (p *producer) mode() string {
	switch {
	case p.cfg.producer == "redis":
		return "redis"
	case p.cfg.publishMany && !p.fellBack.Load():
		return "http-publish-many"
	default:
		return "http-batch"
	}
}

// run sends cfg.rate events/s from start until end; what was accepted.
func (p *producer) run(ctx context.Context, start, end time.Time) producerReport {
	var wg sync.WaitGroup
	if p.http != nil {
		p.workers = make([]chan []event, p.cfg.httpInflight)
		for i := range p.workers {
			p.workers[i] = make(chan []event, workerBacklog)
			wg.Add(1)
			go func(in chan []event) {
				defer wg.Done()
				p.work(ctx, in, end)
			}(p.workers[i])
		}
	}
	nextSeq := make([]int64, p.cfg.channels)
	next := 0 // round-robin channel
	var emitted int64
	share := make([][]event, len(p.workers))
	for due := start.Add(tickInterval); ; due = due.Add(tickInterval) {
		sleepUntil(due)
		now := time.Now()
		if !now.Before(end) {
			break // behind schedule: what is not sent by the end is never sent
		}
		if now.Sub(due) > tickInterval {
			due = now.Truncate(tickInterval) // catching up: the next tick is the next slot
		}
		count := int64(float64(p.cfg.rate)*now.Sub(start).Seconds()) - emitted
		if count > maxTickEvents {
			count = maxTickEvents
		}
		if count <= 0 {
			continue
		}
		emitted += count
		events := make([]event, count)
		for k := range events {
			seq := nextSeq[next]
			nextSeq[next]++
			events[k] = event{channel: next, seq: seq, dueNs: due.UnixNano()}
			if p.graph != nil {
				events[k].seq, events[k].author = int64(len(p.authorOf)), p.graph.draw(p.draws)
				p.authorOf = append(p.authorOf, events[k].author)
			}
			next = (next + 1) % p.cfg.channels
		}
		if p.redis != nil {
			if p.partitionOf != nil {
				p.appendPartitioned(ctx, events)
				continue
			}
			if p.cfg.redisAppend == "xadd" {
				p.xadd(ctx, events)
			} else {
				p.fcall(ctx, events)
			}
			continue
		}
		for i := range share {
			share[i] = nil
		}
		for _, e := range events {
			w := e.channel % len(p.workers)
			share[w] = append(share[w], e)
		}
		for i, part := range share {
			if part != nil {
				p.workers[i] <- part
			}
		}
	}
	for _, in := range p.workers {
		close(in)
	}
	wg.Wait()
	return p.report(end)
}

// accept books the outcome of one request's events.
func (p *producer) accept(events []event, ok []bool, sentNs int64, failure error) {
	roundTrip := (time.Now().UnixNano() - sentNs) / 1000
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests++
	record(p.callInterval, roundTrip)
	if p.windowStart <= sentNs && sentNs < p.windowEnd {
		record(p.callWindow, roundTrip)
	}
	record(p.lag, (sentNs-events[0].dueNs)/1000)
	for i, e := range events {
		if !ok[i] {
			p.errors++
			p.intervalErrors++
			continue
		}
		p.intervalEvents++
		if p.graph != nil {
			setBit(&p.all, e.seq)
			p.perAuthor[e.author]++
		} else {
			setBit(&p.accepted[e.channel], e.seq)
		}
		p.counts[e.channel]++
		if p.windowStart <= sentNs && sentNs < p.windowEnd {
			p.inWindow++
		}
	}
	if failure != nil && p.firstError == "" {
		p.firstError = failure.Error()
		logf("producer: %v", failure)
	}
}

func (p *producer) report(end time.Time) producerReport {
	p.mu.Lock()
	defer p.mu.Unlock()
	rep := producerReport{
		Mode: p.mode(), PerChannel: append([]int64(nil), p.counts...), InWindow: p.inWindow,
		Errors: p.errors, Unsent: p.unsent, FirstError: p.firstError, Requests: p.requests,
		MaxLagMs: round(float64(p.lag.Max())/1000, 3), P99LagMs: round(float64(p.lag.ValueAtQuantile(99))/1000, 3),
		FellBack: p.fellBack.Load(), accepted: p.accepted, PublishMs: latencyOf(p.callWindow),
	}
	if p.graph != nil {
		rep.PerAuthor = p.graph.perAuthor(p.perAuthor)
		rep.all, rep.authorOf, rep.perAuthor = p.all, p.authorOf, append([]int64(nil), p.perAuthor...)
	}
	for _, n := range p.counts {
		rep.Events += n
	}
	if seconds := float64(p.windowEnd-p.windowStart) / 1e9; seconds > 0 {
		rep.EventsPerS = round(float64(p.inWindow)/seconds, 1)
	}
	return rep
}

// appendData appends an event's data object: {"run":..,"seq":..,"sent_ns":..}
// (following: an activity, followGraph.appendActivity).
func (p *producer) appendData(buf []byte, e event, sentNs int64) []byte {
	if p.graph != nil {
		return p.graph.appendActivity(buf, p.cfg.run, e, sentNs)
	}
	if p.comments != nil { // churn: a comment by one of 100 authors
		buf = append(buf, p.comments[e.channel]...)
		buf = append(buf, `"user":"soak-author-`...)
		buf = strconv.AppendInt(buf, e.seq%100, 10)
		buf = append(buf, `","run":"`...)
	} else {
		buf = append(buf, `{"run":"`...)
	}
	buf = append(buf, p.cfg.run...)
	buf = append(buf, `","seq":`...)
	buf = strconv.AppendInt(buf, e.seq, 10)
	buf = append(buf, `,"sent_ns":`...)
	buf = strconv.AppendInt(buf, sentNs, 10)
	return append(buf, '}')
}

// -- redis -------------------------------------------------------------------------

// xadd appends the events in one pipeline: XADD <stream> * channel <name> data <json>.
func (p *producer) xadd(ctx context.Context, events []event) {
	pipe := p.redis.Pipeline()
	sentNs := time.Now().UnixNano()
	for _, e := range events {
		data := p.appendData(make([]byte, 0, 160), e, sentNs)
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: p.cfg.stream, Values: []any{"channel", p.names[e.channel], "data", data}})
	}
	commands, err := pipe.Exec(ctx)
	ok := make([]bool, len(events))
	for i := range ok {
		ok[i] = i < len(commands) && commands[i].Err() == nil
	}
	if err != nil {
		err = fmt.Errorf("XADD pipeline: %w", err)
	}
	p.accept(events, ok, sentNs, err)
}

// fcall appends the events with one FCALL starling_publish (Starling's Redis
// Function, loaded by the server at start): HINCRBY + XADD per event, atomically.
func (p *producer) fcall(ctx context.Context, events []event) {
	sentNs := time.Now().UnixNano()
	args := make([]any, 0, 8+2*len(events))
	args = append(args, "FCALL", "starling_publish", 3, p.cfg.stream, "starling:offsets",
		"starling:generation", "", strconv.FormatInt(sentNs, 16))
	for _, e := range events {
		args = append(args, p.names[e.channel], p.appendData(make([]byte, 0, 160), e, sentNs))
	}
	err := p.redis.Do(ctx, args...).Err()
	ok := make([]bool, len(events))
	for i := range ok {
		ok[i] = err == nil
	}
	if err != nil {
		err = fmt.Errorf("FCALL starling_publish: %w", err)
	}
	p.accept(events, ok, sentNs, err)
}

// -- redis cluster -----------------------------------------------------------------

// isClusterURL says whether --redis-url names a Redis Cluster (Starling's redis+cluster scheme).
func isClusterURL(raw string) bool {
	return strings.HasPrefix(raw, "redis+cluster://") || strings.HasPrefix(raw, "rediss+cluster://")
}

// parseClusterURL reads Starling's redis+cluster://[user:password@]host:port,host:port[?partitions=N]
// (stores/redis_cluster.py); the query is the server's, not the client's.
func parseClusterURL(raw string) (*redis.ClusterOptions, error) {
	scheme, rest, _ := strings.Cut(raw, "://")
	if scheme != "redis+cluster" && scheme != "rediss+cluster" {
		return nil, fmt.Errorf("not a redis+cluster:// URL: %q", raw)
	}
	rest, _, _ = strings.Cut(rest, "?")
	rest = strings.TrimSuffix(strings.TrimSuffix(rest, "/0"), "/")
	options := &redis.ClusterOptions{}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		user, password, hasPassword := strings.Cut(rest[:at], ":")
		if hasPassword {
			options.Username, options.Password = user, password
		} else {
			options.Password = user
		}
		rest = rest[at+1:]
	}
	for _, addr := range strings.Split(rest, ",") {
		if addr = strings.TrimSpace(addr); addr != "" {
			options.Addrs = append(options.Addrs, addr)
		}
	}
	if len(options.Addrs) == 0 {
		return nil, fmt.Errorf("no host:port in %q", raw)
	}
	if scheme == "rediss+cluster" {
		options.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return options, nil
}

// partitionOf is a channel's partition among count: CRC-32 (IEEE) of its
// UTF-8 name modulo count, stores.partitions.partition_of (Python's zlib.crc32).
func partitionOf(name []byte, count int) int {
	if count <= 1 {
		return 0
	}
	return int(crc32.ChecksumIEEE(name) % uint32(count))
}

// appendPartitioned appends a tick's events on a cluster: one pipeline of one
// FCALL starling_publish per partition with events (or of one XADD per event),
// each on its partition's keys; a channel's events keep their order.
func (p *producer) appendPartitioned(ctx context.Context, events []event) {
	parts := make([][]int, len(p.cfg.streamKeys)) // partition -> positions in events
	for i, e := range events {
		part := p.partitionOf[e.channel]
		parts[part] = append(parts[part], i)
	}
	sentNs := time.Now().UnixNano()
	pipe := p.redis.Pipeline()
	commands := make([]redis.Cmder, 0, len(events))
	order := make([][]int, 0, len(parts)) // per command, the positions of its events
	for part, positions := range parts {
		if len(positions) == 0 {
			continue
		}
		if p.cfg.redisAppend == "xadd" {
			for _, i := range positions {
				e := events[i]
				data := p.appendData(make([]byte, 0, 160), e, sentNs)
				values := []any{"channel", p.names[e.channel], "data", data}
				commands = append(commands, pipe.XAdd(ctx, &redis.XAddArgs{Stream: p.cfg.streamKeys[part], Values: values}))
				order = append(order, []int{i})
			}
			continue
		}
		keys := []string{p.cfg.streamKeys[part], p.cfg.offsetsKeys[part], p.cfg.generationKeys[part]}
		args := make([]any, 0, 2+2*len(positions))
		args = append(args, "", strconv.FormatInt(sentNs, 16))
		for _, i := range positions {
			e := events[i]
			args = append(args, p.names[e.channel], p.appendData(make([]byte, 0, 160), e, sentNs))
		}
		commands = append(commands, pipe.FCall(ctx, "starling_publish", keys, args...))
		order = append(order, positions)
	}
	_, err := pipe.Exec(ctx)
	ok := make([]bool, len(events))
	for k, command := range commands {
		if command.Err() == nil {
			for _, i := range order[k] {
				ok[i] = true
			}
		}
	}
	if err != nil {
		err = fmt.Errorf("cluster %s pipeline: %w", p.cfg.redisAppend, err)
	}
	p.accept(events, ok, sentNs, err)
}

// -- http --------------------------------------------------------------------------

// work sends a worker's events, taking whatever queued up meanwhile into
// the next request (up to maxBatch).
func (p *producer) work(ctx context.Context, in chan []event, end time.Time) {
	var pending []event
	open := true
	for open || len(pending) > 0 {
		if !time.Now().Before(end) {
			p.drop(len(pending))
			pending = pending[:0]
			for part := range in {
				p.drop(len(part))
			}
			return
		}
		if len(pending) == 0 {
			part, ok := <-in
			if !ok {
				return
			}
			pending = append(pending, part...)
		}
	more:
		for len(pending) < maxBatch && open {
			select {
			case part, ok := <-in:
				if !ok {
					open = false
					break more
				}
				pending = append(pending, part...)
			default:
				break more
			}
		}
		take := p.request(pending)
		p.post(ctx, pending[:take])
		pending = append(pending[:0], pending[take:]...)
	}
}

// request says how many of the pending events the next request carries:
// up to maxBatch; for a batch of realtime.publish, up to the first channel
// that repeats (one event per channel per batch keeps each channel's order).
func (p *producer) request(pending []event) int {
	limit := min(len(pending), maxBatch)
	if p.cfg.publishMany && !p.fellBack.Load() {
		return limit
	}
	if p.graph != nil {
		return min(limit, 1) // concurrent calls would reorder a follower's activities
	}
	seen := make(map[int]struct{}, limit)
	for i := 0; i < limit; i++ {
		if _, repeat := seen[pending[i].channel]; repeat {
			return i
		}
		seen[pending[i].channel] = struct{}{}
	}
	return limit
}

// drop counts events a worker never sent: the run ended first.
func (p *producer) drop(events int) {
	p.mu.Lock()
	p.unsent += int64(events)
	p.mu.Unlock()
}

var errMethodNotFound = errors.New("realtime.publish_many: method not found (-32601)")

func (p *producer) post(ctx context.Context, events []event) {
	sentNs := time.Now().UnixNano()
	ok := make([]bool, len(events))
	var err error
	if p.cfg.publishMany && !p.fellBack.Load() {
		err = p.publishMany(ctx, events, sentNs, ok)
		if errors.Is(err, errMethodNotFound) {
			if !p.fellBack.Swap(true) {
				logf("the server has no realtime.publish_many (-32601): falling back to batches of realtime.publish")
			}
			for start := 0; start < len(events); {
				take := p.request(events[start:])
				p.post(ctx, events[start:start+take])
				start += take
			}
			return
		}
	} else {
		err = p.publishBatch(ctx, events, sentNs, ok)
	}
	p.accept(events, ok, sentNs, err)
}

// publishBatch: one JSON-RPC batch of realtime.publish, ids 0..n-1.
func (p *producer) publishBatch(ctx context.Context, events []event, sentNs int64, ok []bool) error {
	body := make([]byte, 0, len(events)*160)
	body = append(body, '[')
	for i, e := range events {
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, `{"jsonrpc":"2.0","id":`...)
		body = strconv.AppendInt(body, int64(i), 10)
		body = append(body, `,"method":"realtime.publish","params":{"channel":"`...)
		body = append(body, p.names[e.channel]...)
		body = append(body, `","data":`...)
		body = p.appendData(body, e, sentNs)
		body = append(body, `}}`...)
	}
	body = append(body, ']')
	reply, err := p.postRPC(ctx, body)
	if err != nil {
		return err
	}
	parser := parsers.Get()
	defer parsers.Put(parser)
	value, err := parser.ParseBytes(reply)
	if err != nil {
		return fmt.Errorf("realtime.publish batch: %w", err)
	}
	var failure error
	for _, item := range value.GetArray() {
		id := item.GetInt("id")
		if item.Exists("result") && id >= 0 && id < len(ok) {
			ok[id] = true
		} else if failure == nil {
			failure = fmt.Errorf("realtime.publish: %s", item.MarshalTo(nil))
		}
	}
	return failure
}

// publishMany: one realtime.publish_many call carrying every event.
func (p *producer) publishMany(ctx context.Context, events []event, sentNs int64, ok []bool) error {
	body := make([]byte, 0, len(events)*100+128)
	body = append(body, `{"jsonrpc":"2.0","id":1,"method":"realtime.publish_many","params":{"events":[`...)
	for i, e := range events {
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, `{"channel":"`...)
		body = append(body, p.names[e.channel]...)
		body = append(body, `","data":`...)
		body = p.appendData(body, e, sentNs)
		body = append(body, '}')
	}
	body = append(body, `]}}`...)
	reply, err := p.postRPC(ctx, body)
	if err != nil {
		return err
	}
	parser := parsers.Get()
	defer parsers.Put(parser)
	value, err := parser.ParseBytes(reply)
	if err != nil {
		return fmt.Errorf("realtime.publish_many: %w", err)
	}
	if value.Exists("error") {
		if value.GetInt("error", "code") == methodNotFound {
			return errMethodNotFound
		}
		return fmt.Errorf("realtime.publish_many: %s", value.Get("error").MarshalTo(nil))
	}
	published := value.GetArray("result", "published")
	if len(published) != len(events) {
		return fmt.Errorf("realtime.publish_many: %d of %d events published", len(published), len(events))
	}
	for i := range ok {
		ok[i] = true
	}
	return nil
}

func (p *producer) postRPC(ctx context.Context, body []byte) ([]byte, error) {
	request, err := http.NewRequestWithContext(ctx, http.MethodPost, p.cfg.rpcURL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	request.Header.Set("Content-Type", "application/json")
	response, err := p.http.Do(request)
	if err != nil {
		return nil, err
	}
	defer response.Body.Close()
	reply, err := io.ReadAll(response.Body)
	if err != nil {
		return nil, err
	}
	if response.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("POST %s: HTTP %d: %.200s", p.cfg.rpcURL, response.StatusCode, reply)
	}
	return reply, nil
}
