package main

import (
	"fmt"
	"testing"
	"time"
)

func testFleet() (*fleet, *subscriber) {
	cfg := &config{run: "r1", channelPrefix: "post:bench-", subscribers: 1, channels: 1, dialTimeout: time.Second}
	f := newFleet(cfg)
	f.subs[0].ready.Store(true)
	return f, f.subs[0]
}

func pub(channel string, offset, seq int64, run string) string {
	return fmt.Sprintf(`{"jsonrpc":"2.0","method":"pub","params":{"channel":%q,"offset":%d,"data":{"run":%q,"seq":%d,"sent_ns":%d,"extra":1}}}`,
		channel, offset, run, seq, time.Now().UnixNano())
}

// A frame holding a JSON array of pubs counts each pub; a bare pub counts once.
func TestArrayAndSingleFramesAreBothCounted(t *testing.T) {
	f, s := testFleet()
	f.handle(s, []byte("["+pub("post:bench-0", 1, 0, "r1")+","+pub("post:bench-0", 2, 1, "r1")+"]"))
	f.handle(s, []byte(pub("post:bench-0", 3, 2, "r1")))
	if got := s.unique.Load(); got != 3 {
		t.Fatalf("unique = %d, want 3", got)
	}
	if s.duplicated != 0 || s.outOfOrder != 0 || s.offsetViolations != 0 {
		t.Fatalf("dup %d, out of order %d, offset violations %d; want 0", s.duplicated, s.outOfOrder, s.offsetViolations)
	}
}

// A seq seen twice is a duplicate; a lower seq (and offset) after a higher one is out of order.
func TestDuplicatesAndReorderingAreCounted(t *testing.T) {
	f, s := testFleet()
	for _, m := range []string{
		pub("post:bench-0", 1, 0, "r1"),
		pub("post:bench-0", 3, 2, "r1"),
		pub("post:bench-0", 2, 1, "r1"), // late
		pub("post:bench-0", 3, 2, "r1"), // again
	} {
		f.handle(s, []byte(m))
	}
	if s.unique.Load() != 3 || s.duplicated != 1 || s.outOfOrder != 1 || s.offsetViolations != 1 {
		t.Fatalf("unique %d dup %d ooo %d offsets %d; want 3 1 1 1", s.unique.Load(), s.duplicated, s.outOfOrder, s.offsetViolations)
	}
	lost, extra := missing([]uint64{0b1111}, s.seen)
	if lost != 1 || extra != 0 {
		t.Fatalf("lost %d extra %d; want 1 0 (seq 3 never came)", lost, extra)
	}
}

// Pubs of another run or another channel are foreign, not deliveries; a reply settles the subscribe.
func TestForeignPubsAndRepliesAreNotDeliveries(t *testing.T) {
	f, s := testFleet()
	f.handle(s, []byte(`{"jsonrpc":"2.0","id":1,"result":{"channel":"post:bench-0","offset":0,"epoch":"e"}}`))
	f.handle(s, []byte("["+pub("post:bench-0", 1, 0, "other")+","+pub("post:bench-9", 1, 0, "r1")+"]"))
	if s.subscribeReply != 1 {
		t.Fatalf("subscribe reply not seen")
	}
	if s.unique.Load() != 0 || s.foreign != 2 {
		t.Fatalf("unique %d foreign %d; want 0 2", s.unique.Load(), s.foreign)
	}
}

// Latencies are recorded only for events stamped inside the window.
func TestOnlyEventsSentInTheWindowAreMeasured(t *testing.T) {
	f, s := testFleet()
	now := time.Now().UnixNano()
	f.setWindow(now-int64(time.Minute), now+int64(time.Minute))
	f.handle(s, []byte(pub("post:bench-0", 1, 0, "r1")))
	f.setWindow(now+int64(time.Minute), now+2*int64(time.Minute))
	f.handle(s, []byte(pub("post:bench-0", 2, 1, "r1")))
	d, latency, frames := f.deliveries(&producerReport{accepted: [][]uint64{{0b11}}}, time.Second)
	if d.InWindow != 1 || latency == nil || latency.Count != 1 || frames.Total != 2 {
		t.Fatalf("in window %d, latency %+v, frames %+v; want 1 measured of 2 frames", d.InWindow, latency, frames)
	}
	if d.Lost != 0 || d.Expected != 2 || d.Received != 2 {
		t.Fatalf("deliveries %+v", d)
	}
}
