// Command starling-rpcload is the native load generator of Starling's JSON-RPC
// calls pipelined over the WebSocket (issue 12's budget: social.counts at
// 10,000 calls/s or more on 2 cores, this load generator included).
// bench/rpc_native.py drives it; it also runs on its own.
//
// It speaks what docs/api.md ("JSON-RPC methods on the WebSocket") describes:
// a service token (an HS256 JWT {sub, iat, exp, "role": "service"}, as
// auth/tokens.py issues) in ?token= of GET /ws, then JSON-RPC 2.0 request
// frames sent without waiting; each reply comes back when its call ends, in
// any order, matched by id. The server runs at most 64 calls of a connection
// at once and stops reading its frames beyond that (backpressure).
//
// Each connection (caller.go) has one writer keeping --depth calls in flight
// (the requests a burst of replies makes room for leave in one write) and one
// reader matching the replies by id. A call's latency is its reply's arrival
// minus the write of its request. The window opens --warmup after every
// connection is up and lasts --duration; a call counts when its reply arrives
// inside it. At the window's end the writers stop and the calls still in
// flight are drained (at most --drain), so that every request sent is either
// answered or reported unanswered.
//
// With --mix (mix.go) the calls are a mix of methods instead, each at its own
// rate (open loop: a pacer issues the calls due, latency counts from when a call
// was due); with --interval, each method's figures of every interval are
// printed on stderr as "@" events while the run goes on (bench/soak.py).
//
// Output: one JSON object on stdout (report.go); progress and errors on stderr.
//
//	starling-rpcload --server http://127.0.0.1:8080 --params users.jsonl \
//	    --connections 8 --depth 64 --duration 10s --warmup 2s
//	starling-rpcload --server http://127.0.0.1:8080 --mix mix.jsonl --interval 5s \
//	    --connections 4 --duration 25m --warmup 5m
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"starling/bench/loadkit"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/golang-jwt/jwt/v5"
	"github.com/valyala/fastjson"
)

// serviceRole is the "role" claim of an internal service's token (auth/tokens.py SERVICE).
const serviceRole = "service"

// config is every setting of one run; units are in the names or the types.
type config struct {
	server        string // http://host:port
	wsURL         string // ws://host:port/ws
	secret        []byte
	method        string
	paramsFile    string
	params        [][]byte // compact JSON objects, used round-robin
	connections   int
	depth         int // calls in flight per connection
	duration      time.Duration
	warmup        time.Duration
	drain         time.Duration
	dialTimeout   time.Duration
	user          string // the token's sub
	recordResults bool
	mixFile       string
	mix           []mixEntry    // --mix: the methods, each at its rate (open loop)
	interval      time.Duration // --interval: figures every interval on stderr; 0: none
}

