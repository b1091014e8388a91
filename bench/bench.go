// Package bench drives a Mercure hub, herald or any other, with load
// scenarios and reports what users feel: publish→deliver latency at the
// tail, deliveries and publishes per second, and exact counts of lost,
// duplicated and out-of-order deliveries. It is `herald bench`.
//
// It speaks to the hub only through package client, so it measures any hub
// the same way. Latencies go into HDR histograms
// (github.com/HdrHistogram/hdrhistogram-go, the maintained Go port of the
// HdrHistogram reference: constant-cost recording, exact merging across
// processes through its compressed V2 encoding).
//
// A scenario is a function registered by name (Register); Run looks it up,
// fills the defaults, bounds it in time and prints its Result. Scenarios
// build on an Env: the subscriber and publisher clients, a Fleet of
// subscriber streams spread over child worker processes when one process
// may not hold them all, paced publishers and a Monitor that samples
// throughput every second for the progress line and the HTML report.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// Config is everything a run needs; zero values mean the defaults. The
// command line fills it from flags. It travels to worker processes as
// JSON, so fields that cannot (writers, loggers) are tagged out.
type Config struct {
	// Hub is the hub URL, e.g. http://127.0.0.1:3000/.well-known/mercure,
	// or several separated by commas: the nodes of one deployment, which
	// share one history. Subscribers and publishers are then spread over
	// them round-robin (subscriber i and publisher i on node i mod n), so
	// that a delivery measures publish-on-any-node to deliver-on-every-node.
	// Whatever reads one hub (metrics, resume's readers, the audience of
	// minted tokens) uses the first.
	Hub string `json:"hub"`
	// PublisherToken and SubscriberToken are sent as bearer tokens; ""
	// sends none (anonymous subscribers).
	PublisherToken  string `json:"publisher_token,omitempty"`
	SubscriberToken string `json:"subscriber_token,omitempty"`
	// Draft7 speaks the pre-standard protocol (topic=, lastEventID).
	Draft7 bool `json:"draft7,omitempty"`
	// AllowRemote lets the run target a hub that is not on loopback.
	AllowRemote bool `json:"allow_remote,omitempty"`
	// Insecure skips TLS certificate verification (self-signed test hubs).
	Insecure bool `json:"insecure,omitempty"`
	// HTTP2 subscribes and publishes over HTTP/2 (TLS, or h2c prior
	// knowledge for http:// URLs). Default HTTP/1.1, one connection per
	// subscriber.
	HTTP2 bool `json:"http2,omitempty"`
	// SourceAddrs spreads connections over 127.0.0.2…127.0.0.N+1 (default 8)
	// when the hub is on IPv4 loopback, so that no source address runs out
	// of ephemeral ports. 1 binds nothing.
	SourceAddrs int `json:"source_addrs,omitempty"`

	// Subscribers is the number of subscriber streams (fanout default 100).
	Subscribers int `json:"subscribers,omitempty"`
	// Topics is the number of topics the subscribers spread over (default 1).
	Topics int `json:"topics,omitempty"`
	// Publishers is the number of concurrent publishers (default per
	// scenario: fanout 4, publish 8, resume 64).
	Publishers int `json:"publishers,omitempty"`
	// Rate is the total publish rate in updates per second (fanout, default 100).
	Rate float64 `json:"rate,omitempty"`
	// Payload is the size of each update's data in bytes (default 100).
	Payload int `json:"payload,omitempty"`
	// Duration bounds the measured phase: publishing for fanout and
	// publish, each phase for resume (default 10s).
	Duration time.Duration `json:"duration,omitempty"`
	// Drain is how long fanout waits after the last publish for deliveries
	// still under way (default 3s); it ends early once all have arrived.
	// Resume gives up a replay that stalls this long.
	Drain time.Duration `json:"drain,omitempty"`
	// ConnectTimeout bounds opening all subscribers (default 60s).
	ConnectTimeout time.Duration `json:"connect_timeout,omitempty"`
	// ConnectConcurrency is how many subscriptions are opened at once
	// per process (default 64).
	ConnectConcurrency int `json:"connect_concurrency,omitempty"`

	// FindMax makes fanout ramp the rate by RampFactor each step until P99
	// exceeds P99Bound or anything is lost.
	FindMax bool `json:"find_max,omitempty"`
	// P99Bound is the find-max latency bound (default 100ms).
	P99Bound time.Duration `json:"p99_bound,omitempty"`
	// MaxSteps bounds the find-max ramp (default 12).
	MaxSteps int `json:"max_steps,omitempty"`
	// RampFactor multiplies the rate at each find-max step (default 1.5).
	RampFactor float64 `json:"ramp_factor,omitempty"`

	// History is the number of updates resume publishes first (default 10000).
	History int `json:"history,omitempty"`
	// Attached is the number of subscribers publish holds open on a topic
	// it does not publish to, so that publish latency can be compared with
	// and without a crowd connected.
	Attached int `json:"attached,omitempty"`
	// RestartCmd, when set, is run by resume with `sh -c` between
	// publishing and resuming; it must restart the hub at the same
	// address. The replays then measure a hub that has just started.
	RestartCmd string `json:"restart_cmd,omitempty"`

	// ServerPID is the hub's process, sampled from /proc by idle, churn
	// and slow (0: none).
	ServerPID int `json:"server_pid,omitempty"`
	// MetricsURL is the hub's Prometheus text endpoint for goroutines,
	// heap and connections; "" means the hub's origin + /metrics, used
	// only when it answers; "off" reads none.
	MetricsURL string `json:"metrics_url,omitempty"`
	// ChurnRate is churn's new connections per second (default 100).
	ChurnRate float64 `json:"churn_rate,omitempty"`
	// Settle is how long churn watches the server return to its baseline
	// (default 60s), and idle waits for it after closing (default 10s).
	Settle time.Duration `json:"settle,omitempty"`
	// SlowFraction of slow's subscribers read slowly (default 0.1), as
	// SlowMode says: "stall" never reads, "slow" pauses SlowDelay (default
	// 100ms) after every event.
	SlowFraction float64       `json:"slow_fraction,omitempty"`
	SlowMode     string        `json:"slow_mode,omitempty"`
	SlowDelay    time.Duration `json:"slow_delay,omitempty"`

	// Patterns adds this many URL patterns (match_urlpattern), the same
	// for every subscriber and matching none of the published topics, to
	// each subscription of the fleet: what many subscribers sharing their
	// patterns cost (idle, fanout).
	Patterns int `json:"patterns,omitempty"`
	// FloodConns and FloodPatterns are flood's crowd: connections that
	// each subscribe with their own distinct URL patterns (default 100
	// connections of 64 patterns).
	FloodConns    int `json:"flood_conns,omitempty"`
	FloodPatterns int `json:"flood_patterns,omitempty"`
	// StormConns is the number of connection attempts of storm's storm
	// (default 30,000), spread evenly over StormWindow (default 3s) and
	// made by StormWorkers child processes: 0 decides from the open-files
	// limit (at least one, so that the storm does not disturb the
	// publishers' timing); negative makes them in this process.
	StormConns   int           `json:"storm_conns,omitempty"`
	StormWindow  time.Duration `json:"storm_window,omitempty"`
	StormWorkers int           `json:"storm_workers,omitempty"`

	// Workers puts the subscribers in this many child processes. 0
	// decides: as many as the open-files limit requires, and one from
	// 1,000 subscribers so that they do not disturb the publishers'
	// timing. Negative keeps them in this process when the limit allows.
	Workers int `json:"workers,omitempty"`
	// WorkerCommand is the command that starts a worker: it must end up in
	// Worker with its stdin and stdout. Default: this executable with
	// "bench --worker", which is right only for herald itself; other
	// programs set it (tests re-execute the test binary).
	WorkerCommand []string `json:"-"`
	// WorkerEnv is added to the workers' environment.
	WorkerEnv []string `json:"-"`

	// JSON prints one JSON object instead of the table.
	JSON bool `json:"-"`
	// Report writes a self-contained HTML page to this file.
	Report string `json:"-"`
	// Progress receives a live progress line every second (a terminal);
	// nil shows none.
	Progress io.Writer `json:"-"`
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger `json:"-"`
}

