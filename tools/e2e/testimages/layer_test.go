package testimages

import (
	"archive/tar"
	"bytes"
	"io"
	"reflect"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestNormalize(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []Entry
		want    []string // paths in order
		wantErr bool
	}{
		{
			name: "parents added, hard links last",
			in: []Entry{
				{Path: "bin/ash", Hardlink: "/bin/busybox"},
				File("/bin/busybox", 0o755, []byte("x")),
				File("etc/passwd", 0o644, nil),
			},
			want: []string{"bin", "bin/busybox", "etc", "etc/passwd", "bin/ash"},
		},
		{
			name: "last entry for a path wins",
			in:   []Entry{File("a", 0o644, []byte("1")), File("./a", 0o600, []byte("2"))},
			want: []string{"a"},
		},
		{name: "hard link to nothing", in: []Entry{{Path: "x", Hardlink: "y"}}, wantErr: true},
		{name: "hard link to a directory", in: []Entry{Dir("d", 0o755), {Path: "x", Hardlink: "d"}}, wantErr: true},
		{name: "root", in: []Entry{Dir("/", 0o755)}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Normalize(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Normalize error = %v, want error %v", err, tc.wantErr)
			}
			var paths []string
			for _, e := range got {
				paths = append(paths, e.Path)
			}
			if !reflect.DeepEqual(paths, tc.want) {
				t.Errorf("Normalize order = %v, want %v", paths, tc.want)
			}
		})
	}
}

func TestNormalizeLastWins(t *testing.T) {
	got, err := Normalize([]Entry{File("a", 0o644, []byte("1")), File("a", 0o600, []byte("2"))})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || string(got[0].Data) != "2" || got[0].Mode != 0o600 {
		t.Errorf("Normalize = %+v, want the second entry", got)
	}
}

func TestLayerTar(t *testing.T) {
	entries := []Entry{
		File("bin/busybox", 0o755, []byte("ELF")),
		{Path: "bin/sh", Mode: 0o755, Hardlink: "bin/busybox"},
		{Path: "lib64", Symlink: "lib"},
		{Path: "home/u", Mode: 0o700, Dir: true, UID: 1000, GID: 1000},
	}
	a, err := LayerTar(entries)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := LayerTar([]Entry{entries[3], entries[2], entries[1], entries[0]})
	if !bytes.Equal(a, b) {
		t.Error("LayerTar depends on the order of its input")
	}
	type hdr struct {
		Name, Link string
		Type       byte
		Mode       int64
		UID        int
	}
	var got []hdr
	tr := tar.NewReader(bytes.NewReader(a))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !h.ModTime.Equal(Epoch) {
			t.Errorf("%s: mtime %v, want %v", h.Name, h.ModTime, Epoch)
		}
		got = append(got, hdr{h.Name, h.Linkname, h.Typeflag, h.Mode, h.Uid})
	}
	want := []hdr{
		{"bin/", "", tar.TypeDir, 0o755, 0},
		{"bin/busybox", "", tar.TypeReg, 0o755, 0},
		{"home/", "", tar.TypeDir, 0o755, 0},
		{"home/u/", "", tar.TypeDir, 0o700, 1000},
		{"lib64", "lib", tar.TypeSymlink, 0, 0},
		{"bin/sh", "bin/busybox", tar.TypeLink, 0o755, 0},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("layer entries:\n got %+v\nwant %+v", got, want)
	}
}

func TestAppletLinks(t *testing.T) {
	got := AppletLinks("usr/bin/[\nbin/sh\n\nbin/busybox\n/sbin/ifconfig\nbin/sh\n", "bin/busybox")
	want := []Entry{
		{Path: "usr/bin/[", Mode: 0o755, Hardlink: "bin/busybox"},
		{Path: "bin/sh", Mode: 0o755, Hardlink: "bin/busybox"},
		{Path: "sbin/ifconfig", Mode: 0o755, Hardlink: "bin/busybox"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("AppletLinks = %+v, want %+v", got, want)
	}
}

func TestBuildIsDeterministic(t *testing.T) {
	spec := Spec{
		Name:   "x:1",
		Layers: [][]Entry{{File("a", 0o644, []byte("a"))}, {File("b", 0o644, []byte("b"))}},
		Config: v1.Config{Entrypoint: []string{"/a"}, User: "1000"},
	}
	digest := func() v1.Hash {
		img, err := Build(spec)
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	first := digest()
	if again := digest(); first != again {
		t.Errorf("two builds of one spec: %s and %s", first, again)
	}
	img, _ := Build(spec)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" || cf.Config.User != "1000" || len(cf.RootFS.DiffIDs) != 2 {
		t.Errorf("config = %+v", cf)
	}
	mt, _ := img.MediaType()
	if mt != "application/vnd.oci.image.manifest.v1+json" {
		t.Errorf("media type %s, want an OCI manifest", mt)
	}
	spec.Config.User = "0"
	if digest() == first {
		t.Error("a different config gave the same digest")
	}
}
