package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// testCaller is a caller without a connection: its ledger, tally and plan, for handle().
func testCaller(t *testing.T, record bool, params ...string) *caller {
	t.Helper()
	lines := make([][]byte, len(params))
	for i, object := range params {
		lines[i] = []byte(object)
	}
	p := newPlan("social.counts", lines, 4, record)
	p.window.set(math.MinInt64, math.MaxInt64)
	return newCaller(0, nil, bufio.NewReader(bytes.NewReader(nil)), p)
}

// open writes a call as the writer would: it takes a room, then opens the call.
func (c *caller) openForTest(t *testing.T, sentNs int64, line int32) int64 {
	t.Helper()
	select {
	case <-c.free:
	default:
		t.Fatalf("no room: %d calls in flight already", c.ledger.inFlight())
	}
	return c.ledger.open(sentNs, line)
}

func result(id int64, body string) []byte {
	return []byte(fmt.Sprintf(`{"jsonrpc":"2.0","result":%s,"id":%d}`, body, id))
}

func failure(id string, code int) []byte {
	return []byte(fmt.Sprintf(`{"jsonrpc":"2.0","error":{"code":%d,"message":"m","data":{}},"id":%s}`, code, id))
}

// Replies arriving in another order than their requests each settle their own call, by id,
// with the latency of that call, and give its room back to the writer.
func TestRepliesInAnyOrderAreMatchedByID(t *testing.T) {
	c := testCaller(t, false, `{"user":"1"}`)
	first := c.openForTest(t, 1_000_000, 0)
	second := c.openForTest(t, 2_000_000, 0)
	third := c.openForTest(t, 3_000_000, 0)
	c.handle(result(third, `{"following":1,"followers":2}`), 5_000_000)
	c.handle(result(first, `{"following":1,"followers":2}`), 9_000_000)
	c.handle(result(second, `{"following":1,"followers":2}`), 9_000_000)
	tl := c.tally
	if tl.replies != 3 || tl.ok != 3 || tl.completed != 3 || tl.unmatched != 0 || c.ledger.inFlight() != 0 {
		t.Fatalf("replies %d ok %d completed %d unmatched %d in flight %d; want 3 3 3 0 0",
			tl.replies, tl.ok, tl.completed, tl.unmatched, c.ledger.inFlight())
	}
	if len(c.free) != c.plan.depth {
		t.Fatalf("%d rooms free, want all %d", len(c.free), c.plan.depth)
	}
	// 2, 7 and 8 ms: min 2, max 8.
	if tl.latency.Min() != 2000 || tl.latency.Max() < 7990 || tl.latency.Max() > 8010 {
		t.Fatalf("latency min %d max %d µs; want 2000 and 8000", tl.latency.Min(), tl.latency.Max())
	}
}

// An error reply settles its call and counts under its code; a reply to no call in flight
// (an unknown id, an id answered already, a null id) is unmatched and settles nothing.
func TestErrorsCountByCodeAndStrayRepliesAreUnmatched(t *testing.T) {
	c := testCaller(t, false, `{"user":"1"}`)
	a := c.openForTest(t, 0, 0)
	b := c.openForTest(t, 0, 0)
	c.handle(failure(fmt.Sprint(a), -32602), 1)
	c.handle(result(b, `{}`), 1)
	c.handle(result(b, `{}`), 1)         // again
	c.handle(result(99, `{}`), 1)        // never sent
	c.handle(failure("null", -32700), 1) // the server could not read a frame
	c.handle([]byte(`{"jsonrpc":"2.0","method":"pub","params":{}}`), 1)
	c.handle([]byte(`{"jsonrpc":`), 1)
	tl := c.tally
	if tl.replies != 2 || tl.ok != 1 || tl.errors[-32602] != 1 || tl.windowErrors[-32602] != 1 {
		t.Fatalf("replies %d ok %d errors %v window errors %v; want 2 1 {-32602: 1}", tl.replies, tl.ok, tl.errors, tl.windowErrors)
	}
	if tl.unmatched != 3 || tl.notifications != 1 || tl.malformed != 1 {
		t.Fatalf("unmatched %d notifications %d malformed %d; want 3 1 1", tl.unmatched, tl.notifications, tl.malformed)
	}
	if !strings.Contains(tl.firstError, "-32602") {
		t.Fatalf("first error %q, want the -32602 reply", tl.firstError)
	}
}

