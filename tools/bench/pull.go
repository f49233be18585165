package main

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/prometheus/procfs"

	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/attestation/kbs"
	"github.com/veil-runtime/veil/attestation/kbs/server"
	attpolicy "github.com/veil-runtime/veil/attestation/policy"
	"github.com/veil-runtime/veil/image/encrypt"
	"github.com/veil-runtime/veil/shim"
	"github.com/veil-runtime/veil/shim/metrics"
	"github.com/veil-runtime/veil/tools/bench/report"
	"github.com/veil-runtime/veil/tools/e2e/harness"
	"github.com/veil-runtime/veil/tools/e2e/testimages"
)

// runtimeHandlerAnnotation makes containerd's CRI pull a pod's images with
// its handler's snapshotter (veil's proxy snapshotter for veil-dev, which
// leaves the layers to the guest) when the client does not name the
// handler in PullImage (crictl does not).
const runtimeHandlerAnnotation = "io.containerd.cri.runtime-handler"

// pullKeyResource is the broker resource holding the encrypted variant's
// private key.
const pullKeyResource = "default/image-key/bench"

// memSampleInterval is the guest sampler's period (busybox sleep).
const memSampleInterval = "0.2"

// guestMemSampler prints the guest kernel's MemTotal - MemAvailable in KiB
// every memSampleInterval: a container's /proc/meminfo is the guest's.
var guestMemSampler = []string{"sh", "-c",
	"while :; do awk '/^MemTotal:/{t=$2} /^MemAvailable:/{a=$2} END{print t-a}' /proc/meminfo; sleep " + memSampleInterval + "; done"}

// pullImages are the benchmark's two images in the harness registry.
type pullImages struct {
	plain, encrypted string
	bytes            int64  // the plain image's layers, compressed
	brokerURL        string // veil-kbs holding the encrypted variant's key
}

// pullBench measures the pull benchmark: o.pullMiB of random layers on the
// busybox test image, pulled by containerd on the host (overlayfs) and by
// the guest of veil-dev pods, plain and encrypted, o.pullRuns times each.
func (b *bench) pullBench(ctx context.Context, res *report.Result) (retErr error) {
	if err := b.env.CheckHandler(harness.VeilDev); err != nil {
		return fmt.Errorf("the pull benchmark needs the %s handler: %w", harness.VeilDev, err)
	}
	dir, err := os.MkdirTemp("", "veil-bench-pull-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	imgs, stopBroker, err := b.pullSetup(ctx, dir)
	if err != nil {
		return err
	}
	defer stopBroker()
	res.Config.Pull = report.PullConfig{MiB: b.o.pullMiB, Layers: b.o.pullLayers, Runs: b.o.pullRuns, Base: testimages.BusyboxImage, Bytes: imgs.bytes}

	for run := range b.o.pullRuns {
		for _, v := range []string{report.PullPlain, report.PullEncrypted} {
			p, err := b.guestPull(ctx, imgs, v, run)
			if err != nil {
				return fmt.Errorf("guest pull (%s, run %d): %w", v, run, err)
			}
			b.o.log.Info("guest pull", "variant", v, "run", run, "pull", fmt.Sprintf("%.2fs", p.Seconds),
				"peak_mib", p.PeakBytes>>20, "samples", p.MemorySamples)
			res.Pulls = append(res.Pulls, p)
		}
	}
	for run := range b.o.pullRuns {
		p, err := b.hostPull(ctx, imgs.plain, run)
		if err != nil {
			return fmt.Errorf("host pull (run %d): %w", run, err)
		}
		b.o.log.Info("host pull", "run", run, "pull", fmt.Sprintf("%.2fs", p.Seconds), "peak_mib", p.PeakBytes>>20)
		res.Pulls = append(res.Pulls, p)
	}
	return nil
}

// pullSetup builds and pushes the plain and encrypted images and starts
// veil-kbs (dev mode: the sample TEE's evidence is accepted) holding the
// key, reachable from the guests on the bridge.
func (b *bench) pullSetup(ctx context.Context, dir string) (_ pullImages, stop func(), retErr error) {
	var imgs pullImages
	t0 := time.Now()
	baseRef, err := name.ParseReference(b.env.Image(testimages.BusyboxImage), name.Insecure)
	if err != nil {
		return imgs, nil, err
	}
	base, err := remote.Image(baseRef, remote.WithTransport(b.env.Registry.Transport), remote.WithContext(ctx))
	if err != nil {
		return imgs, nil, fmt.Errorf("reading %s: %w", baseRef, err)
	}
	per := int64(b.o.pullMiB) << 20 / int64(b.o.pullLayers)
	var adds []mutate.Addendum
	for i := range b.o.pullLayers {
		l, err := randomLayer(filepath.Join(dir, fmt.Sprintf("random-%d.tar", i)), fmt.Sprintf("bench/random-%d", i), per)
		if err != nil {
			return imgs, nil, err
		}
		size, err := l.Size()
		if err != nil {
			return imgs, nil, err
		}
		imgs.bytes += size
		adds = append(adds, mutate.Addendum{Layer: l})
	}
	plain, err := mutate.Append(base, adds...)
	if err != nil {
		return imgs, nil, err
	}
	priv, pub, err := encrypt.GenerateKey(encrypt.EC)
	if err != nil {
		return imgs, nil, err
	}
	enc, err := encrypt.Image(plain, [][]byte{pub}, dir)
	if err != nil {
		return imgs, nil, fmt.Errorf("encrypting the pull image: %w", err)
	}
	tag := strconv.FormatInt(time.Now().Unix(), 10)
	if imgs.plain, err = b.push(ctx, "bench/pull-plain:"+tag, plain); err != nil {
		return imgs, nil, err
	}
	if imgs.encrypted, err = b.push(ctx, "bench/pull-encrypted:"+tag, enc); err != nil {
		return imgs, nil, err
	}
	b.o.log.Info("pull images pushed", "plain", imgs.plain, "encrypted", imgs.encrypted, "took", time.Since(t0).Round(time.Millisecond))
	imgs.brokerURL, stop, err = b.startBroker(filepath.Join(dir, "kbs"), priv)
	return imgs, stop, err
}

// randomLayer writes a tar of one file of size random bytes and returns it
// as a gzip layer (fastest level: random data does not compress).
func randomLayer(path, file string, size int64) (v1.Layer, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(f)
	err = tw.WriteHeader(&tar.Header{Name: file, Typeflag: tar.TypeReg, Mode: 0o644, Size: size, ModTime: time.Unix(1700000000, 0)})
	if err == nil {
		_, err = io.CopyN(tw, rand.Reader, size)
	}
	if err == nil {
		err = tw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("writing random layer %s: %w", path, err)
	}
	return tarball.LayerFromFile(path, tarball.WithMediaType(types.OCILayer), tarball.WithCompressionLevel(gzip.BestSpeed))
}

func (b *bench) push(ctx context.Context, repoTag string, img v1.Image) (string, error) {
	ref := b.env.Image(repoTag)
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return "", err
	}
	if err := remote.Write(r, img, remote.WithTransport(b.env.Registry.Transport), remote.WithContext(ctx)); err != nil {
		return "", fmt.Errorf("pushing %s: %w", ref, err)
	}
	return ref, nil
}

