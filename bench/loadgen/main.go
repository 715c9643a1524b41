// Command starling-loadgen is the native load generator of Starling's realtime
// benchmark (bench/realtime.py drives it; it also runs on its own).
//
// One process holds every WebSocket subscriber and the producer, so the
// producer's per-channel counts and the subscribers' receipts meet without
// any inter-process bookkeeping. It speaks the server's protocol of GET /ws
// (protocols/ws_session.py): a JWT in ?token=, JSON-RPC 2.0 text frames,
// "pub" pushes alone or coalesced in one JSON array frame.
//
// Scenarios (--scenario):
//
//	fanout  K subscribers on C channels, a producer at R events/s (XADD or HTTP)
//	hot     the same with 10,000 subscribers on 10 channels, 10 events/s each
//	idle    N connections subscribe, hold a few seconds, report connect times
//	storm   N connections subscribe all at once (as after a restart)
//	following  the users of --follows subscribe to following:<user>; the
//	           producer publishes comments on post:<P> at R activities/s by
//	           authors they follow (following.go)
//	churn   K subscribers on C channels come and go (each lives ~--lifetime,
//	        reconnects and subscribes with since) while a producer publishes
//	        comments at R events/s; "@" interval events (churn.go, bench/soak.py)
//
// Output: one JSON object on stdout at the end (report.go); progress and
// errors on stderr. Lines on stderr starting with "@" are JSON events for the
// driver: {"event":"subscribed",...} when every subscriber is in, and
// {"event":"window","start_ns":..,"end_ns":..} before the producer starts.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"runtime/pprof"
	"starling/bench/loadkit"
	"strings"
	"syscall"
	"time"
)

// config is every setting of one run; units are in the names or the types.
type config struct {
	scenario        string
	server          string // http://host:port
	wsURL           string // ws://host:port/ws
	rpcURL          string // http://host:port/rpc
	secret          []byte
	run             string
	userPrefix      string
	channelPrefix   string
	subscribers     int
	channels        int
	rate            int // events/s entering the stream
	duration        time.Duration
	warmup          time.Duration
	drain           time.Duration
	hold            time.Duration
	startDelay      time.Duration
	producer        string // redis | http | none
	redisAppend     string // fcall | xadd (producer redis)
	redisURL        string
	redisCluster    bool // redisURL is redis+cluster://: the stream is split into partitions
	stream          string
	streamKeys      []string // cluster: each partition's stream key (--stream-keys)
	offsetsKeys     []string // cluster: each partition's offsets key (--offsets-keys)
	generationKeys  []string // cluster: each partition's generation key (--generation-keys)
	publishMany     bool
	httpInflight    int
	dialConcurrency int
	dialRetries     int
	dialTimeout     time.Duration
	pingEvery       time.Duration
	tokenTTL        time.Duration
	cpuProfile      string
	followsFile     string        // following: the follow lists (following.go)
	seed            int64         // following: the authors' draw
	graph           *followGraph  // following: loaded from followsFile
	lifetime        time.Duration // churn: a connection's mean lifetime
	reconnectDelay  time.Duration // churn: the mean pause before a reconnect
	interval        time.Duration // churn: an "@" interval event this often (0: none)
	tokenRole       string        // the subscribers' tokens: user | service | operator
}

// scenarioDefaults are the numbers of each scenario; explicit flags override them.
var scenarioDefaults = map[string]struct {
	subscribers, channels, rate, dialConcurrency int
	hold                                         time.Duration
}{
	"fanout": {1_000, 200, 20_000, 256, 0},
	"hot":    {10_000, 10, 100, 256, 0},
	"idle":   {10_000, 200, 0, 256, 5 * time.Second},
	"storm":  {10_000, 200, 0, 0, 2 * time.Second}, // dial concurrency 0: all at once
	// following: the subscribers and channels (posts) are the --follows file's.
	"following": {1_000, 200, 2_000, 256, 0},
	"churn":     {1_000, 200, 2_800, 256, 0},
}

