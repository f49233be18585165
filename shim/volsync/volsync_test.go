package volsync

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/guest-agent/volume"
)

// guest applies copies to a real guest-agent/volume tree (what the agent
// does with them) and records each call.
type guest struct {
	v     *volume.Volumes
	calls []string
}

func (g *guest) CopyFile(_ context.Context, r *api.CopyFileRequest) (*emptypb.Empty, error) {
	g.calls = append(g.calls, "copy "+r.Path)
	kind := map[api.CopyFileRequest_Kind]volume.Kind{api.CopyFileRequest_FILE: volume.File, api.CopyFileRequest_DIR: volume.Dir, api.CopyFileRequest_SYMLINK: volume.Symlink}[r.Kind]
	return &emptypb.Empty{}, g.v.Put(r.Volume, volume.Entry{Path: r.Path, Kind: kind, Data: r.Data, Target: r.LinkTarget, Mode: fs.FileMode(r.Mode & 0o777), UID: int(r.Uid), GID: int(r.Gid)})
}

func (g *guest) RemovePath(_ context.Context, r *api.RemovePathRequest) (*emptypb.Empty, error) {
	g.calls = append(g.calls, "remove "+r.Path)
	return &emptypb.Empty{}, g.v.Remove(r.Volume, r.Path)
}

// tree lists a directory as "path kind content" lines, following nothing.
func tree(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, _ := d.Info()
		switch {
		case d.IsDir():
			lines = append(lines, rel+" dir "+fi.Mode().Perm().String())
		case d.Type()&fs.ModeSymlink != 0:
			tg, _ := os.Readlink(p)
			lines = append(lines, rel+" -> "+tg)
		default:
			b, _ := os.ReadFile(p)
			lines = append(lines, rel+" file "+fi.Mode().Perm().String()+" "+string(b))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(lines, "\n")
}

func write(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, p string) {
	t.Helper()
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

// TestConfigMapUpdate mirrors kubelet's atomic writer: a first sync copies
// the whole volume; an update (new timestamped directory, "..data"
// swapped by rename, old directory removed) is sent as new files, then
// the swap, then the removal, and the guest tree ends equal to the host's.
func TestConfigMapUpdate(t *testing.T) {
	host := t.TempDir()
	g := &guest{v: volume.New(t.TempDir())}
	write(t, filepath.Join(host, "..2026_11_27_01/game.properties"), "lives=3")
	write(t, filepath.Join(host, "..2026_11_27_01/ui.properties"), "color=red")
	symlink(t, "..2026_11_27_01", filepath.Join(host, "..data"))
	symlink(t, "..data/game.properties", filepath.Join(host, "game.properties"))
	symlink(t, "..data/ui.properties", filepath.Join(host, "ui.properties"))

	s := &Syncer{Source: host, Volume: "cm-game", Copier: g}
	ctx := context.Background()
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	gdir, _ := g.v.Dir("cm-game")
	if got, want := tree(t, gdir), tree(t, host); got != want {
		t.Fatalf("guest after first sync:\n%s\nwant:\n%s", got, want)
	}
	if b, err := os.ReadFile(filepath.Join(gdir, "game.properties")); err != nil || string(b) != "lives=3" {
		t.Fatalf("guest game.properties = %q, %v", b, err)
	}

	// Nothing changed: nothing is sent.
	g.calls = nil
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if len(g.calls) != 0 {
		t.Errorf("an unchanged volume sent %v", g.calls)
	}

	// The update, as kubelet makes it.
	write(t, filepath.Join(host, "..2026_11_27_02/game.properties"), "lives=5")
	write(t, filepath.Join(host, "..2026_11_27_02/ui.properties"), "color=red")
	symlink(t, "..2026_11_27_02", filepath.Join(host, "..data_tmp"))
	if err := os.Rename(filepath.Join(host, "..data_tmp"), filepath.Join(host, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(host, "..2026_11_27_01")); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"copy ..2026_11_27_02",
		"copy ..2026_11_27_02/game.properties",
		"copy ..2026_11_27_02/ui.properties",
		"copy ..data",
		"remove ..2026_11_27_01",
	}
	if strings.Join(g.calls, "\n") != strings.Join(want, "\n") {
		t.Errorf("update sent:\n%s\nwant:\n%s", strings.Join(g.calls, "\n"), strings.Join(want, "\n"))
	}
	if got, want := tree(t, gdir), tree(t, host); got != want {
		t.Fatalf("guest after update:\n%s\nwant:\n%s", got, want)
	}
	if b, _ := os.ReadFile(filepath.Join(gdir, "game.properties")); string(b) != "lives=5" {
		t.Errorf("guest game.properties after update = %q, want lives=5", b)
	}
}

func TestKindChangeAndSingleFile(t *testing.T) {
	host := t.TempDir()
	g := &guest{v: volume.New(t.TempDir())}
	write(t, filepath.Join(host, "x"), "file")
	s := &Syncer{Source: host, Volume: "v", Copier: g}
	ctx := context.Background()
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(host, "x")); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(host, "x/inner"), "now a directory")
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	gdir, _ := g.v.Dir("v")
	if got, want := tree(t, gdir), tree(t, host); got != want {
		t.Fatalf("guest:\n%s\nwant:\n%s", got, want)
	}

	// A single file (the CRI's /etc/hosts) becomes one entry.
	hosts := filepath.Join(t.TempDir(), "hosts")
	write(t, hosts, "127.0.0.1 localhost\n")
	f := &Syncer{Source: hosts, Volume: "etc-hosts", Name: "hosts", Copier: g}
	if err := f.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	hdir, _ := g.v.Dir("etc-hosts")
	if b, err := os.ReadFile(filepath.Join(hdir, "hosts")); err != nil || string(b) != "127.0.0.1 localhost\n" {
		t.Errorf("guest hosts = %q, %v", b, err)
	}
}

