package main

// The following scenario: each subscriber is a real user of the demo world
// reading following:<user>, the channel that carries every activity of the
// users they follow. The producer publishes comments
//
//	{"type":"comment","user":A,"post":P,"run":..,"seq":..,"sent_ns":..} on post:<P>
//
// by authors A drawn among the users the subscribers follow, each with a
// weight equal to how many subscribers follow them (so an activity reaches
// as many subscribers as a real one would), on posts P taken round-robin.
// seq numbers the activities of the run from 0, whatever their author.
//
// The server delivers an activity of A to following:<f> for every listening
// follower f of A but A, numbered with that channel's own offsets (1, 2, 3,
// ...). So for each activity the loadgen knows its recipients (the
// subscribers following A, minus A) and checks, per following:<f> channel:
// every activity of a followee arrived once (lost, duplicated), nothing else
// arrived (unexpected), seqs came in the producer's order (out_of_order: the
// producer is one ordered sequence, see producer.go) and offsets are
// consecutive from the subscribe reply's (offset gaps and repeats).
//
// The follow lists come from the driver (bench/following.py) in a JSON file:
//
//	{"follows": {"<user>": ["<followee>", ...], ...}, "posts": ["<post id>", ...]}

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"math/rand"
	"os"
	"sort"
	"strconv"
)

const followingPrefix = "following:"

// followGraph is the run's follow lists, indexed for the producer and the checks.
type followGraph struct {
	users      []string  // subscriber j is users[j] (sorted)
	follows    [][]int32 // per subscriber: the authors it follows, itself excluded
	authors    []string  // every user some subscriber follows (sorted)
	authorJSON [][]byte  // authors[a] as a JSON string
	followers  [][]int32 // per author: the subscribers following it, itself excluded
	cumulative []int64   // running sum of len(followers): the weighted draw
	posts      []string  // the posts commented on
	postJSON   [][]byte  // posts[i] as a JSON string
}

type followsFile struct {
	Follows map[string][]string `json:"follows"`
	Posts   []string            `json:"posts"`
}

// loadFollows reads c.followsFile into c.graph; the subscribers and
// channels are its users and posts (flags that disagree are an error).
func (c *config) loadFollows(subscribersSet, channelsSet bool) error {
	if c.followsFile == "" {
		return errors.New("--scenario following needs --follows FILE")
	}
	raw, err := os.ReadFile(c.followsFile)
	if err != nil {
		return fmt.Errorf("--follows: %w", err)
	}
	var file followsFile
	if err := json.Unmarshal(raw, &file); err != nil {
		return fmt.Errorf("--follows %s: %w", c.followsFile, err)
	}
	g, err := newFollowGraph(file.Follows, file.Posts)
	if err != nil {
		return fmt.Errorf("--follows %s: %w", c.followsFile, err)
	}
	if subscribersSet && c.subscribers != len(g.users) {
		return fmt.Errorf("--subscribers %d but --follows holds %d users", c.subscribers, len(g.users))
	}
	if channelsSet && c.channels != len(g.posts) {
		return fmt.Errorf("--channels %d but --follows holds %d posts", c.channels, len(g.posts))
	}
	c.graph, c.subscribers, c.channels = g, len(g.users), len(g.posts)
	return nil
}

// newFollowGraph indexes follow lists (user -> followees) and the posts.
func newFollowGraph(follows map[string][]string, posts []string) (*followGraph, error) {
	if len(follows) == 0 || len(posts) == 0 {
		return nil, errors.New("no users or no posts")
	}
	g := &followGraph{posts: posts}
	for user := range follows {
		g.users = append(g.users, user)
	}
	sort.Strings(g.users)
	followed := map[string]bool{}
	for _, user := range g.users {
		for _, author := range follows[user] {
			if author != user {
				followed[author] = true
			}
		}
	}
	for author := range followed {
		g.authors = append(g.authors, author)
	}
	sort.Strings(g.authors)
	index := make(map[string]int32, len(g.authors))
	for a, author := range g.authors {
		index[author] = int32(a)
		g.authorJSON = append(g.authorJSON, jsonString(author))
	}
	g.follows = make([][]int32, len(g.users))
	g.followers = make([][]int32, len(g.authors))
	for j, user := range g.users {
		seen := map[int32]bool{}
		for _, author := range follows[user] {
			a, ok := index[author]
			if !ok || seen[a] { // itself, or listed twice
				continue
			}
			seen[a] = true
			g.follows[j] = append(g.follows[j], a)
			g.followers[a] = append(g.followers[a], int32(j))
		}
	}
	if len(g.authors) == 0 {
		return nil, errors.New("the users follow nobody")
	}
	g.cumulative = make([]int64, len(g.authors))
	var total int64
	for a, followers := range g.followers {
		total += int64(len(followers))
		g.cumulative[a] = total
	}
	for _, post := range posts {
		g.postJSON = append(g.postJSON, jsonString(post))
	}
	return g, nil
}