func parseFlags(args []string) (*config, error) {
	fs := flag.NewFlagSet("starling-loadgen", flag.ContinueOnError)
	c := &config{}
	var secretFlag, streamKeys, offsetsKeys, generationKeys string
	fs.StringVar(&c.scenario, "scenario", "fanout", "fanout | hot | idle | storm | following | churn")
	fs.StringVar(&c.server, "server", "http://127.0.0.1:8080", "the server's base URL (GET /ws, POST /rpc)")
	fs.StringVar(&secretFlag, "secret", "", "token secret (default: $STARLING_SECRET)")
	fs.StringVar(&c.run, "run", "", "run id put in every event (default: <pid>-<unix ns>)")
	fs.StringVar(&c.userPrefix, "user-prefix", "bench-", "subscriber j is user <prefix><j>")
	fs.StringVar(&c.channelPrefix, "channel-prefix", "post:bench-", "channel i is <prefix><i>")
	fs.IntVar(&c.subscribers, "subscribers", 0, "WebSocket subscribers; subscriber j reads channel j % channels (default per scenario)")
	fs.IntVar(&c.channels, "channels", 0, "channels (default per scenario)")
	fs.IntVar(&c.rate, "rate", 0, "events/s the producer aims at (default per scenario; hot: 10 x channels)")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "measured window")
	fs.DurationVar(&c.warmup, "warmup", 2*time.Second, "load before the window")
	fs.DurationVar(&c.drain, "drain", 5*time.Second, "longest wait for the last deliveries after the producer stops")
	fs.DurationVar(&c.hold, "hold", 0, "idle/storm: how long to hold the connections (default per scenario)")
	fs.DurationVar(&c.startDelay, "start-delay", time.Second, "pause between the last subscription and the producer's first tick")
	fs.StringVar(&c.producer, "producer", "redis", "redis (FCALL starling_publish or XADD) | http (POST /rpc realtime.publish) | none")
	fs.StringVar(&c.redisAppend, "redis-append", "fcall", "producer redis: fcall (numbered as appended) | xadd (bare)")
	fs.StringVar(&c.redisURL, "redis-url", "redis://127.0.0.1:6379/0", "the server's Redis (producer redis)")
	fs.StringVar(&c.stream, "stream", "starling:events", "the stream the producer appends to (producer redis)")
	fs.StringVar(&streamKeys, "stream-keys", "", "Redis Cluster: the stream's key in each partition, comma-separated, in partition order")
	fs.StringVar(&offsetsKeys, "offsets-keys", "", "Redis Cluster: the offsets hash of each partition (FCALL), comma-separated")
	fs.StringVar(&generationKeys, "generation-keys", "", "Redis Cluster: the generation key of each partition (FCALL), comma-separated")
	fs.BoolVar(&c.publishMany, "publish-many", false, "producer http: one realtime.publish_many call per request instead of a batch")
	fs.IntVar(&c.httpInflight, "http-inflight", 4, "producer http: requests in flight (each owns a share of the channels)")
	fs.IntVar(&c.dialConcurrency, "dial-concurrency", -1, "handshakes in progress at once (0: all at once; default per scenario)")
	fs.IntVar(&c.dialRetries, "dial-retries", 3, "retries of a failed connect or subscribe")
	fs.DurationVar(&c.dialTimeout, "dial-timeout", 30*time.Second, "longest connect + handshake + subscribe attempt")
	fs.DurationVar(&c.pingEvery, "ping-every", 20*time.Second, "JSON-RPC ping per connection (the server closes after 60 s idle)")
	fs.DurationVar(&c.tokenTTL, "token-ttl", time.Hour, "lifetime of the tokens signed")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the run to this file (go tool pprof)")
	fs.StringVar(&c.followsFile, "follows", "", `following: a JSON file {"follows": {user: [followee, ...]}, "posts": [post id, ...]}`)
	fs.Int64Var(&c.seed, "seed", 42, "following: seed of the authors' draw")
	fs.DurationVar(&c.lifetime, "lifetime", 20*time.Second, "churn: a connection's mean lifetime (each uniform in [0.5, 1.5] x this)")
	fs.DurationVar(&c.reconnectDelay, "reconnect-delay", 500*time.Millisecond, "churn: the mean pause before a reconnect (uniform in [0, 2] x this)")
	fs.DurationVar(&c.interval, "interval", 0, `churn: print an "@" interval event on stderr this often (0: none)`)
	fs.StringVar(&c.tokenRole, "token-role", "user", `the subscribers' tokens: user, service ("role": "service") or operator`)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	defaults, ok := scenarioDefaults[c.scenario]
	if !ok {
		return nil, fmt.Errorf("--scenario must be fanout, hot, idle, storm, following or churn, not %q", c.scenario)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["subscribers"] {
		c.subscribers = defaults.subscribers
	}
	if !set["channels"] {
		c.channels = defaults.channels
	}
	if !set["rate"] {
		c.rate = defaults.rate
		if c.scenario == "hot" {
			c.rate = 10 * c.channels
		}
	}
	if !set["hold"] {
		c.hold = defaults.hold
	}
	if !set["dial-concurrency"] {
		c.dialConcurrency = defaults.dialConcurrency
	}
	if c.scenario == "following" {
		if err := c.loadFollows(set["subscribers"], set["channels"]); err != nil {
			return nil, err
		}
		if !set["http-inflight"] {
			c.httpInflight = 1 // one ordered sequence of activities (producer.go)
		}
	} else if c.followsFile != "" {
		return nil, errors.New("--follows is for --scenario following")
	}
	if c.dialConcurrency <= 0 || c.dialConcurrency > c.subscribers {
		c.dialConcurrency = c.subscribers
	}
	if c.scenario == "idle" || c.scenario == "storm" {
		c.producer = "none"
	}
	if secretFlag == "" {
		secretFlag = os.Getenv("STARLING_SECRET")
	}
	if secretFlag == "" {
		return nil, errors.New("no token secret: pass --secret or set STARLING_SECRET")
	}
	c.secret = []byte(secretFlag)
	if c.run == "" {
		c.run = fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano())
	}
	base, err := url.Parse(strings.TrimRight(c.server, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("--server must be http://host:port, not %q", c.server)
	}
	c.rpcURL = base.String() + "/rpc"
	c.wsURL = strings.Replace(base.String(), "http", "ws", 1) + "/ws"
	switch {
	case c.subscribers < 1 || c.channels < 1:
		return nil, errors.New("--subscribers and --channels must be >= 1")
	case c.producer != "redis" && c.producer != "http" && c.producer != "none":
		return nil, fmt.Errorf("--producer must be redis, http or none, not %q", c.producer)
	case c.redisAppend != "fcall" && c.redisAppend != "xadd":
		return nil, fmt.Errorf("--redis-append must be fcall or xadd, not %q", c.redisAppend)
	case c.producer != "none" && c.rate < 1:
		return nil, errors.New("--rate must be >= 1 event/s")
	case c.duration <= 0 || c.warmup < 0 || c.drain <= 0:
		return nil, errors.New("--duration and --drain must be > 0, --warmup >= 0")
	case c.httpInflight < 1 || c.dialRetries < 0 || c.pingEvery <= 0:
		return nil, errors.New("--http-inflight >= 1, --dial-retries >= 0, --ping-every > 0")
	case c.tokenRole != "user" && c.tokenRole != "service" && c.tokenRole != "operator":
		return nil, fmt.Errorf("--token-role must be user, service or operator, not %q", c.tokenRole)
	case c.interval < 0:
		return nil, errors.New("--interval must be >= 0")
	}
	if err := c.partitionKeys(streamKeys, offsetsKeys, generationKeys); err != nil {
		return nil, err
	}
	if c.scenario == "churn" {
		if c.lifetime <= 0 || c.reconnectDelay < 0 {
			return nil, errors.New("churn: --lifetime must be > 0, --reconnect-delay >= 0")
		}
		if c.producer == "none" {
			return nil, errors.New("churn needs a producer: --producer http or redis")
		}
	}
	return c, nil
}

