package main

import (
	"encoding/json"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

func testMix() []mixEntry {
	return []mixEntry{
		{method: "social.counts", rate: 1000, params: [][]byte{[]byte(`{"user":"1"}`), []byte(`{"user":"2"}`)}},
		{method: "feed.get", rate: 200, params: [][]byte{[]byte(`{"user":"3"}`)}},
	}
}

// A mix file is one method per line, with its rate and a non-empty array of params objects;
// anything else is refused with its line number.
func TestAMixFileIsOneMethodPerLine(t *testing.T) {
	mix, err := parseMix([]byte(`{"method":"social.counts","rate":5.5,"params":[{"user":"1"},{"user": "2"}]}` + "\n\n" +
		`{"method":"feed.get","rate":1,"params":[{"user":"3","limit":20}]}` + "\n"))
	if err != nil || len(mix) != 2 || mix[0].rate != 5.5 || len(mix[0].params) != 2 || string(mix[0].params[1]) != `{"user":"2"}` {
		t.Fatalf("mix %+v, err %v", mix, err)
	}
	for _, bad := range []string{
		`{"rate":1,"params":[{}]}`,
		`{"method":"m","rate":0,"params":[{}]}`,
		`{"method":"m","rate":1,"params":[]}`,
		`{"method":"m","rate":1,"params":[1]}`,
		`{"method":"m","rate":1,"params":[{}]}` + "\n" + `{"method":"m","rate":2,"params":[{}]}`,
		"",
	} {
		if _, err := parseMix([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := parseMix([]byte(`{"method":"m","rate":1,"params":[{}]}` + "\n{]")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("error %v does not name line 2", err)
	}
}

// The pacer issues each method's calls at its own rate, its params round-robin within
// the method's lines, each ticket stamped with the tick that issued it.
func TestThePacerIssuesEachMethodAtItsRate(t *testing.T) {
	p := newMixPlan(testMix(), 8, false)
	tickets := make(chan ticket, 10_000)
	stop := make(chan struct{})
	start := time.Now()
	go p.pace(start, stop, tickets)
	time.Sleep(500 * time.Millisecond)
	elapsed := time.Since(start).Seconds()
	close(stop)
	time.Sleep(20 * time.Millisecond)
	per := map[int32]int{}
	for len(tickets) > 0 {
		tk := <-tickets
		per[tk.line]++
		if tk.dueNs < start.UnixNano() || tk.dueNs > time.Now().UnixNano() {
			t.Fatalf("ticket due at %d, outside the run", tk.dueNs)
		}
	}
	counts, feeds := per[0]+per[1], per[2]
	if math.Abs(float64(counts)-1000*elapsed) > 30 || math.Abs(float64(feeds)-200*elapsed) > 10 {
		t.Fatalf("%d counts and %d feed calls in %.2f s; want ~%.0f and ~%.0f", counts, feeds, elapsed, 1000*elapsed, 200*elapsed)
	}
	if d := per[0] - per[1]; d < -1 || d > 1 {
		t.Fatalf("social.counts lines used %d and %d times: not round-robin", per[0], per[1])
	}
	if p.methods[0].dropped.Load() != 0 {
		t.Fatal("tickets dropped with room in the queue")
	}
}

// A full queue of due calls drops what does not fit and counts it against its method.
func TestTicketsBeyondTheQueueAreDroppedAndCounted(t *testing.T) {
	p := newMixPlan(testMix(), 8, false)
	tickets := make(chan ticket, 3)
	stop := make(chan struct{})
	go p.pace(time.Now(), stop, tickets)
	time.Sleep(200 * time.Millisecond)
	close(stop)
	if len(tickets) != 3 || p.methods[0].dropped.Load()+p.methods[1].dropped.Load() < 150 {
		t.Fatalf("%d queued, %d + %d dropped", len(tickets), p.methods[0].dropped.Load(), p.methods[1].dropped.Load())
	}
}

// The paced writer sends only the calls it has tickets for, never more than depth in
// flight, and stamps each with its ticket's due time (its latency starts there).
func TestThePacedWriterSendsTicketsWithinTheDepth(t *testing.T) {
	const depth = 4
	client, server := net.Pipe()
	p := newMixPlan(testMix(), depth, false)
	c := newCaller(0, client, nil, p)
	requests := make(chan int64, 100)
	go func() {
		for {
			frame, err := readRequest(server)
			if err != nil {
				return
			}
			requests <- frame
		}
	}()
	tickets := make(chan ticket, 100)
	for i := 0; i < 10; i++ {
		tickets <- ticket{line: 2, dueNs: int64(1000 + i)}
	}
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- c.writePaced(stop, tickets) }()
	deadline := time.Now().Add(2 * time.Second)
	for len(requests) < depth && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(30 * time.Millisecond)
	if sent, inFlight := c.ledger.counts(); sent != depth || inFlight != depth || len(tickets) != 10-depth {
		t.Fatalf("sent %d, in flight %d, %d tickets left; want %d, %d, %d", sent, inFlight, len(tickets), depth, depth, 10-depth)
	}
	first := int64(1)
	c.handle(result(first, `{}`), 5000)
	if c.tally.perMethod[1].completed != 0 || c.plan.methodOf[2] != 1 {
		t.Fatal("a reply outside the window was counted in the window")
	}
	for len(requests) < depth+1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(stop)
	client.Close()
	<-done
	if sent, _ := c.ledger.counts(); sent != depth+1 {
		t.Fatalf("sent %d after one reply, want %d", sent, depth+1)
	}
}

// Each interval event gives each method's replies, errors and latency since the previous
// one, then starts empty.
func TestIntervalsArePerMethodAndStartEmpty(t *testing.T) {
	p := newMixPlan(testMix(), 8, false)
	p.intervals = newIntervals(len(p.methods))
	p.window.set(math.MinInt64, math.MaxInt64)
	c := newCaller(0, nil, nil, p)
	counts := c.openForTest(t, 1_000_000, 0)
	feed := c.openForTest(t, 1_000_000, 2)
	failed := c.openForTest(t, 1_000_000, 2)
	c.handle(result(counts, `{}`), 3_000_000)
	c.handle(result(feed, `{}`), 11_000_000)
	c.handle(failure("3", -32001), 11_000_000)
	_ = failed
	event := p.intervals.cut(p, []int64{0, 7}, 0)
	got, feedGot := event.Methods["social.counts"], event.Methods["feed.get"]
	if got.Calls != 1 || got.Errors != 0 || *got.P99 != 2 || feedGot.Calls != 2 || feedGot.Errors != 1 || feedGot.Dropped != 7 || math.Abs(*feedGot.Max-10) > 0.01 {
		t.Fatalf("interval %+v p99 %v / %+v max %v", got, *got.P99, feedGot, *feedGot.Max)
	}
	next := p.intervals.cut(p, []int64{0, 0}, 0)
	if next.Methods["feed.get"].Calls != 0 || next.Methods["feed.get"].P99 != nil {
		t.Fatalf("the next interval is not empty: %+v", next.Methods["feed.get"])
	}
	rep := summarize(&config{method: "social.counts", duration: time.Second}, p, []*caller{c})
	if rep.Method != "mix" || rep.Methods["feed.get"].Completed != 2 || rep.Methods["feed.get"].Errors["-32001"] != 1 || rep.Methods["social.counts"].OK != 1 {
		t.Fatalf("per method report %+v %+v", rep.Methods["feed.get"], rep.Methods["social.counts"])
	}
}

// readRequest reads one masked request frame from the client; its id.
func readRequest(conn net.Conn) (int64, error) {
	frame, err := ws.ReadFrame(conn)
	if err != nil {
		return 0, err
	}
	var request struct{ ID int64 }
	if err := json.Unmarshal(ws.UnmaskFrameInPlace(frame).Payload, &request); err != nil {
		return 0, err
	}
	return request.ID, nil
}
