// Package loadkit holds what Starling's native load generators share
// (bench/loadgen for realtime delivery, bench/rpcload for JSON-RPC over the
// WebSocket): latency histograms, their quantiles, the process's CPU time,
// rounding for reports, and printing the report.
package loadkit

import (
	"encoding/json"
	"math"
	"os"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds, 1 µs .. 60 s, 3 significant digits
// (the same histograms as bench/realtime.py).
const (
	LowestMicros  = 1
	HighestMicros = 60_000_000
	Digits        = 3
)

// NewHistogram is an empty latency histogram (microseconds).
func NewHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(LowestMicros, HighestMicros, Digits)
}

// Record adds one latency in microseconds, clamped to the histogram's range.
func Record(h *hdrhistogram.Histogram, micros int64) {
	if micros < LowestMicros {
		micros = LowestMicros
	} else if micros > HighestMicros {
		micros = HighestMicros
	}
	_ = h.RecordValue(micros)
}

// Latency is a histogram's count and quantiles, in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
}

// LatencyOf summarizes h (nil when it is empty).
func LatencyOf(h *hdrhistogram.Histogram) *Latency {
	if h.TotalCount() == 0 {
		return nil
	}
	ms := func(micros int64) float64 { return Round(float64(micros)/1000, 3) }
	return &Latency{
		Count: h.TotalCount(),
		P50:   ms(h.ValueAtQuantile(50)),
		P90:   ms(h.ValueAtQuantile(90)),
		P99:   ms(h.ValueAtQuantile(99)),
		P999:  ms(h.ValueAtQuantile(99.9)),
		Max:   ms(h.Max()),
	}
}

// CPUSample is this process's user and system CPU time (getrusage RUSAGE_SELF, every thread).
type CPUSample struct{ User, System time.Duration }

// CPUNow samples the process's CPU time.
func CPUNow() CPUSample {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return CPUSample{time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())}
}

// Round rounds x to digits decimals.
func Round(x float64, digits int) float64 {
	scale := math.Pow(10, float64(digits))
	return math.Round(x*scale) / scale
}

// PrintReport writes the report to stdout as indented JSON.
func PrintReport(report any) error {
	out := json.NewEncoder(os.Stdout)
	out.SetIndent("", "  ")
	return out.Encode(report)
}