// partitionKeys reads the partitions' keys of a cluster --redis-url (producer redis):
// as many stream, offsets and generation keys, the last two for FCALL only.
func (c *config) partitionKeys(streamKeys, offsetsKeys, generationKeys string) error {
	split := func(list string) []string {
		if list == "" {
			return nil
		}
		return strings.Split(list, ",")
	}
	c.redisCluster = c.producer == "redis" && isClusterURL(c.redisURL)
	c.streamKeys, c.offsetsKeys, c.generationKeys = split(streamKeys), split(offsetsKeys), split(generationKeys)
	switch {
	case !c.redisCluster && (c.streamKeys != nil || c.offsetsKeys != nil || c.generationKeys != nil):
		return errors.New("--stream-keys, --offsets-keys and --generation-keys need --producer redis and a redis+cluster:// --redis-url")
	case !c.redisCluster:
		return nil
	case len(c.streamKeys) == 0:
		return errors.New("a redis+cluster:// --redis-url needs --stream-keys (one per partition)")
	case c.redisAppend == "fcall" && (len(c.offsetsKeys) != len(c.streamKeys) || len(c.generationKeys) != len(c.streamKeys)):
		return fmt.Errorf("--redis-append fcall on a cluster: %d stream keys but %d offsets and %d generation keys",
			len(c.streamKeys), len(c.offsetsKeys), len(c.generationKeys))
	}
	return nil
}

// raiseFileLimit lifts RLIMIT_NOFILE's soft limit to its hard limit: one
// descriptor per connection, 10,000 connections and more.
func raiseFileLimit() uint64 {
	var limit syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &limit); err != nil {
		return 0
	}
	if limit.Cur < limit.Max {
		limit.Cur = limit.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &limit); err != nil {
			logf("could not raise the open files limit to %d: %v", limit.Max, err)
			_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &limit)
		}
	}
	return limit.Cur
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "loadgen: "+format+"\n", args...)
}

