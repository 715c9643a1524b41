package main

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/valyala/fastjson"
)

// churnFleet is a fleet of one churning subscriber on post:soak-0, subscribed at offset 0.
func churnFleet(t *testing.T) (*fleet, *subscriber) {
	t.Helper()
	cfg := &config{
		scenario: "churn", run: "r1", channelPrefix: "post:soak-", subscribers: 1, channels: 1,
		dialTimeout: time.Second, lifetime: time.Second, interval: time.Second,
	}
	f := newFleet(cfg)
	s := f.subs[0]
	s.ready.Store(true)
	f.handle(s, []byte(`{"jsonrpc":"2.0","id":1,"result":{"channel":"post:soak-0","offset":0,"epoch":"e1"}}`))
	if s.epoch != "e1" || s.lastOffset != 0 {
		t.Fatalf("after the first subscribe: epoch %q, offset %d", s.epoch, s.lastOffset)
	}
	return f, s
}

func publication(offset, seq int64) string {
	return fmt.Sprintf(`{"offset":%d,"data":{"run":"r1","seq":%d,"sent_ns":%d}}`, offset, seq, time.Now().UnixNano())
}

// resubscribe is the reply to a subscribe with since: recovered or not, with publications.
func resubscribe(s *subscriber, offset int64, recovered bool, publications ...string) []byte {
	s.subscribeReply = 0
	list := "[]"
	if len(publications) > 0 {
		list = "[" + publications[0]
		for _, p := range publications[1:] {
			list += "," + p
		}
		list += "]"
	}
	return []byte(fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"result":{"channel":"post:soak-0","offset":%d,"epoch":"e1","recovered":%t,"publications":%s}}`,
		offset, recovered, list))
}

// A subscriber that reconnects with since gets what it missed in the reply: each recovered
// publication counts once, as recovered (not a live delivery), and nothing is a gap.
func TestARecoveredResubscribeFillsTheGap(t *testing.T) {
	f, s := churnFleet(t)
	f.handle(s, []byte(pub("post:soak-0", 1, 0, "r1")))
	f.handle(s, resubscribe(s, 3, true, publication(2, 1), publication(3, 2)))
	f.handle(s, []byte(pub("post:soak-0", 4, 3, "r1")))
	if s.unique.Load() != 4 || s.recovered != 2 || s.offsetGaps != 0 || s.recoveryFailures != 0 || s.lastOffset != 4 {
		t.Fatalf("unique %d recovered %d gaps %d failures %d last %d; want 4 2 0 0 4",
			s.unique.Load(), s.recovered, s.offsetGaps, s.recoveryFailures, s.lastOffset)
	}
	if lost, _ := missing([]uint64{0b1111}, s.seen); lost != 0 {
		t.Fatalf("%d lost", lost)
	}
	if sh := &f.shards[0]; sh.intervalPubs != 2 || sh.interval.TotalCount() != 2 {
		t.Fatalf("%d live pubs in the interval, want 2 (recovered ones are not live)", sh.intervalPubs)
	}
}

// A resubscribe answered recovered: false is a recovery failure; the position jumps to the
// reply's offset without counting a gap twice, and what was missed stays lost.
func TestAFailedRecoveryIsCountedAndItsEventsLost(t *testing.T) {
	f, s := churnFleet(t)
	f.handle(s, []byte(pub("post:soak-0", 1, 0, "r1")))
	f.handle(s, resubscribe(s, 5, false))
	f.handle(s, []byte(pub("post:soak-0", 6, 5, "r1")))
	if s.recoveryFailures != 1 || s.offsetGaps != 0 || s.lastOffset != 6 {
		t.Fatalf("failures %d gaps %d last %d; want 1 0 6", s.recoveryFailures, s.offsetGaps, s.lastOffset)
	}
	if lost, _ := missing([]uint64{0b111111}, s.seen); lost != 4 {
		t.Fatalf("%d lost, want 4 (seqs 1-4)", lost)
	}
}

// A live offset that skips, or a recovery that gives fewer publications than its reply's
// offset, is an offset gap.
func TestSkippedOffsetsAreGaps(t *testing.T) {
	f, s := churnFleet(t)
	f.handle(s, []byte(pub("post:soak-0", 1, 0, "r1")))
	f.handle(s, []byte(pub("post:soak-0", 3, 2, "r1")))
	if s.offsetGaps != 1 {
		t.Fatalf("gaps %d after offsets 1, 3; want 1", s.offsetGaps)
	}
	f.handle(s, resubscribe(s, 6, true, publication(4, 3)))
	if s.offsetGaps != 2 || s.lastOffset != 6 || f.churn.offsetGaps.Load() != 2 {
		t.Fatalf("gaps %d (fleet %d) last %d after a recovery short of offset 6; want 2 6",
			s.offsetGaps, f.churn.offsetGaps.Load(), s.lastOffset)
	}
}

// An interval event carries the interval's live deliveries, recoveries and gaps, then the
// next one starts from zero.
func TestChurnIntervalsCountSinceTheLastOne(t *testing.T) {
	f, s := churnFleet(t)
	p, err := newProducer(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.handle(s, []byte(pub("post:soak-0", 1, 0, "r1")))
	f.handle(s, resubscribe(s, 2, true, publication(2, 1)))
	p.accept([]event{{channel: 0, seq: 0}}, []bool{true}, time.Now().UnixNano(), nil)
	first := f.churn.cut(p)
	if first.Deliveries.Count != 1 || first.Recovered != 1 || first.Publish.Events != 1 || first.Publish.Count != 1 || first.OffsetGaps != 0 {
		t.Fatalf("first interval %+v", first)
	}
	second := f.churn.cut(p)
	if second.Deliveries.Count != 0 || second.Recovered != 0 || second.Publish.Events != 0 || second.Deliveries.P99 != nil {
		t.Fatalf("second interval %+v", second)
	}
}

// A churn producer's event is a comment on its channel's post, by one of 100 authors,
// carrying the run, the seq and the send time.
func TestChurnEventsAreComments(t *testing.T) {
	cfg := &config{scenario: "churn", run: "r1", channelPrefix: "post:soak-", channels: 3, producer: "none"}
	p, err := newProducer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	raw := p.appendData(nil, event{channel: 2, seq: 123}, 77)
	var data map[string]any
	if err := json.Unmarshal(raw, &data); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	want := map[string]any{"type": "comment", "post": "soak-2", "text": "soak", "user": "soak-author-23", "run": "r1", "seq": 123.0, "sent_ns": 77.0}
	if fmt.Sprint(data) != fmt.Sprint(want) {
		t.Fatalf("data %v, want %v", data, want)
	}
	if v, err := fastjson.ParseBytes(raw); err != nil || v.GetInt64("seq") != 123 {
		t.Fatalf("fastjson: %v", err)
	}
}
