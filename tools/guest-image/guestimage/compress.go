package guestimage

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Compression names how the initramfs is compressed. Every choice is
// deterministic: the same archive and the same tool versions give the same
// bytes. See README.md for the boot-time measurements behind the default.
type Compression string

const (
	CompressNone Compression = "none"
	// CompressGzip uses Go's compress/gzip (level 9, no name, no mtime).
	CompressGzip Compression = "gzip"
	// CompressZstd runs the zstd tool single-threaded at level 19.
	CompressZstd Compression = "zstd"
	// CompressXZ runs the xz tool single-threaded with the CRC32 check the
	// kernel's decompressor needs.
	CompressXZ Compression = "xz"
	// CompressLZ4 runs the lz4 tool in the legacy format the kernel reads.
	CompressLZ4 Compression = "lz4"
)

// DefaultCompression is the measured best trade-off (README.md).
const DefaultCompression = CompressLZ4

// ParseCompression checks a -compression value.
func ParseCompression(s string) (Compression, error) {
	switch c := Compression(s); c {
	case CompressNone, CompressGzip, CompressZstd, CompressXZ, CompressLZ4:
		return c, nil
	}
	return "", fmt.Errorf("unknown initramfs compression %q: use none, gzip, zstd, xz or lz4", s)
}

// compress compresses data and says which tool and version did it, for the
// manifest.
func compress(ctx context.Context, c Compression, data []byte) ([]byte, string, error) {
	switch c {
	case CompressNone:
		return data, "none", nil
	case CompressGzip:
		var b bytes.Buffer
		zw, err := gzip.NewWriterLevel(&b, gzip.BestCompression)
		if err != nil {
			return nil, "", err
		}
		if _, err := zw.Write(data); err != nil {
			return nil, "", fmt.Errorf("compressing initramfs: %w", err)
		}
		if err := zw.Close(); err != nil {
			return nil, "", fmt.Errorf("compressing initramfs: %w", err)
		}
		return b.Bytes(), "gzip -9 (Go compress/gzip)", nil
	case CompressZstd:
		return filter(ctx, data, "zstd", []string{"-V"}, "-q", "-19", "-T1", "-c", "-")
	case CompressXZ:
		return filter(ctx, data, "xz", []string{"--version"}, "-q", "-9", "-T1", "--check=crc32", "-c", "-")
	case CompressLZ4:
		return filter(ctx, data, "lz4", []string{"-V"}, "-q", "-l", "-9", "-c", "-")
	}
	return nil, "", fmt.Errorf("unknown initramfs compression %q", c)
}

func filter(ctx context.Context, data []byte, tool string, versionArgs []string, args ...string) ([]byte, string, error) {
	v, err := exec.CommandContext(ctx, tool, versionArgs...).CombinedOutput()
	if err != nil {
		return nil, "", fmt.Errorf("running %s %s: %w (install it with make deps)", tool, strings.Join(versionArgs, " "), err)
	}
	version := strings.SplitN(strings.TrimSpace(string(v)), "\n", 2)[0]
	cmd := exec.CommandContext(ctx, tool, args...)
	cmd.Stdin = bytes.NewReader(data)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return nil, "", fmt.Errorf("compressing initramfs with %s: %w: %s", tool, err, strings.TrimSpace(stderr.String()))
	}
	return out.Bytes(), tool + " " + strings.Join(args[:len(args)-2], " ") + " (" + version + ")", nil
}