// A batch reply (a JSON array) settles each of its items.
func TestABatchReplySettlesEachItem(t *testing.T) {
	c := testCaller(t, false, `{"user":"1"}`)
	a, b := c.openForTest(t, 0, 0), c.openForTest(t, 0, 0)
	c.handle([]byte("["+string(result(b, `{}`))+","+string(failure(fmt.Sprint(a), -32003))+"]"), 1)
	if c.tally.replies != 2 || c.tally.ok != 1 || c.tally.errors[-32003] != 1 || c.ledger.inFlight() != 0 {
		t.Fatalf("tally %+v in flight %d", c.tally, c.ledger.inFlight())
	}
}

// Only replies that arrive inside the window are completed calls with a latency; the
// others are still replies of the run.
func TestOnlyRepliesInsideTheWindowAreCompleted(t *testing.T) {
	c := testCaller(t, false, `{"user":"1"}`)
	c.plan.window.set(100, 200)
	for _, at := range []int64{50, 100, 199, 200} {
		c.handle(result(c.openForTest(t, 0, 0), `{}`), at)
	}
	tl := c.tally
	if tl.replies != 4 || tl.completed != 2 || tl.windowOK != 2 || tl.latency.TotalCount() != 2 {
		t.Fatalf("replies %d completed %d window ok %d measured %d; want 4 2 2 2",
			tl.replies, tl.completed, tl.windowOK, tl.latency.TotalCount())
	}
}

// With --record-results, each params line keeps its distinct results and how many calls
// gave them, summed over connections; totals hold sent = replies + unanswered.
func TestResultsAreRecordedPerParamsLineAcrossConnections(t *testing.T) {
	one := testCaller(t, true, `{"user":"1"}`, `{"user":"2"}`)
	two := newCaller(1, nil, bufio.NewReader(bytes.NewReader(nil)), one.plan)
	one.handle(result(one.openForTest(t, 0, 0), `{"following":1,"followers":0}`), 1)
	one.handle(result(one.openForTest(t, 0, 1), `{"following":0,"followers":1}`), 1)
	two.handle(result(two.openForTest(t, 0, 1), `{"following":0, "followers":1}`), 1)
	two.handle(result(two.openForTest(t, 0, 1), `{"following":5,"followers":5}`), 1)
	two.openForTest(t, 0, 0) // never answered
	cfg := &config{method: "social.counts", params: one.plan.params, duration: time.Second, connections: 2, depth: 4}
	rep := summarize(cfg, one.plan, []*caller{one, two})
	if rep.Totals.Sent != 5 || rep.Totals.Replies != 4 || rep.Totals.Unanswered != 1 || rep.Completed != 4 {
		t.Fatalf("totals %+v completed %d; want sent 5 = 4 replies + 1 unanswered", rep.Totals, rep.Completed)
	}
	got, _ := json.Marshal(rep.Results)
	want := `[{"line":0,"params":{"user":"1"},"calls":1,"distinct":[{"following":1,"followers":0}],"more":0},` +
		`{"line":1,"params":{"user":"2"},"calls":3,"distinct":[{"following":0,"followers":1},{"following":5,"followers":5}],"more":0}]`
	if string(got) != want {
		t.Fatalf("results\n%s\nwant\n%s", got, want)
	}
}

// The request frames are masked text frames that a WebSocket reader decodes to the
// JSON-RPC request of the call: method, that line's params, the id; at every length form.
func TestRequestFramesDecodeToTheirRequests(t *testing.T) {
	long := strings.Repeat("x", 70_000)
	p := newPlan("social.counts", [][]byte{[]byte(`{"user":"1"}`), []byte(`{"user":"` + long[:200] + `"}`), []byte(`{"user":"` + long + `"}`)}, 1, false)
	var burst []byte
	for line := int32(0); line < 3; line++ {
		burst = p.appendRequest(burst, line, 1234567+int64(line))
	}
	r := bytes.NewReader(burst)
	for line := 0; line < 3; line++ {
		frame, err := ws.ReadFrame(r)
		if err != nil {
			t.Fatalf("line %d: %v", line, err)
		}
		if !frame.Header.Masked || !frame.Header.Fin || frame.Header.OpCode != ws.OpText {
			t.Fatalf("line %d: header %+v", line, frame.Header)
		}
		frame = ws.UnmaskFrameInPlace(frame)
		var request struct {
			JSONRPC string          `json:"jsonrpc"`
			ID      int64           `json:"id"`
			Method  string          `json:"method"`
			Params  json.RawMessage `json:"params"`
		}
		if err := json.Unmarshal(frame.Payload, &request); err != nil {
			t.Fatalf("line %d: %v: %.80s", line, err, frame.Payload)
		}
		if request.JSONRPC != "2.0" || request.Method != "social.counts" || request.ID != 1234567+int64(line) ||
			string(request.Params) != string(p.params[line]) {
			t.Fatalf("line %d: %.120s", line, frame.Payload)
		}
	}
	if r.Len() != 0 {
		t.Fatalf("%d bytes left after the frames", r.Len())
	}
}