// startBroker runs veil-kbs in dev mode in the environment's network
// namespace with the key as pullKeyResource, released to the sample TEE.
func (b *bench) startBroker(dir string, key []byte) (string, func(), error) {
	store, err := server.OpenStore(dir)
	if err != nil {
		return "", nil, err
	}
	if err := store.SetAttestationPolicy(attpolicy.Attestation{Sample: &attpolicy.Sample{}, RequireInitData: true}); err != nil {
		return "", nil, err
	}
	if err := store.SetResourcePolicy(attpolicy.Resources{Rules: []attpolicy.ResourceRule{{Resource: pullKeyResource, Tees: []kbs.Tee{kbs.TeeSample}}}}); err != nil {
		return "", nil, err
	}
	if err := store.SetResource(pullKeyResource, key); err != nil {
		return "", nil, err
	}
	h, err := server.New(server.Config{Store: store, Dev: true})
	if err != nil {
		return "", nil, err
	}
	return b.env.ServeOnBridge(h)
}

// pullInitData is the pull benchmark's init-data (veilDevInitData): for
// the encrypted variant the broker and the key.
func (b *bench) pullInitData(imgs pullImages, variant string) string {
	if variant == report.PullEncrypted {
		return b.veilDevInitData(imgs.brokerURL, []string{"kbs:///" + pullKeyResource})
	}
	return b.veilDevInitData("", nil)
}

// veilDevInitData is a veil-dev init-data document for the benchmark's
// pods: the harness's agent policy and image policy, the registry's guest
// mirror and, with a broker, the broker and the layer keys it holds.
func (b *bench) veilDevInitData(brokerURL string, keys []string) string {
	doc := "version = \"0.1.0\"\nalgorithm = \"sha256\"\n"
	if brokerURL != "" {
		doc += fmt.Sprintf("\n[broker]\nurl = %q\n", brokerURL)
	}
	imagePolicy := harness.VeilDevImagePolicy
	if len(keys) > 0 {
		// With keys, the guest wants the unsigned images' scope named.
		imagePolicy = harness.AcceptRegistryImagePolicy(b.env.Registry.Host)
	}
	doc += fmt.Sprintf("\n[agent]\npolicy = '''\n%s'''\n\n[image]\npolicy = '''%s'''\n", harness.VeilDevPolicy, imagePolicy)
	if len(keys) > 0 {
		q := make([]string, len(keys))
		for i, k := range keys {
			q[i] = strconv.Quote(k)
		}
		doc += fmt.Sprintf("keys = [%s]\n", strings.Join(q, ", "))
	}
	return doc + b.env.Registry.GuestImageTable()
}

