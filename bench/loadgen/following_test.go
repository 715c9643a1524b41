package main

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// alice and bob follow carol; bob also follows alice and himself; dave follows nobody we publish.
var testFollows = map[string][]string{
	"alice": {"carol"},
	"bob":   {"carol", "alice", "bob", "carol"},
	"dave":  {"erin"},
}

func testGraph(t *testing.T) *followGraph {
	t.Helper()
	g, err := newFollowGraph(testFollows, []string{"hn:1", "hn:2"})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// The graph indexes subscribers and authors sorted, drops self-follows and repeats, and inverts the lists.
func TestFollowGraphInvertsTheFollowListsWithoutSelfFollows(t *testing.T) {
	g := testGraph(t)
	if !reflect.DeepEqual(g.users, []string{"alice", "bob", "dave"}) {
		t.Fatalf("users %v", g.users)
	}
	if !reflect.DeepEqual(g.authors, []string{"alice", "carol", "erin"}) {
		t.Fatalf("authors %v", g.authors)
	}
	// followers: alice <- bob; carol <- alice, bob; erin <- dave.
	want := [][]int32{{1}, {0, 1}, {2}}
	if !reflect.DeepEqual(g.followers, want) {
		t.Fatalf("followers %v, want %v", g.followers, want)
	}
	// per subscriber: alice wants carol's; bob carol's and alice's; dave erin's.
	if got := g.wanted([]int64{5, 7, 0}); !reflect.DeepEqual(got, []int64{7, 12, 0}) {
		t.Fatalf("wanted %v, want [7 12 0]", got)
	}
	// carol (2 followers) is drawn 2/4, alice and erin 1/4: 2*2+1+1 over 4.
	if got := g.deliveriesPerActivity(); got != 1.5 {
		t.Fatalf("deliveries per activity %v, want 1.5", got)
	}
}

// Authors are drawn in proportion to their followers among the subscribers.
func TestAuthorsAreDrawnByTheirFollowers(t *testing.T) {
	g := testGraph(t)
	r := rand.New(rand.NewSource(1))
	counts := make([]int, len(g.authors))
	const draws = 100_000
	for i := 0; i < draws; i++ {
		counts[g.draw(r)]++
	}
	for a, share := range []float64{0.25, 0.5, 0.25} {
		if got := float64(counts[a]) / draws; got < share-0.01 || got > share+0.01 {
			t.Fatalf("author %s drawn %.3f of the time, want %.2f", g.authors[a], got, share)
		}
	}
}

func followingFleet(t *testing.T) *fleet {
	t.Helper()
	cfg := &config{run: "r1", subscribers: 3, channels: 2, dialTimeout: time.Second, graph: testGraph(t)}
	f := newFleet(cfg)
	for _, s := range f.subs {
		s.ready.Store(true)
	}
	return f
}

func followingPubFrame(user string, offset, seq int64, author, run string) string {
	return fmt.Sprintf(`{"jsonrpc":"2.0","method":"pub","params":{"channel":"following:%s","offset":%d,`+
		`"data":{"type":"comment","user":%q,"post":"hn:1","run":%q,"seq":%d,"sent_ns":%d,"author":{"id":%q}}}}`,
		user, offset, author, run, seq, time.Now().UnixNano(), author)
}

// Subscriber j of a following run reads following:<user j> with user j's token.
func TestFollowingSubscribersAreTheUsers(t *testing.T) {
	f := followingFleet(t)
	if string(f.subs[1].name) != "following:bob" || f.subs[1].user != "bob" {
		t.Fatalf("subscriber 1: %s as %s", f.subs[1].name, f.subs[1].user)
	}
}

// Offsets must follow the subscribe reply's one by one: a skipped offset is a gap, a repeated one a violation.
func TestFollowingOffsetsMustBeConsecutive(t *testing.T) {
	f := followingFleet(t)
	s := f.subs[1] // bob
	f.handle(s, []byte(`{"jsonrpc":"2.0","id":1,"result":{"channel":"following:bob","offset":4,"epoch":"e"}}`))
	for _, m := range []string{
		followingPubFrame("bob", 5, 0, "carol", "r1"),
		followingPubFrame("bob", 6, 1, "alice", "other"), // another run's: takes an offset, not a delivery
		followingPubFrame("bob", 7, 2, "carol", "r1"),
		followingPubFrame("bob", 9, 3, "alice", "r1"), // 8 skipped
		followingPubFrame("bob", 9, 4, "carol", "r1"), // 9 again
	} {
		f.handle(s, []byte(m))
	}
	if s.unique.Load() != 4 || s.foreign != 1 || s.offsetGaps != 1 || s.offsetViolations != 1 || s.outOfOrder != 0 {
		t.Fatalf("unique %d foreign %d gaps %d violations %d ooo %d; want 4 1 1 1 0",
			s.unique.Load(), s.foreign, s.offsetGaps, s.offsetViolations, s.outOfOrder)
	}
}

// Each activity is expected by its author's followers but the author; what one misses is lost, what one gets beyond is unexpected.
func TestFollowingLossesAreCountedPerRecipient(t *testing.T) {
	f := followingFleet(t)
	alice, bob, dave := f.subs[0], f.subs[1], f.subs[2]
	// seq 0 by carol (to alice, bob), 1 by alice (to bob), 2 by erin (to dave).
	produced := &producerReport{authorOf: []int32{1, 0, 2}, perAuthor: []int64{1, 1, 1}}
	for seq := int64(0); seq < 3; seq++ {
		setBit(&produced.all, seq)
	}
	f.handle(alice, []byte(followingPubFrame("alice", 1, 0, "carol", "r1")))
	f.handle(alice, []byte(followingPubFrame("alice", 2, 1, "alice", "r1"))) // her own: unexpected
	f.handle(bob, []byte(followingPubFrame("bob", 1, 1, "alice", "r1")))     // carol's seq 0 never came
	f.handle(bob, []byte(followingPubFrame("bob", 1, 1, "alice", "r1")))     // again
	f.handle(dave, []byte(followingPubFrame("dave", 1, 2, "erin", "r1")))
	if want := f.wanted(produced); !reflect.DeepEqual(want, []int64{1, 2, 1}) {
		t.Fatalf("wanted %v, want [1 2 1]", want)
	}
	d, _, _ := f.deliveries(produced, time.Second)
	if d.Expected != 4 || d.Received != 4 || d.Lost != 1 || d.Unexpected != 1 || d.Duplicated != 1 {
		t.Fatalf("deliveries %+v; want expected 4 received 4 lost 1 unexpected 1 dup 1", d)
	}
	if bob.outOfOrder != 0 || bob.offsetViolations != 1 {
		t.Fatalf("bob: ooo %d violations %d; want 0 1 (the repeat's offset)", bob.outOfOrder, bob.offsetViolations)
	}
}

// An activity's data is a comment by its author on its post, with the run, seq and send time.
func TestActivitiesAreComments(t *testing.T) {
	g := testGraph(t)
	raw := g.appendActivity(nil, "r1", event{channel: 1, seq: 7, author: 1}, 123)
	var data map[string]any
	if err := json.Unmarshal(raw, &data); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	want := map[string]any{"type": "comment", "user": "carol", "post": "hn:2", "run": "r1", "seq": 7.0, "sent_ns": 123.0}
	if !reflect.DeepEqual(data, want) {
		t.Fatalf("data %v, want %v", data, want)
	}
}

// The follows file sets the subscribers and posts; a disagreeing --subscribers is refused; one HTTP worker.
func TestFollowingFlagsComeFromTheFollowsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "follows.json")
	raw, _ := json.Marshal(map[string]any{"follows": testFollows, "posts": []string{"hn:1", "hn:2"}})
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := parseFlags([]string{"--scenario", "following", "--follows", path, "--secret", "s", "--producer", "http"})
	if err != nil {
		t.Fatal(err)
	}
	if c.subscribers != 3 || c.channels != 2 || c.httpInflight != 1 || c.rate != 2_000 || c.graph == nil {
		t.Fatalf("subscribers %d channels %d inflight %d rate %d", c.subscribers, c.channels, c.httpInflight, c.rate)
	}
	if _, err := parseFlags([]string{"--scenario", "following", "--follows", path, "--secret", "s", "--subscribers", "5"}); err == nil {
		t.Fatal("--subscribers 5 with 3 users was accepted")
	}
	if _, err := parseFlags([]string{"--scenario", "following", "--secret", "s"}); err == nil {
		t.Fatal("following without --follows was accepted")
	}
}

// A subscriber that never got in expects nothing and loses nothing; losses are named by follow.
func TestFollowingLossesCountOnlySubscribers(t *testing.T) {
	f := followingFleet(t)
	f.subs[2].ready.Store(false) // dave never subscribed
	produced := &producerReport{authorOf: []int32{1, 2}, perAuthor: []int64{0, 1, 1}}
	setBit(&produced.all, 0) // carol's, to alice and bob
	setBit(&produced.all, 1) // erin's, to dave
	f.handle(f.subs[0], []byte(followingPubFrame("alice", 1, 0, "carol", "r1")))
	d, _, _ := f.deliveries(produced, time.Second)
	if d.Expected != 2 || d.Lost != 1 || d.LosingSubscribers != 1 || d.SilentSubscribers != 1 {
		t.Fatalf("deliveries %+v; want expected 2 lost 1 (bob, silent)", d)
	}
	if !reflect.DeepEqual(d.LostPairs, map[string]int64{"bob <- carol": 1}) {
		t.Fatalf("lost pairs %v", d.LostPairs)
	}
}