// draw picks an author, each with probability proportional to its followers among the subscribers.
func (g *followGraph) draw(r *rand.Rand) int32 {
	total := g.cumulative[len(g.cumulative)-1]
	x := r.Int63n(total)
	return int32(sort.Search(len(g.cumulative), func(a int) bool { return g.cumulative[a] > x }))
}

// deliveriesPerActivity is the mean recipients of an activity under the weighted draw.
func (g *followGraph) deliveriesPerActivity() float64 {
	var squares int64
	for _, followers := range g.followers {
		squares += int64(len(followers)) * int64(len(followers))
	}
	return float64(squares) / float64(g.cumulative[len(g.cumulative)-1])
}

// wanted is, per subscriber, the activities it should receive: those
// accepted of the authors it follows (perAuthor: accepted per author).
func (g *followGraph) wanted(perAuthor []int64) []int64 {
	want := make([]int64, len(g.users))
	for j, authors := range g.follows {
		for _, a := range authors {
			want[j] += perAuthor[a]
		}
	}
	return want
}

// lostPer counts, per subscriber, the accepted activities of its
// followees that it never received. accepted: the seqs accepted;
// authorOf: the author of each seq; seen: per subscriber, the seqs received;
// subscribed: per subscriber, whether it subscribed (if not, it expects nothing).
// pairs: how many were lost per "follower <- author" pair, the first
// maxLostPairs pairs (which follows the server missed, if it is those).
func (g *followGraph) lostPer(accepted []uint64, authorOf []int32, seen [][]uint64, subscribed []bool) (lost []int64, pairs map[string]int64) {
	lost, pairs = make([]int64, len(g.users)), map[string]int64{}
	for word, bitsOf := range accepted {
		for bitsOf != 0 {
			bit := bitsOf & -bitsOf
			bitsOf &^= bit
			seq := int64(word)*64 + int64(bits.TrailingZeros64(bit))
			a := authorOf[seq]
			for _, j := range g.followers[a] {
				if subscribed[j] && !hasBit(seen[j], seq) {
					lost[j]++
					pair := g.users[j] + " <- " + g.authors[a]
					if _, held := pairs[pair]; held || len(pairs) < maxLostPairs {
						pairs[pair]++
					}
				}
			}
		}
	}
	return lost, pairs
}

// maxLostPairs bounds the report's lost_pairs.
const maxLostPairs = 20

// perAuthor names the counts of authors who published something.
func (g *followGraph) perAuthor(counts []int64) map[string]int64 {
	named := map[string]int64{}
	for a, n := range counts {
		if n > 0 {
			named[g.authors[a]] = n
		}
	}
	return named
}

// appendActivity appends an activity's data object:
// {"type":"comment","user":..,"post":..,"run":..,"seq":..,"sent_ns":..}.
func (g *followGraph) appendActivity(buf []byte, run string, e event, sentNs int64) []byte {
	buf = append(buf, `{"type":"comment","user":`...)
	buf = append(buf, g.authorJSON[e.author]...)
	buf = append(buf, `,"post":`...)
	buf = append(buf, g.postJSON[e.channel]...)
	buf = append(buf, `,"run":"`...)
	buf = append(buf, run...)
	buf = append(buf, `","seq":`...)
	buf = strconv.AppendInt(buf, e.seq, 10)
	buf = append(buf, `,"sent_ns":`...)
	buf = strconv.AppendInt(buf, sentNs, 10)
	return append(buf, '}')
}

// jsonString is s as a JSON string.
func jsonString(s string) []byte {
	quoted, _ := json.Marshal(s) // a string always marshals
	return quoted
}