// announce writes one driver event on stderr: "@" and a JSON object.
func announce(event any) {
	line, _ := json.Marshal(event)
	fmt.Fprintf(os.Stderr, "@%s\n", line)
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
	files := raiseFileLimit()
	if uint64(cfg.subscribers)+64 > files {
		logf("warning: %d subscribers but only %d open files allowed", cfg.subscribers, files)
	}
	if cfg.cpuProfile != "" {
		profile, err := os.Create(cfg.cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(profile)
		}
		if err != nil {
			logf("--cpuprofile: %v", err)
			os.Exit(2)
		}
		defer pprof.StopCPUProfile()
	}
	runScenario := run
	if cfg.scenario == "churn" {
		runScenario = runChurn
	}
	report, err := runScenario(cfg)
	if err != nil {
		logf("%v", err)
		os.Exit(1)
	}
	if err := loadkit.PrintReport(report); err != nil {
		logf("writing the report: %v", err)
		os.Exit(1)
	}
}

// run is one whole run: connect every subscriber, then either load (fanout,
// hot) or hold (idle, storm), then close and report.
func run(cfg *config) (*report, error) {
	began := cpuNow()
	f := newFleet(cfg)
	var prod *producer
	if cfg.producer != "none" {
		var err error
		if prod, err = newProducer(cfg); err != nil {
			return nil, err
		}
		defer prod.close()
	}
	stopPings := f.startPings()
	defer stopPings()
	logf("%s: connecting %d subscribers to %s (%d channels, %d handshakes at once)",
		cfg.scenario, cfg.subscribers, cfg.wsURL, cfg.channels, cfg.dialConcurrency)
	conn := f.connectAll()
	logf("%d/%d subscribed in %.2f s (%d errors, %d retries)",
		conn.Connected, cfg.subscribers, conn.SubscribeSeconds, conn.Errors, conn.Retries)
	announce(map[string]any{"event": "subscribed", "connected": conn.Connected, "errors": conn.Errors})
	rep := &report{Scenario: cfg.scenario, Run: cfg.run, Settings: settingsOf(cfg), Connect: conn}

	if prod == nil {
		logf("holding %d connections for %s", conn.Connected, cfg.hold)
		before := cpuNow()
		time.Sleep(cfg.hold)
		rep.CPU = cpuReport(began, before, cpuNow(), 0)
		f.closeAll()
		rep.Disconnects, rep.Disconnected = f.disconnects()
		return rep, nil
	}

	start := time.Now().Add(cfg.startDelay)
	windowStart := start.Add(cfg.warmup)
	windowEnd := windowStart.Add(cfg.duration)
	f.setWindow(windowStart.UnixNano(), windowEnd.UnixNano())
	prod.setWindow(windowStart.UnixNano(), windowEnd.UnixNano())
	announce(map[string]any{"event": "window", "start_ns": windowStart.UnixNano(), "end_ns": windowEnd.UnixNano()})
	cpuWindow := make(chan [2]cpuSample, 1)
	go func() {
		sleepUntil(windowStart)
		first := cpuNow()
		sleepUntil(windowEnd)
		cpuWindow <- [2]cpuSample{first, cpuNow()}
	}()
	logf("producing %d events/s (%s) from %s: %s warm-up, %s measured",
		cfg.rate, cfg.producer, start.Format("15:04:05.000"), cfg.warmup, cfg.duration)
	produced := prod.run(context.Background(), start, windowEnd)
	window := <-cpuWindow
	logf("produced %d events (%d errors); draining up to %s", produced.Events, produced.Errors, cfg.drain)
	drainStart := time.Now()
	drained := f.drain(f.wanted(&produced), drainStart.Add(cfg.drain))
	drainSeconds := time.Since(drainStart).Seconds()
	f.closeAll()

	rep.Producer = &produced
	rep.Deliveries, rep.Latency, rep.Frames = f.deliveries(&produced, cfg.duration)
	rep.Deliveries.Drained = drained
	rep.Deliveries.DrainSeconds = round(drainSeconds, 3)
	rep.Window = &windowReport{StartNs: windowStart.UnixNano(), EndNs: windowEnd.UnixNano(), Seconds: cfg.duration.Seconds()}
	rep.CPU = cpuReport(began, window[0], window[1], rep.Frames.MessagesInWindow)
	rep.Disconnects, rep.Disconnected = f.disconnects()
	return rep, nil
}
