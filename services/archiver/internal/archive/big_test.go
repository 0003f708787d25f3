package archive_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/archiver/internal/archive"
	"dataport.dev/shared/blobtest"
)

// TestBigArchiveMemory builds a 2.1 GiB archive from ten 256 MiB parts
// (eight incompressible, stored; two chat-like text, deflated) and reports
// the process's peak RSS while packaging. It is not part of `make test`
// (it writes about 5 GiB into MinIO); run it with
//
//	DATAPORT_BIG_ARCHIVE=1 go test ./internal/archive -run TestBigArchiveMemory -v -timeout 30m
//
// Measured once on the 2-core development machine (Linux, Go 1.26, MinIO
// in its own process): a 2.12 GiB archive from 2.50 GiB of parts in 23 s,
// RSS 21 MiB before packaging and a peak of 56 MiB while packaging (one
// 16 MiB multipart buffer, the deflate state, copy buffers and the Go
// runtime). The peak does not depend on the archive's size.
func TestBigArchiveMemory(t *testing.T) {
	if os.Getenv("DATAPORT_BIG_ARCHIVE") != "1" {
		t.Skip("set DATAPORT_BIG_ARCHIVE=1 to build a 2 GiB archive and measure peak RSS")
	}
	mio := blobtest.Start(t, bucket)
	ctx := t.Context()
	// Eight incompressible "assets" (stored as they are) and two
	// chat-like text parts (deflated): an archive of about 2.1 GiB.
	const parts, partSize = 10, 256 << 20
	jobID := fmt.Sprintf("big-%d", time.Now().UnixNano())
	var ups []*exportv1.PartUploaded
	for i := range parts {
		name := fmt.Sprintf("assets/f%d-video.mp4", i)
		var src io.Reader = &noise{rng: rand.New(rand.NewPCG(uint64(i), 7))}
		if i >= 8 {
			name = fmt.Sprintf("room-%d.json", i)
			src = newText(uint64(i))
		}
		key := fmt.Sprintf("jobs/%s/parts/%d/%s", jobID, i, name)
		h := sha256.New()
		r := io.TeeReader(io.LimitReader(src, partSize), h)
		_, err := mio.Store.Upload(ctx, bucket, key, r, "application/json")
		require.NoError(t, err)
		ups = append(ups, &exportv1.PartUploaded{JobId: jobID, Part: uint32(i), PartsTotal: parts, File: &exportv1.File{
			Name: name, ObjectKey: key, Size: partSize, Sha256: hex.EncodeToString(h.Sum(nil)),
		}})
	}
	debug.FreeOSMemory()
	before := rssKiB(t, "VmRSS")
	// Resets VmHWM to the current RSS (Linux 4.0+), so the peak below is
	// the packaging's alone.
	require.NoError(t, os.WriteFile("/proc/self/clear_refs", []byte("5"), 0))

	z := &archive.Zip{Objects: mio.Store, Bucket: bucket}
	start := time.Now()
	files, err := z.Package(ctx, archive.Job{ID: jobID, Kind: exportv1.JobKind_JOB_KIND_USER_DATA}, ups)
	require.NoError(t, err)
	took := time.Since(start)
	peak := rssKiB(t, "VmHWM")
	t.Logf("archive %s: %.2f GiB (%.2f GiB of input) in %v; RSS before %d MiB, peak while packaging %d MiB",
		files[0].GetName(), float64(files[0].GetSize())/(1<<30), float64(parts*partSize)/(1<<30), took.Round(time.Second), before>>10, peak>>10)
	require.Less(t, peak, int64(200<<10), "peak RSS must not grow with the archive")
}

// rssKiB reads a memory figure (kB) of this process from /proc.
func rssKiB(t *testing.T, field string) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/self/status")
	require.NoError(t, err)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			require.NoError(t, err)
			return n
		}
	}
	t.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// text is an endless stream of chat-like JSON lines: compressible, but
// not trivially.
type text struct {
	rng *rand.Rand
	buf []byte
}

func newText(seed uint64) *text { return &text{rng: rand.New(rand.NewPCG(seed, seed+1))} }

var words = strings.Fields("hello world export room message alice bob carol meeting tomorrow release build deploy coffee lunch review ticket")

func (x *text) Read(p []byte) (int, error) {
	for len(x.buf) < len(p) {
		x.buf = fmt.Appendf(x.buf, `{"_id":"%016x","u":"%s","msg":"`, x.rng.Uint64(), words[x.rng.IntN(len(words))])
		for range 3 + x.rng.IntN(12) {
			x.buf = append(x.buf, words[x.rng.IntN(len(words))]...)
			x.buf = append(x.buf, ' ')
		}
		x.buf = append(x.buf, "\"}\n"...)
	}
	n := copy(p, x.buf)
	x.buf = x.buf[:copy(x.buf, x.buf[n:])]
	return n, nil
}

// noise is an endless stream of incompressible bytes.
type noise struct{ rng *rand.Rand }

func (n *noise) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(n.rng.Uint32())
	}
	return len(p), nil
}
