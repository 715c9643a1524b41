package main

import (
	"strings"
	"testing"
)

// The partition rule is the server's (stores.partitions.partition_of): Python's
// zlib.crc32 of the UTF-8 name, modulo the partitions; the expected values are
// what Python computes.
func TestPartitionOfMatchesPythonsCRC32(t *testing.T) {
	cases := []struct {
		name  string
		crc32 uint32 // zlib.crc32(name.encode())
		of12  int    // zlib.crc32(name.encode()) % 12
	}{
		{"post:bench-0", 859399341, 9},
		{"post:bench-1", 1144935483, 3},
		{"post:bench-199", 1089218982, 6},
		{"following:u-42", 3126546979, 7},
		{"héllo", 2654700086, 2},
		{"", 0, 0},
	}
	for _, c := range cases {
		if got := partitionOf([]byte(c.name), 12); got != c.of12 {
			t.Errorf("partitionOf(%q, 12) = %d, want %d", c.name, got, c.of12)
		}
		if got := partitionOf([]byte(c.name), 1<<31); got != int(c.crc32%(1<<31)) {
			t.Errorf("partitionOf(%q, 2^31) = %d, want crc32 %d mod 2^31", c.name, got, c.crc32)
		}
		if got := partitionOf([]byte(c.name), 1); got != 0 {
			t.Errorf("partitionOf(%q, 1) = %d, want 0", c.name, got)
		}
	}
}

// A cluster URL gives the client its seed nodes and credentials, the server's query left out.
func TestParseClusterURL(t *testing.T) {
	options, err := parseClusterURL("redis+cluster://u:p@127.0.0.1:7000,127.0.0.1:7001?partitions=6")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(options.Addrs, " ") != "127.0.0.1:7000 127.0.0.1:7001" {
		t.Errorf("addrs %v", options.Addrs)
	}
	if options.Username != "u" || options.Password != "p" || options.TLSConfig != nil {
		t.Errorf("credentials %q %q, tls %v", options.Username, options.Password, options.TLSConfig)
	}
	if _, err := parseClusterURL("redis://127.0.0.1:6379/0"); err == nil {
		t.Error("a plain redis:// URL parsed as a cluster's")
	}
}

// On a cluster URL the producer needs every partition's keys; elsewhere they are refused.
func TestClusterNeedsThePartitionKeys(t *testing.T) {
	base := []string{"--secret", "s", "--producer", "redis"}
	cluster := append(base, "--redis-url", "redis+cluster://127.0.0.1:7000")
	if _, err := parseFlags(cluster); err == nil {
		t.Error("a cluster URL without --stream-keys was accepted")
	}
	keys := []string{"--stream-keys", "e:{0.1},e:{1.0}", "--offsets-keys", "o:{0.1},o:{1.0}", "--generation-keys", "g:{0.1}"}
	if _, err := parseFlags(append(cluster, keys...)); err == nil {
		t.Error("fewer generation keys than stream keys were accepted for fcall")
	}
	keys[5] = "g:{0.1},g:{1.0}"
	cfg, err := parseFlags(append(cluster, keys...))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.redisCluster || len(cfg.streamKeys) != 2 || cfg.offsetsKeys[1] != "o:{1.0}" {
		t.Errorf("cluster %v, stream keys %v, offsets keys %v", cfg.redisCluster, cfg.streamKeys, cfg.offsetsKeys)
	}
	if _, err := parseFlags(append(base, keys...)); err == nil {
		t.Error("partition keys were accepted without a cluster URL")
	}
}