// runVeilDevPod runs a veil-dev pod with the init-data document doc in its
// annotation and its images pulled for the handler's snapshotter (the
// guest pulls them); edit, if not nil, changes the pod config further.
func (b *bench) runVeilDevPod(ctx context.Context, name, doc string, edit func(map[string]any)) (*harness.Pod, error) {
	if _, err := initdata.Parse([]byte(doc)); err != nil {
		return nil, fmt.Errorf("init-data of pod %s: %w", name, err)
	}
	ann, err := initdata.EncodeAnnotation([]byte(doc))
	if err != nil {
		return nil, err
	}
	return b.env.RunPodWith(ctx, harness.VeilDev, name, func(c map[string]any) {
		c["annotations"] = map[string]string{initdata.Annotation: ann, runtimeHandlerAnnotation: harness.VeilDev}
		if edit != nil {
			edit(c)
		}
	})
}

// guestPull runs a veil-dev pod with the memory sampler container, then
// starts a container of the variant's image and measures the guest's pull.
// The sampler's own (small) pull makes the pod's puller first, so the
// attestation and key fetch of the encrypted variant are not in the timed
// pull. The pod's memory limit sizes the VM for the image on tmpfs (the
// unpacked rootfs and the blob cache).
func (b *bench) guestPull(ctx context.Context, imgs pullImages, variant string, run int) (_ report.Pull, retErr error) {
	p := report.Pull{Where: report.PullGuest, Variant: variant, Run: run}
	limit := int64(3*b.o.pullMiB+256) << 20
	podName := fmt.Sprintf("bench-pull-%s-%d-%d", variant, run, b.seq.Add(1))
	pod, err := b.runVeilDevPod(ctx, podName, b.pullInitData(imgs, variant), func(c map[string]any) {
		c["linux"] = map[string]any{"resources": map[string]any{"memory_limit_in_bytes": limit}}
	})
	if err != nil {
		return p, err
	}
	defer func() {
		if err := b.env.RemovePod(context.WithoutCancel(ctx), pod); err != nil {
			retErr = errors.Join(retErr, err)
		}
	}()
	if _, err := b.env.StartContainer(ctx, pod, harness.ContainerConfig("meminfo", b.env.Image(testimages.BusyboxImage), guestMemSampler, false)); err != nil {
		return p, err
	}
	samplerLog := filepath.Join(pod.LogDir, "meminfo.log")
	if err := waitFirstLine(ctx, samplerLog); err != nil {
		return p, fmt.Errorf("memory sampler: %w", err)
	}
	var ref string
	switch variant {
	case report.PullPlain:
		ref = imgs.plain
	case report.PullEncrypted:
		ref = imgs.encrypted
	}
	// crictl create has CRI fetch the manifest and config on the host
	// (the layers are left to the guest); the guest pulls at start.
	id, err := b.env.CreateContainer(ctx, pod, harness.ContainerConfig("app", ref, containerCmd, false))
	if err != nil {
		return p, err
	}
	// The pull is inside StartContainer: past the harness's 120 s crictl
	// timeout for a large image under software emulation.
	t0 := time.Now()
	if _, err := b.env.Run(ctx, b.env.Crictl(ctx, "--timeout", "15m", "start", id)); err != nil {
		return p, fmt.Errorf("starting the %s container: %w", variant, err)
	}
	t1 := time.Now()
	p.StartSeconds = t1.Sub(t0).Seconds()
	if p.Seconds, err = guestPullSeconds(ctx, pod.ID, id); err != nil {
		return p, err
	}
	// The window ends when the start returned; wait for the sampler's
	// first line after it (there is no event for it).
	samples, err := waitSamplesAfter(ctx, samplerLog, t1)
	if err != nil {
		return p, err
	}
	p.BeforeBytes, p.PeakBytes, p.MemorySamples = memoryWindow(samples, t0, t1)
	if p.MemorySamples == 0 {
		return p, fmt.Errorf("the guest memory sampler logged nothing during the %.1f s pull", p.StartSeconds)
	}
	return p, nil
}