// The params file gives one compact object per non-blank line; anything else is refused
// with its line number.
func TestParamsFileIsOneObjectPerLine(t *testing.T) {
	params, err := parseParams([]byte("{\"user\": \"1\"}\n\n{\"user\":\"2\", \"x\": [1, 2]}\n"))
	if err != nil || len(params) != 2 || string(params[0]) != `{"user":"1"}` || string(params[1]) != `{"user":"2","x":[1,2]}` {
		t.Fatalf("params %q, err %v", params, err)
	}
	for _, bad := range []string{"{\"user\":\"1\"}\n[1]\n", "{\"user\":\n", "\n\n"} {
		if _, err := parseParams([]byte(bad)); err == nil {
			t.Fatalf("%q accepted", bad)
		}
	}
	if _, err := parseParams([]byte("{}\n[1]\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("error %v does not name line 2", err)
	}
}

// Against a server that answers only once `depth` calls wait, last first, the writer keeps
// exactly `depth` calls in flight (never more) and the reader matches every reply.
func TestTheWriterKeepsDepthCallsInFlight(t *testing.T) {
	const depth, rounds = 8, 50
	client, server := net.Pipe()
	p := newPlan("social.counts", [][]byte{[]byte(`{"user":"1"}`), []byte(`{"user":"2"}`)}, depth, true)
	p.window.set(math.MinInt64, math.MaxInt64)
	c := newCaller(0, client, nil, p)

	served := make(chan error, 1)
	go func() {
		served <- fakeServer(server, depth, rounds)
	}()
	readerDone := make(chan struct{})
	go func() {
		c.read()
		close(readerDone)
	}()
	stop := make(chan struct{})
	writerDone := make(chan error, 1)
	go func() { writerDone <- c.write(stop) }()

	if err := <-served; err != nil {
		t.Fatal(err)
	}
	// After the last round the writer fills the depth once more, and no further: the
	// fake server reads those calls and answers none.
	deadline := time.Now().Add(5 * time.Second)
	for sent, _ := c.ledger.counts(); sent < depth*(rounds+1); sent, _ = c.ledger.counts() {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls sent, want %d", sent, depth*(rounds+1))
		}
		time.Sleep(time.Millisecond)
	}
	close(stop)
	p.stopping.Store(true)
	client.Close()
	<-readerDone
	<-writerDone
	sent, inFlight := c.ledger.counts()
	if c.tally.replies != depth*rounds || c.tally.unmatched != 0 || sent != c.tally.replies+inFlight || inFlight != depth {
		t.Fatalf("replies %d unmatched %d sent %d in flight %d; want %d 0 = replies + %d",
			c.tally.replies, c.tally.unmatched, sent, inFlight, depth*rounds, depth)
	}
	var calls int64
	for line := range c.tally.results {
		calls += c.tally.results[line].distinct[`{"n":1}`]
	}
	if calls != depth*rounds {
		t.Fatalf("%d results recorded, want %d", calls, depth*rounds)
	}
}

// fakeServer reads requests until depth are unanswered, then answers them all, last
// first, in one write; rounds times. It then reads on until the pipe closes. In the first
// rounds it checks that no request beyond depth comes (20 ms).
func fakeServer(conn net.Conn, depth, rounds int) error {
	var waiting []int64
	for round := 0; round < rounds; round++ {
		for len(waiting) < depth {
			frame, err := ws.ReadFrame(conn)
			if err != nil {
				return err
			}
			var request struct{ ID int64 }
			if err := json.Unmarshal(ws.UnmaskFrameInPlace(frame).Payload, &request); err != nil {
				return err
			}
			waiting = append(waiting, request.ID)
		}
		if round < 3 {
			_ = conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			if _, err := ws.ReadFrame(conn); !errors.Is(err, os.ErrDeadlineExceeded) {
				return fmt.Errorf("round %d: a request beyond the depth of %d (%v)", round, depth, err)
			}
			_ = conn.SetReadDeadline(time.Time{})
		}
		var replies []byte
		for i := len(waiting) - 1; i >= 0; i-- {
			frame, _ := ws.CompileFrame(ws.NewTextFrame(result(waiting[i], `{"n":1}`)))
			replies = append(replies, frame...)
		}
		waiting = waiting[:0]
		if _, err := conn.Write(replies); err != nil {
			return err
		}
	}
	go func() {
		for {
			if _, err := ws.ReadFrame(conn); err != nil {
				return
			}
		}
	}()
	return nil
}