// TestRefusedEntries: what the guest must never receive fails the sync
// with the host path named, and is not sent.
func TestRefusedEntries(t *testing.T) {
	for _, tc := range []struct {
		name string
		make func(t *testing.T, dir string)
	}{
		{"absolute symlink", func(t *testing.T, dir string) { symlink(t, "/etc/shadow", filepath.Join(dir, "bad")) }},
		{"climbing symlink", func(t *testing.T, dir string) { symlink(t, "../../etc", filepath.Join(dir, "bad")) }},
		{"fifo", func(t *testing.T, dir string) {
			if err := unix.Mkfifo(filepath.Join(dir, "bad"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"too large", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "bad"), strings.Repeat("x", MaxFileBytes+1))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host := t.TempDir()
			tc.make(t, host)
			g := &guest{v: volume.New(t.TempDir())}
			err := (&Syncer{Source: host, Volume: "v", Copier: g}).Sync(context.Background())
			if err == nil || !strings.Contains(err.Error(), filepath.Join(host, "bad")) {
				t.Fatalf("Sync = %v, want an error naming %s", err, filepath.Join(host, "bad"))
			}
			if len(g.calls) != 0 {
				t.Errorf("sent %v", g.calls)
			}
		})
	}
}

// TestClear removes what a Syncer sent (its top-level entries), leaving
// another volume and the guest's own files in the same volume alone.
func TestClear(t *testing.T) {
	host := t.TempDir()
	g := &guest{v: volume.New(t.TempDir())}
	write(t, filepath.Join(host, "..2026_11_27_01/key"), "v")
	symlink(t, "..2026_11_27_01", filepath.Join(host, "..data"))
	symlink(t, "..data/key", filepath.Join(host, "key"))
	s := &Syncer{Source: host, Volume: "c1-3", Copier: g}
	other := &Syncer{Source: filepath.Join(host, "..2026_11_27_01/key"), Volume: "c1-4", Name: "hosts", Copier: g}
	ctx := context.Background()
	for _, sy := range []*Syncer{s, other} {
		if err := sy.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	gdir, _ := g.v.Dir("c1-3")
	write(t, filepath.Join(gdir, "made-in-guest"), "x")
	g.calls = nil
	if err := s.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(g.calls, "\n"), "remove ..2026_11_27_01\nremove ..data\nremove key"; got != want {
		t.Errorf("clear sent:\n%s\nwant:\n%s", got, want)
	}
	if got := tree(t, gdir); got != "made-in-guest file -rw-r--r-- x" {
		t.Errorf("guest volume after clear:\n%s", got)
	}
	odir, _ := g.v.Dir("c1-4")
	if got := tree(t, odir); got != "hosts file -rw-r--r-- v" {
		t.Errorf("other volume after clear:\n%s", got)
	}
	// Cleared: a second Clear sends nothing.
	g.calls = nil
	if err := s.Clear(ctx); err != nil || len(g.calls) != 0 {
		t.Errorf("second clear: %v, sent %v", err, g.calls)
	}
}