func parseFlags(args []string) (*config, error) {
	fs := flag.NewFlagSet("starling-rpcload", flag.ContinueOnError)
	c := &config{}
	var secretFlag, secretFile string
	fs.StringVar(&c.server, "server", "http://127.0.0.1:8080", "the server's base URL (GET /ws)")
	fs.StringVar(&secretFlag, "secret", "", "token secret (default: $STARLING_SECRET)")
	fs.StringVar(&secretFile, "secret-file", "", "read the token secret's bytes from this file (the server's <data-dir>/secret)")
	fs.StringVar(&c.method, "method", "social.counts", "the JSON-RPC method every call names")
	fs.StringVar(&c.paramsFile, "params", "", "a file of JSON objects, one per line: the params of each call, used round-robin (default: {})")
	fs.IntVar(&c.connections, "connections", 8, "WebSocket connections")
	fs.IntVar(&c.depth, "depth", 64, "calls in flight per connection (the server runs 64 at once)")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "measured window")
	fs.DurationVar(&c.warmup, "warmup", 2*time.Second, "load before the window")
	fs.DurationVar(&c.drain, "drain", 5*time.Second, "longest wait for the calls in flight when the window ends")
	fs.DurationVar(&c.dialTimeout, "dial-timeout", 10*time.Second, "longest connect + handshake of one connection")
	fs.StringVar(&c.user, "user", "bench-rpc", "the service token's subject (sub)")
	fs.BoolVar(&c.recordResults, "record-results", false, "report the distinct results of each params line (results)")
	fs.StringVar(&c.mixFile, "mix", "", `a file of JSON objects, one per line, {"method", "rate" (calls/s), "params": [object, ...]}: each method at its rate, open loop (instead of --method and --params)`)
	fs.DurationVar(&c.interval, "interval", 0, `print "@" interval events on stderr this often (0: none)`)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	switch {
	case secretFlag != "" && secretFile != "":
		return nil, errors.New("--secret and --secret-file: give one")
	case secretFile != "":
		secret, err := os.ReadFile(secretFile)
		if err != nil {
			return nil, fmt.Errorf("--secret-file: %w", err)
		}
		c.secret = secret
	case secretFlag != "":
		c.secret = []byte(secretFlag)
	default:
		c.secret = []byte(os.Getenv("STARLING_SECRET"))
	}
	if len(c.secret) == 0 {
		return nil, errors.New("no token secret: pass --secret or --secret-file, or set STARLING_SECRET")
	}
	base, err := url.Parse(strings.TrimRight(c.server, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("--server must be http://host:port, not %q", c.server)
	}
	c.wsURL = strings.Replace(base.String(), "http", "ws", 1) + "/ws"
	switch {
	case c.connections < 1 || c.depth < 1:
		return nil, errors.New("--connections and --depth must be >= 1")
	case c.duration <= 0 || c.warmup < 0 || c.drain <= 0 || c.dialTimeout <= 0:
		return nil, errors.New("--duration, --drain and --dial-timeout must be > 0, --warmup >= 0")
	case c.method == "":
		return nil, errors.New("--method must not be empty")
	}
	if c.interval < 0 {
		return nil, errors.New("--interval must be >= 0")
	}
	if c.mixFile != "" {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if set["method"] || set["params"] {
			return nil, errors.New("--mix names the methods and their params: not with --method or --params")
		}
		text, err := os.ReadFile(c.mixFile)
		if err != nil {
			return nil, fmt.Errorf("--mix: %w", err)
		}
		if c.mix, err = parseMix(text); err != nil {
			return nil, fmt.Errorf("--mix %s: %w", c.mixFile, err)
		}
		return c, nil
	}
	c.params = [][]byte{[]byte("{}")}
	if c.paramsFile != "" {
		text, err := os.ReadFile(c.paramsFile)
		if err != nil {
			return nil, fmt.Errorf("--params: %w", err)
		}
		if c.params, err = parseParams(text); err != nil {
			return nil, fmt.Errorf("--params %s: %w", c.paramsFile, err)
		}
	}
	return c, nil
}

// parseParams reads JSON objects, one per line (blank lines skipped); each compacted.
func parseParams(text []byte) ([][]byte, error) {
	var params [][]byte
	var parser fastjson.Parser
	for number, line := range strings.Split(string(text), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		value, err := parser.Parse(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", number+1, err)
		}
		if value.Type() != fastjson.TypeObject {
			return nil, fmt.Errorf("line %d: a JSON object is needed, not %s", number+1, value.Type())
		}
		params = append(params, value.MarshalTo(nil))
	}
	if len(params) == 0 {
		return nil, errors.New("no params: the file holds no JSON object")
	}
	return params, nil
}

// serviceToken signs an HS256 JWT {"sub", "iat", "exp", "role": "service"} (auth/tokens.py issue_token).
func serviceToken(secret []byte, user string, ttl time.Duration, now time.Time) (string, error) {
	claims := jwt.MapClaims{
		"sub":  user,
		"iat":  now.Unix(),
		"exp":  now.Add(ttl).Unix(),
		"role": serviceRole,
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "rpcload: "+format+"\n", args...)
}

func sleepUntil(t time.Time) {
	if d := time.Until(t); d > 0 {
		time.Sleep(d)
	}
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		logf("%v", err)
		os.Exit(2)
	}
	rep, err := run(cfg)
	if err != nil {
		logf("%v", err)
		os.Exit(1)
	}
	if err := loadkit.PrintReport(rep); err != nil {
		logf("writing the report: %v", err)
		os.Exit(1)
	}
}

