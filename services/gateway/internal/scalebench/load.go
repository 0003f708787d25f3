package scalebench

import (
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// Scenario is one kind of request sent at a fixed rate: an open model,
// where a slow answer does not slow the next request down.
type Scenario struct {
	Name string
	// Rate is requests per second.
	Rate    int
	Targets []vegeta.Target
	// Want is the status every answer must have.
	Want int
}

// Scenarios are the requests of issue 13 against the gateway at base.
func Scenarios(base string) []Scenario {
	rc := http.Header{"X-User-Id": {AdminID}, "X-Auth-Token": {AdminToken}}
	reb := http.Header{"REB-APIKEY": {UserAPIKey}}
	polls := make([]vegeta.Target, OwnJobs)
	for i := range polls {
		polls[i] = vegeta.Target{Method: http.MethodGet, URL: base + "/v1/exports/" + AdminJobID(i), Header: rc}
	}
	create := rc.Clone()
	create.Set("Content-Type", "application/json")
	// Polls first, lists last: a scenario that overloads the machine
	// leaves less behind for the cheap ones. Each list runs at 20/s, 200
	// requests in a measured 10 s: at 5/s a p99 of 50 answers was the
	// slowest one alone.
	return []Scenario{
		{Name: "poll by id", Rate: 2000, Want: http.StatusOK, Targets: polls},
		{Name: "create (Rocket.Chat rooms.export)", Rate: 50, Want: http.StatusOK,
			Targets: []vegeta.Target{{Method: http.MethodPost, URL: base + "/api/v1/rooms.export", Header: create,
				Body: []byte(`{"rid": "` + RoomGeneral + `", "type": "file", "format": "json"}`)}}},
		{Name: "native list (100 of the caller's 1,000)", Rate: 20, Want: http.StatusOK,
			Targets: []vegeta.Target{{Method: http.MethodGet, URL: base + "/v1/exports?limit=100", Header: rc}}},
		{Name: "Rebilly list, filter + sort (100 of 1,000)", Rate: 20, Want: http.StatusOK,
			Targets: []vegeta.Target{{Method: http.MethodGet, URL: base + "/data-exports?filter=status:completed&sort=-createdTime&limit=100", Header: reb}}},
	}
}

// Result is what one scenario measured.
type Result struct {
	Scenario string
	Rate     int
	Requests uint64
	P50, P99 time.Duration
	Max      time.Duration
	// Failed counts answers that were not Scenario.Want (or no answer).
	Failed int
	Codes  map[string]int
	// Peak is the gateway's most while the scenario was measured.
	Peak Peak
	// GatewayCPU and NATSCPU are the CPU time (user and system) the
	// gateway and the NATS server used per request while the scenario was
	// measured: what a request costs them, whatever the machine's load
	// does to its latency (in ticks of 10 ms over the whole scenario).
	GatewayCPU, NATSCPU time.Duration
	want                int
}

// failures names the answers that were not the wanted status, by status
// ("0" is no answer: a timeout or a connection closed unanswered; "503
// conns" the connection bound's refusal, "503" the cap on requests in
// flight's), such as "503 ×120, 503 conns ×40, 0 ×3".
func (r Result) failures() string {
	var parts []string
	for c, n := range r.Codes {
		if c != strconv.Itoa(r.want) {
			parts = append(parts, fmt.Sprintf("%s ×%d", c, n))
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

// Attack runs s for d and measures every answer.
func Attack(s Scenario, d time.Duration) Result {
	// vegeta's own transport, but ours, so that the connections it opened
	// are closed when the scenario ends: the next scenario's peaks are
	// then its own, not this one's idle connections.
	tr := &http.Transport{
		DialContext:         (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: vegeta.DefaultConnections,
		MaxConnsPerHost:     vegeta.DefaultMaxConnections,
	}
	defer tr.CloseIdleConnections()
	a := vegeta.NewAttacker(vegeta.Client(&http.Client{Transport: tr}), vegeta.Timeout(10*time.Second), vegeta.KeepAlive(true), vegeta.Workers(32))
	var m vegeta.Metrics
	failed := 0
	want := uint16(s.Want)
	codes := map[string]int{}
	for res := range a.Attack(vegeta.NewStaticTargeter(s.Targets...), vegeta.Rate{Freq: s.Rate, Per: time.Second}, d, s.Name) {
		m.Add(res)
		if res.Code != want {
			failed++
		}
		codes[code(res)]++
	}
	m.Close()
	return Result{Scenario: s.Name, Rate: s.Rate, Requests: m.Requests, P50: m.Latencies.P50, P99: m.Latencies.P99,
		Max: m.Latencies.Max, Failed: failed, Codes: codes, want: s.Want}
}

// connRefusal begins the body of the 503 with which infra.Serve refuses a
// connection beyond DATAPORT_HTTP_MAX_CONNS; the cap on requests in
// flight answers 503 in the dialect's JSON instead.
const connRefusal = "the server has as many connections open as it can"

// code is res's status for the report, the connection bound's 503 told
// apart from the cap on requests in flight's: "503 conns".
func code(res *vegeta.Result) string {
	c := strconv.Itoa(int(res.Code))
	if res.Code == http.StatusServiceUnavailable && strings.HasPrefix(string(res.Body), connRefusal) {
		c += " conns"
	}
	return c
}

// String is one line of a report.
func (r Result) String() string {
	codes := make([]string, 0, len(r.Codes))
	for c, n := range r.Codes {
		codes = append(codes, fmt.Sprintf("%s:%d", c, n))
	}
	slices.Sort(codes)
	return fmt.Sprintf("%-45s %5d/s %7d req  p50 %7s  p99 %7s  max %7s  failed %d %v  peak VmRSS %s MiB, %d connections  CPU per request: gateway %s, NATS %s",
		r.Scenario, r.Rate, r.Requests, ms(r.P50), ms(r.P99), ms(r.Max), r.Failed, codes, MiB(r.Peak.RSS), r.Peak.Conns, ms(r.GatewayCPU), ms(r.NATSCPU))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000) }