// Percentiles is a latency distribution summary in milliseconds.
type Percentiles struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
}

// Quantile is one point of a latency distribution: Percentile in [0, 100].
type Quantile struct {
	Percentile float64 `json:"percentile"`
	Ms         float64 `json:"ms"`
}

// Sample is one second of a run, for the progress line and the report.
type Sample struct {
	T              float64 `json:"t_s"`
	Open           int64   `json:"open"`
	DeliveriesPerS float64 `json:"deliveries_per_s"`
	PublishesPerS  float64 `json:"publishes_per_s"`
	P99Ms          float64 `json:"p99_ms"` // deliveries of that second
}

// Step is one rate of a find-max ramp.
type Step struct {
	Rate           float64 `json:"rate"`
	PublishesPerS  float64 `json:"publishes_per_s"`
	DeliveriesPerS float64 `json:"deliveries_per_s"`
	P99Ms          float64 `json:"p99_ms"`
	Lost           int64   `json:"lost"`
	Duplicates     int64   `json:"duplicates"`
	OutOfOrder     int64   `json:"out_of_order"`
	OK             bool    `json:"ok"`
	Why            string  `json:"why,omitempty"` // why the step failed
}

// ResumeCase is one resume of the resume scenario.
type ResumeCase struct {
	Name string `json:"name"` // early, late, unknown
	// From is the Last-Event-ID sent; Position its index in the history
	// (-1 for the unknown id).
	From     string `json:"from"`
	Position int    `json:"position"`
	// ResumedFrom is the Mercure-Last-Event-ID the hub answered.
	ResumedFrom string `json:"resumed_from"`
	// HeadersMs is the time to the response headers, FirstEventMs to the
	// first event (0 when none was expected or none came).
	HeadersMs    float64 `json:"headers_ms"`
	FirstEventMs float64 `json:"first_event_ms"`
	Expected     int64   `json:"expected"`
	Received     int64   `json:"received"`
	EventsPerS   float64 `json:"events_per_s"`
	Lost         int64   `json:"lost"`
	Duplicates   int64   `json:"duplicates"`
	OutOfOrder   int64   `json:"out_of_order"`
	// Unexpected counts events whose id is not in the replayed range.
	Unexpected int64 `json:"unexpected"`
	Reconnects int64 `json:"reconnects"`
	OK         bool  `json:"ok"`
}