// run is one whole run: open every connection, load through the warm-up and
// the window, drain what is in flight, close, report.
func run(cfg *config) (*report, error) {
	began := cpuNow()
	p := newPlan(cfg.method, cfg.params, cfg.depth, cfg.recordResults)
	if cfg.mix != nil {
		p = newMixPlan(cfg.mix, cfg.depth, cfg.recordResults)
	}
	if cfg.interval > 0 {
		p.intervals = newIntervals(len(p.methods))
	}
	// The token outlives the run: dials, warm-up, window, drain, and a margin.
	ttl := max(time.Hour, cfg.dialTimeout+cfg.warmup+cfg.duration+cfg.drain+time.Minute)
	token, err := serviceToken(cfg.secret, cfg.user, ttl, time.Now())
	if err != nil {
		return nil, fmt.Errorf("signing the token: %w", err)
	}
	logf("opening %d connections to %s as service %q", cfg.connections, cfg.wsURL, cfg.user)
	callers, err := dialAll(cfg, p, token)
	if err != nil {
		return nil, err
	}

	var readers, writers sync.WaitGroup
	for _, c := range callers {
		readers.Add(1)
		go func(c *caller) {
			defer readers.Done()
			c.read()
		}(c)
	}
	start := time.Now()
	windowStart := start.Add(cfg.warmup)
	windowEnd := windowStart.Add(cfg.duration)
	p.window.set(windowStart.UnixNano(), windowEnd.UnixNano())
	stop := make(chan struct{})
	tickets := make(chan ticket, ticketBacklog)
	if p.mix {
		go p.pace(start, stop, tickets)
	}
	for _, c := range callers {
		writers.Add(1)
		go func(c *caller) {
			defer writers.Done()
			write := func() error { return c.write(stop) }
			if p.mix {
				write = func() error { return c.writePaced(stop, tickets) }
			}
			if err := write(); err != nil && !p.stopping.Load() {
				logf("connection %d: write: %v", c.index, err)
			}
		}(c)
	}
	var reporting sync.WaitGroup
	if p.intervals != nil {
		p.intervals.began = start
		reporting.Add(1)
		go reportIntervals(p, callers, cfg.interval, stop, &reporting)
	}
	if p.mix {
		logf("a mix of %d methods, %.1f calls/s, %d calls in flight per connection at most: %s warm-up, %s measured",
			len(p.methods), p.totalRate(), cfg.depth, cfg.warmup, cfg.duration)
	} else {
		logf("%s, %d params, %d calls in flight per connection: %s warm-up, %s measured",
			cfg.method, len(cfg.params), cfg.depth, cfg.warmup, cfg.duration)
	}
	sleepUntil(windowStart)
	cpuFrom := cpuNow()
	sleepUntil(windowEnd)
	cpuTo := cpuNow()
	close(stop)
	reporting.Wait()

	drainStart := time.Now()
	drained := drain(callers, drainStart.Add(cfg.drain))
	drainSeconds := time.Since(drainStart).Seconds()
	closeAll(p, callers)
	writers.Wait()
	readers.Wait()

	rep := summarize(cfg, p, callers)
	rep.Totals.Unsent = int64(len(tickets))
	rep.Window = windowReport{StartNs: windowStart.UnixNano(), EndNs: windowEnd.UnixNano(), Seconds: cfg.duration.Seconds()}
	rep.Totals.Drained = drained
	rep.Totals.DrainSeconds = round(drainSeconds, 3)
	rep.CPU = cpuReport(began, cpuFrom, cpuTo, cfg.duration, rep.Completed)
	logf("%d calls in the window (%.0f/s), %d errors, %d unanswered",
		rep.Completed, rep.CallsPerSecond, rep.Completed-rep.OK, rep.Totals.Unanswered)
	return rep, nil
}

// dialAll opens every connection at once; any failure closes the others.
func dialAll(cfg *config, p *plan, token string) ([]*caller, error) {
	dialer := ws.Dialer{Timeout: cfg.dialTimeout, ReadBufferSize: readBufferBytes}
	callers := make([]*caller, cfg.connections)
	failures := make([]error, cfg.connections)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			conn, br, _, err := dialer.Dial(context.Background(), cfg.wsURL+"?token="+token)
			if err != nil {
				failures[i] = err
				return
			}
			callers[i] = newCaller(i, conn, br, p)
		}(i)
	}
	wg.Wait()
	failed, first := 0, error(nil)
	for _, err := range failures {
		if err != nil {
			failed++
			first = cmp.Or(first, err)
		}
	}
	if failed > 0 {
		for _, c := range callers {
			if c != nil {
				c.conn.Close()
			}
		}
		return nil, fmt.Errorf("%d of %d connections to %s failed, the first: %w", failed, len(callers), cfg.wsURL, first)
	}
	return callers, nil
}

// drain waits until no call is in flight on an open connection, or the deadline; whether none is.
func drain(callers []*caller, deadline time.Time) bool {
	for {
		idle := true
		for _, c := range callers {
			if !c.closed.Load() && c.ledger.inFlight() > 0 {
				idle = false
				break
			}
		}
		if idle {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// closeAll sends every open connection a close frame (1000) and lets the readers
// see the server's answer, or time out.
func closeAll(p *plan, callers []*caller) {
	p.stopping.Store(true)
	deadline := time.Now().Add(closeTimeout)
	bye := clientFrame(ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
	for _, c := range callers {
		_ = c.conn.SetDeadline(deadline) // also ends a write the server stopped reading
		if !c.closed.Load() {
			_ = c.send(bye)
		}
	}
}
