package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"
)

// The node side: finding every shim's socket under the state root,
// scraping them, and merging what they say into one exposition with
// namespace and sandbox labels (what `veil metrics` and the benchmark use).

// Target is one shim's metrics socket.
type Target struct {
	Namespace, Sandbox string
	Socket             string
}

// Discover lists the metrics sockets under root (/run/veil):
// root/<namespace>/<sandbox-id>/metrics.sock, sorted. A missing root means
// no pods.
func Discover(root string) ([]Target, error) {
	nss, err := os.ReadDir(root)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("listing veil state root: %w", err)
	}
	var out []Target
	for _, ns := range nss {
		if !ns.IsDir() {
			continue
		}
		pods, err := os.ReadDir(filepath.Join(root, ns.Name()))
		if err != nil {
			continue // removed with its last pod meanwhile
		}
		for _, p := range pods {
			sock := filepath.Join(root, ns.Name(), p.Name(), SocketName)
			if fi, err := os.Stat(sock); err == nil && fi.Mode()&fs.ModeSocket != 0 {
				out = append(out, Target{Namespace: ns.Name(), Sandbox: p.Name(), Socket: sock})
			}
		}
	}
	return out, nil
}

// Scrape reads and parses one shim's metrics.
func Scrape(ctx context.Context, socket string) (map[string]*dto.MetricFamily, error) {
	client := http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		},
		DisableKeepAlives: true,
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://shim/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scraping %s: %w", socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("scraping %s: %s: %s", socket, resp.Status, strings.TrimSpace(string(b)))
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parsing metrics from %s: %w", socket, err)
	}
	return fams, nil
}

// Sample is one shim's scrape.
type Sample struct {
	Target
	Families map[string]*dto.MetricFamily
	Err      error
}

// ScrapeAll scrapes every target, each bounded by timeout.
func ScrapeAll(ctx context.Context, targets []Target, timeout time.Duration) []Sample {
	out := make([]Sample, len(targets))
	done := make(chan struct{})
	for i, t := range targets {
		go func() {
			defer func() { done <- struct{}{} }()
			sctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			fams, err := Scrape(sctx, t.Socket)
			out[i] = Sample{Target: t, Families: fams, Err: err}
		}()
	}
	for range targets {
		<-done
	}
	return out
}

// upName is the aggregate's per-shim health.
const upName = "veil_shim_up"

// Aggregate merges the samples into one set of families: every metric gets
// namespace and sandbox labels, and veil_shim_up{namespace,sandbox} says
// whether its shim answered. Families are sorted by name.
func Aggregate(samples []Sample) []*dto.MetricFamily {
	merged := map[string]*dto.MetricFamily{}
	up := &dto.MetricFamily{Name: proto.String(upName), Help: proto.String("Whether the shim's metrics socket answered the scrape."),
		Type: dto.MetricType_GAUGE.Enum()}
	for _, s := range samples {
		v := 1.0
		if s.Err != nil {
			v = 0
		}
		up.Metric = append(up.Metric, &dto.Metric{Label: podLabels(s.Target), Gauge: &dto.Gauge{Value: proto.Float64(v)}})
		for _, name := range slices.Sorted(maps.Keys(s.Families)) {
			f := s.Families[name]
			m := merged[name]
			if m == nil {
				m = &dto.MetricFamily{Name: f.Name, Help: f.Help, Type: f.Type, Unit: f.Unit}
				merged[name] = m
			}
			for _, metric := range f.Metric {
				c := proto.Clone(metric).(*dto.Metric)
				c.Label = append(podLabels(s.Target), c.Label...)
				m.Metric = append(m.Metric, c)
			}
		}
	}
	if len(up.Metric) > 0 {
		merged[upName] = up
	}
	out := make([]*dto.MetricFamily, 0, len(merged))
	for _, name := range slices.Sorted(maps.Keys(merged)) {
		out = append(out, merged[name])
	}
	return out
}

func podLabels(t Target) []*dto.LabelPair {
	return []*dto.LabelPair{
		{Name: proto.String("namespace"), Value: proto.String(t.Namespace)},
		{Name: proto.String("sandbox"), Value: proto.String(t.Sandbox)},
	}
}

// WriteText writes families in the Prometheus text format.
func WriteText(w io.Writer, fams []*dto.MetricFamily) error {
	enc := expfmt.NewEncoder(w, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range fams {
		if err := enc.Encode(f); err != nil {
			return fmt.Errorf("encoding %s: %w", f.GetName(), err)
		}
	}
	return nil
}

// Value returns the value of the first metric of family name in fams whose
// labels include want (gauge, counter or untyped), and whether there is one.
func Value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// Timestamp returns a *_timestamp_seconds value as a time.
func Timestamp(fams map[string]*dto.MetricFamily, name string, want map[string]string) (time.Time, bool) {
	v, ok := Value(fams, name, want)
	if !ok {
		return time.Time{}, false
	}
	return time.Unix(0, int64(v*1e9)), true
}