// Result is what a run measured. Zero fields are not measured by the
// scenario (server_rss_per_conn_kb needs --server-pid, where supported).
type Result struct {
	Scenario    string `json:"scenario"`
	Hub         string `json:"hub"`
	Subscribers int    `json:"subscribers"`
	Topics      int    `json:"topics,omitempty"`
	Publishers  int    `json:"publishers,omitempty"`
	// Rate is the target publish rate; PayloadBytes the size of each
	// update's data.
	Rate         float64 `json:"rate,omitempty"`
	PayloadBytes int     `json:"payload_bytes,omitempty"`
	Protocol     string  `json:"protocol"` // HTTP/1.1 or HTTP/2
	Draft        string  `json:"draft"`    // 8 or 7

	// DurationS is the measured phase; DrainS the wait for late
	// deliveries after it.
	DurationS float64 `json:"duration_s"`
	DrainS    float64 `json:"drain_s,omitempty"`

	// Latency is the scenario's headline latency: publish→deliver for
	// fanout, the publish round trip for publish.
	Latency        Percentiles  `json:"latency_ms"`
	PublishLatency *Percentiles `json:"publish_latency_ms,omitempty"`

	DeliveriesPerS float64 `json:"deliveries_per_s"`
	PublishesPerS  float64 `json:"publishes_per_s"`
	Published      int64   `json:"published"`
	PublishErrors  int64   `json:"publish_errors"`
	Delivered      int64   `json:"delivered"`
	Expected       int64   `json:"expected"`
	Lost           int64   `json:"lost"`
	Duplicates     int64   `json:"duplicates"`
	OutOfOrder     int64   `json:"out_of_order"`
	// Unparsed counts events whose data is not a bench update.
	Unparsed int64 `json:"unparsed,omitempty"`
	// Reconnects counts subscription reconnections; PossibleLoss those
	// where the hub answered another resume point than the one asked.
	Reconnects    int64 `json:"reconnects"`
	PossibleLoss  int64 `json:"possible_loss,omitempty"`
	ConnectErrors int64 `json:"connect_errors"`

	ServerRSSPerConnKB float64 `json:"server_rss_per_conn_kb"`

	// FDLimit is the open-files limit found; Workers the number of child
	// processes holding subscribers (0: all in this process).
	FDLimit     uint64 `json:"fd_limit"`
	Workers     int    `json:"workers"`
	SourceAddrs int    `json:"source_addrs"`

	// MaxRate is the find-max answer: the highest rate with P99 under
	// P99BoundMs and nothing lost (0 when even the first step failed).
	MaxRate    float64 `json:"max_rate,omitempty"`
	P99BoundMs float64 `json:"p99_bound_ms,omitempty"`
	Steps      []Step  `json:"steps,omitempty"`

	Resume []ResumeCase `json:"resume,omitempty"`

	Distribution []Quantile `json:"distribution,omitempty"`
	Timeline     []Sample   `json:"timeline,omitempty"`

	// Extra holds fields of scenarios that have no place above.
	Extra map[string]any `json:"extra,omitempty"`
	// Notes are remarks for the reader: limits met, suspicious figures.
	Notes []string `json:"notes,omitempty"`
	// Interrupted is set when the run was cut short (Ctrl-C, hard timeout).
	Interrupted bool `json:"interrupted,omitempty"`
}