// guestPullSeconds reads the pull_started and image_pulled phases the
// pod's shim recorded for container ctrID.
func guestPullSeconds(ctx context.Context, podID, ctrID string) (float64, error) {
	sock := filepath.Join(shim.DefaultStateRoot, criNamespace, podID, metrics.SocketName)
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	fams, err := metrics.Scrape(sctx, sock)
	if err != nil {
		return 0, fmt.Errorf("reading the shim's metrics: %w", err)
	}
	var at [2]time.Time
	for i, ph := range []string{metrics.ContainerPullStarted, metrics.ContainerImagePulled} {
		t, ok := metrics.Timestamp(fams, "veil_container_phase_timestamp_seconds", map[string]string{"container": ctrID, "phase": ph})
		if !ok {
			return 0, fmt.Errorf("the shim of pod %s recorded no %s phase for container %s", podID, ph, ctrID)
		}
		at[i] = t
	}
	return at[1].Sub(at[0]).Seconds(), nil
}

// memSample is one line of the guest memory sampler: when the CRI logged
// it (host clock) and the guest's used memory.
type memSample struct {
	at   time.Time
	used uint64 // bytes
}

// readSamples parses the sampler's CRI log ("<RFC3339Nano> stdout F <KiB>").
func readSamples(path string) ([]memSample, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []memSample
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 4 || fields[1] != "stdout" {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, fields[0])
		if err != nil {
			return nil, fmt.Errorf("%s: line %q: %w", path, sc.Text(), err)
		}
		kib, err := strconv.ParseUint(fields[3], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: line %q: %w", path, sc.Text(), err)
		}
		out = append(out, memSample{at, kib << 10})
	}
	return out, sc.Err()
}

// waitSamplesAfter polls the sampler's log until it has a line logged
// after t, up to outputTimeout, and returns every sample.
func waitSamplesAfter(ctx context.Context, path string, t time.Time) ([]memSample, error) {
	deadline := time.Now().Add(outputTimeout)
	for {
		s, err := readSamples(path)
		if err != nil {
			return nil, err
		}
		if len(s) > 0 && s[len(s)-1].at.After(t) {
			return s, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the guest memory sampler logged nothing after the pull in %s", outputTimeout)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// memoryWindow returns the last sample before t0 (before), the highest of
// the samples from t0 to the first one after t1 (peak: the pull ends
// between two samples), and how many samples that was. Samples are in
// time order.
func memoryWindow(samples []memSample, t0, t1 time.Time) (before, peak uint64, n int) {
	for _, s := range samples {
		if s.at.Before(t0) {
			before = s.used
			continue
		}
		peak = max(peak, s.used)
		n++
		if s.at.After(t1) {
			break
		}
	}
	return before, peak, n
}

// hostPull removes the image from containerd (and so its content and
// snapshots) and times `crictl pull` of it with the default (overlayfs)
// snapshotter, sampling containerd's resident memory meanwhile.
func (b *bench) hostPull(ctx context.Context, ref string, run int) (report.Pull, error) {
	p := report.Pull{Where: report.PullHost, Variant: report.PullPlain, Run: run}
	// The image may be known from the guest pulls (its record without
	// content) or not at all (an earlier run removed it). `crictl images -q
	// REF` did not tell: it printed an ID after REF had been removed.
	if _, err := b.env.Run(ctx, b.env.Crictl(ctx, "rmi", ref)); err != nil && !strings.Contains(err.Error(), "no such image") {
		return p, err
	}
	pid, err := containerdPID(b.env)
	if err != nil {
		return p, err
	}
	proc, err := procfs.NewProc(pid)
	if err != nil {
		return p, err
	}
	rss := func() uint64 {
		st, err := proc.NewStatus()
		if err != nil {
			return 0
		}
		return st.VmRSS
	}
	p.BeforeBytes = rss()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			p.PeakBytes = max(p.PeakBytes, rss())
			p.MemorySamples++
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	t0 := time.Now()
	_, err = b.env.Run(ctx, b.env.Crictl(ctx, "pull", ref))
	p.Seconds = time.Since(t0).Seconds()
	close(stop)
	wg.Wait()
	if err != nil {
		return p, err
	}
	_, err = b.env.Run(ctx, b.env.Crictl(ctx, "rmi", ref))
	return p, err
}

// containerdPID finds the environment's containerd: the harness's binary
// run with the environment's config.
func containerdPID(env *harness.Env) (int, error) {
	procs, err := procfs.AllProcs()
	if err != nil {
		return 0, err
	}
	for _, p := range procs {
		args, err := p.CmdLine()
		if err != nil || len(args) == 0 || args[0] != env.Bin("containerd") {
			continue
		}
		for _, a := range args {
			if strings.HasPrefix(a, env.Dir) {
				return p.PID, nil
			}
		}
	}
	return 0, fmt.Errorf("no containerd process of the environment in %s", env.Dir)
}
