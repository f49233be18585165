package initdata

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"fmt"
	"io"
	"strings"
)

// Annotation is the pod annotation that carries a document.
const Annotation = "io.veil.initdata"

// MaxAnnotationSize bounds the encoded annotation value.
const MaxAnnotationSize = MaxSize

// EncodeAnnotation gzips doc and encodes it as standard base64.
func EncodeAnnotation(doc []byte) (string, error) {
	if len(doc) > MaxSize {
		return "", fmt.Errorf("init-data is %d bytes, the limit is %d", len(doc), MaxSize)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(doc); err != nil {
		return "", fmt.Errorf("compressing init-data: %w", err)
	}
	if err := zw.Close(); err != nil {
		return "", fmt.Errorf("compressing init-data: %w", err)
	}
	s := base64.StdEncoding.EncodeToString(buf.Bytes())
	if len(s) > MaxAnnotationSize {
		return "", fmt.Errorf("init-data annotation is %d bytes, the limit is %d", len(s), MaxAnnotationSize)
	}
	return s, nil
}

// DecodeAnnotation reverses EncodeAnnotation, refusing values or documents
// over the size limits (a gzip bomb stops at MaxSize+1 bytes).
func DecodeAnnotation(value string) ([]byte, error) {
	return decodeGzipBase64(Annotation, value)
}

// decodeGzipBase64 decodes the value of annotation name: standard base64
// of a gzipped document, within the size limits.
func decodeGzipBase64(name, value string) ([]byte, error) {
	if len(value) > MaxAnnotationSize {
		return nil, fmt.Errorf("annotation %s is %d bytes, the limit is %d", name, len(value), MaxAnnotationSize)
	}
	gz, err := base64.StdEncoding.DecodeString(strings.TrimSpace(value))
	if err != nil {
		return nil, fmt.Errorf("decoding annotation %s base64: %w", name, err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, fmt.Errorf("decompressing annotation %s: %w", name, err)
	}
	doc, err := io.ReadAll(io.LimitReader(zr, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("decompressing annotation %s: %w", name, err)
	}
	if len(doc) > MaxSize {
		return nil, fmt.Errorf("annotation %s holds more than %d bytes of init-data", name, MaxSize)
	}
	return doc, nil
}