// Scenario is a registered load scenario.
type Scenario struct {
	Name    string
	Summary string
	// Defaults fills scenario-specific defaults into c before the common
	// ones; optional.
	Defaults func(c *Config)
	// Budget is the hard time limit of a run; nil gives ConnectTimeout +
	// Duration + Drain + 30s.
	Budget func(c *Config) time.Duration
	// Run runs the scenario. On cancellation it should return what it
	// measured so far with the error.
	Run func(ctx context.Context, e *Env) (*Result, error)
}

var (
	registryMu sync.Mutex
	registry   = map[string]Scenario{}
)

// Register adds a scenario; files of this package call it from init.
// Registering a name twice panics.
func Register(s Scenario) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[s.Name]; dup {
		panic("bench: scenario " + s.Name + " registered twice")
	}
	registry[s.Name] = s
}

// Scenarios lists the registered scenarios by name.
func Scenarios() []Scenario {
	registryMu.Lock()
	defer registryMu.Unlock()
	var out []Scenario
	for _, name := range slices.Sorted(maps.Keys(registry)) {
		out = append(out, registry[name])
	}
	return out
}

func lookup(name string) (Scenario, bool) {
	registryMu.Lock()
	defer registryMu.Unlock()
	s, ok := registry[name]
	return s, ok
}

// ErrHardTimeout is the cause of a run's context when its hard time limit
// (Scenario.Budget) passed.
var ErrHardTimeout = errors.New("bench: hard time limit reached")

// Run runs the named scenario against cfg.Hub and prints its Result to out:
// a table, or one JSON object with cfg.JSON. With cfg.Report it also
// writes the HTML report. When ctx ends or the hard time limit passes, it
// closes everything it opened and returns what was measured with the error.
func Run(ctx context.Context, scenario string, cfg Config, out io.Writer) (*Result, error) {
	sc, ok := lookup(scenario)
	if !ok {
		var names []string
		for _, s := range Scenarios() {
			names = append(names, s.Name)
		}
		return nil, fmt.Errorf("unknown scenario %q (have %s)", scenario, strings.Join(names, ", "))
	}
	if sc.Defaults != nil {
		sc.Defaults(&cfg)
	}
	cfg.fill()
	if err := cfg.check(ctx); err != nil {
		return nil, err
	}
	budget := cfg.ConnectTimeout + cfg.Duration + cfg.Drain + 30*time.Second
	if sc.Budget != nil {
		budget = sc.Budget(&cfg)
	}
	ctx, cancel := context.WithTimeoutCause(ctx, budget, ErrHardTimeout)
	defer cancel()

	env, err := newEnv(cfg, false)
	if err != nil {
		return nil, err
	}
	defer env.close()

	res, err := sc.Run(ctx, env)
	if res == nil {
		if err == nil {
			err = errors.New("scenario returned no result")
		}
		return nil, err
	}
	env.fillCommon(scenario, res)
	if ctx.Err() != nil {
		res.Interrupted = true
		if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			err = context.Cause(ctx)
		}
	}
	if werr := writeResult(out, res, cfg.JSON); werr != nil && err == nil {
		err = werr
	}
	if cfg.Report != "" {
		if rerr := writeReportFile(cfg.Report, res); rerr != nil && err == nil {
			err = rerr
		}
	}
	return res, err
}

// writeResult prints res as a table or as one JSON object.
func writeResult(w io.Writer, res *Result, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	return writeTable(w, res)
}

// fill applies the common defaults.
func (c *Config) fill() {
	setDefault(&c.SourceAddrs, 8)
	setDefault(&c.Subscribers, 100)
	setDefault(&c.Topics, 1)
	setDefault(&c.Publishers, 1)
	setDefault(&c.Rate, 100)
	setDefault(&c.Payload, 100)
	setDefault(&c.Duration, 10*time.Second)
	setDefault(&c.Drain, 3*time.Second)
	setDefault(&c.ConnectTimeout, 60*time.Second)
	setDefault(&c.ConnectConcurrency, 64)
	setDefault(&c.P99Bound, 100*time.Millisecond)
	setDefault(&c.MaxSteps, 12)
	setDefault(&c.RampFactor, 1.5)
	setDefault(&c.History, 10_000)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func setDefault[T int | float64 | time.Duration](p *T, v T) {
	if *p <= 0 {
		*p = v
	}
}

// check validates the configuration, the hub URL above all: a load tool
// pointed at someone else's server by mistake is an attack.
func (c *Config) check(ctx context.Context) error {
	if c.Hub == "" {
		return errors.New("--hub is required")
	}
	hubs := strings.Split(c.Hub, ",")
	for i, h := range hubs {
		u, err := hubURL(strings.TrimSpace(h))
		if err != nil {
			return err
		}
		hubs[i] = u.String()
		if !c.AllowRemote {
			if err := requireLoopback(ctx, u.Hostname()); err != nil {
				return err
			}
		}
	}
	c.Hub = strings.Join(hubs, ",")
	switch {
	case c.Rate > 1e7:
		return fmt.Errorf("--rate %g is beyond reason", c.Rate)
	case c.Payload > 1<<20:
		return fmt.Errorf("--payload %d exceeds 1 MiB", c.Payload)
	case c.Subscribers > 1_000_000:
		return fmt.Errorf("--subscribers %d exceeds 1,000,000", c.Subscribers)
	case c.Duration > 24*time.Hour:
		return fmt.Errorf("--duration %s exceeds a day", c.Duration)
	case c.RampFactor <= 1:
		return fmt.Errorf("ramp factor %g must exceed 1", c.RampFactor)
	}
	return nil
}

// Hubs returns the URLs in Hub: one, or the nodes of one deployment.
func (c *Config) Hubs() []string { return strings.Split(c.Hub, ",") }

// firstHub is the hub that whatever reads one hub reads.
func (c *Config) firstHub() string { return c.Hubs()[0] }

// defaultWorkerCommand re-executes this program in worker mode.
func defaultWorkerCommand() ([]string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable for workers: %w", err)
	}
	return []string{exe, "bench", "--worker"}, nil
}
