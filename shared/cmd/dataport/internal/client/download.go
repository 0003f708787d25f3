package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrChecksum is returned by Download when a file's content does not match
// the SHA-256 the export lists for it.
var ErrChecksum = errors.New("checksum mismatch")

// Downloaded says what Download did with one file.
type Downloaded struct {
	Name string `json:"name"`
	Path string `json:"path"`
	Size int64  `json:"size"`
	// SHA256 is the hex digest of the file written, equal to the
	// export's.
	SHA256 string `json:"sha256"`
	// Resumed is the offset a partial earlier download continued from.
	Resumed int64 `json:"resumed,omitempty"`
	// Skipped says the file was already there, complete and verified.
	Skipped bool `json:"skipped,omitempty"`
}

// Download writes f into dir as f.Name, verified against f.SHA256. The
// file is written to f.Name+".part" first; a .part left by an interrupted
// download is continued with a Range request (the gateway answers 206),
// or written again if the gateway sends the whole file (200). Only a file
// whose digest matches is renamed into place; one that does not is removed
// and ErrChecksum returned. progress, if set, is told the offset the
// download starts at and gets every byte written after it.
func (c *Client) Download(ctx context.Context, f File, dir string, progress func(start int64) io.Writer) (*Downloaded, error) {
	name := filepath.Base(filepath.Clean("/" + f.Name))
	if name == "/" || name == "." || name != f.Name {
		return nil, fmt.Errorf("refusing file name %q", f.Name)
	}
	if f.URL == "" {
		return nil, fmt.Errorf("%s has no download link (its files expired?)", f.Name)
	}
	final := filepath.Join(dir, name)
	out := &Downloaded{Name: name, Path: final}
	if sum, size, err := digest(final); err == nil && strings.EqualFold(sum, f.SHA256) {
		out.SHA256, out.Size, out.Skipped = sum, size, true
		return out, nil
	}
	part := final + ".part"
	for attempt := 0; attempt < 2; attempt++ {
		start, err := fileSize(part)
		if err != nil {
			return nil, err
		}
		if f.Size > 0 && uint64(start) > f.Size {
			_ = os.Remove(part)
			start = 0
		}
		resumed, err := c.fetch(ctx, f, part, start, progress)
		if err != nil {
			return nil, err
		}
		sum, size, err := digest(part)
		if err != nil {
			return nil, err
		}
		if !strings.EqualFold(sum, f.SHA256) {
			_ = os.Remove(part)
			if resumed > 0 {
				// The kept part may have been the bad half: once more from
				// the start.
				continue
			}
			return nil, fmt.Errorf("%s: got sha256 %s, the export lists %s: %w", name, sum, f.SHA256, ErrChecksum)
		}
		if err := os.Rename(part, final); err != nil {
			return nil, err
		}
		out.SHA256, out.Size, out.Resumed = sum, size, resumed
		return out, nil
	}
	return nil, fmt.Errorf("%s: the content does not match sha256 %s: %w", name, f.SHA256, ErrChecksum)
}

// fetch appends the file from start to part, or rewrites part whole when
// the gateway ignores the range; it returns the offset it continued from.
func (c *Client) fetch(ctx context.Context, f File, part string, start int64, progress func(int64) io.Writer) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.URL, nil)
	if err != nil {
		return 0, err
	}
	// The signed link is the credential; the token is not sent with it.
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}
	if start > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(start, 10)+"-")
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	flags := os.O_WRONLY | os.O_CREATE
	switch resp.StatusCode {
	case http.StatusPartialContent:
		from, ok := rangeStart(resp.Header.Get("Content-Range"))
		if !ok || from != start {
			return 0, fmt.Errorf("%s: the gateway sent range %q for bytes=%d-", f.Name, resp.Header.Get("Content-Range"), start)
		}
		flags |= os.O_APPEND
	case http.StatusOK:
		start = 0
		flags |= os.O_TRUNC
	case http.StatusRequestedRangeNotSatisfiable:
		// The part is complete already (or longer than the file, which
		// the digest check then refuses).
		return start, nil
	default:
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return 0, problemOf(resp, data)
	}
	w, err := os.OpenFile(part, flags, 0o644)
	if err != nil {
		return 0, err
	}
	var dst io.Writer = w
	if progress != nil {
		if p := progress(start); p != nil {
			dst = io.MultiWriter(w, p)
		}
	}
	_, err = io.Copy(dst, resp.Body)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("download %s: %w (run download again to continue)", f.Name, err)
	}
	return start, nil
}

// rangeStart reads the first byte of a Content-Range ("bytes 10-99/100").
func rangeStart(v string) (int64, bool) {
	rest, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return 0, false
	}
	from, _, ok := strings.Cut(rest, "-")
	n, err := strconv.ParseInt(from, 10, 64)
	return n, ok && err == nil
}

func fileSize(path string) (int64, error) {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return 0, nil
	case err != nil:
		return 0, err
	}
	return st.Size(), nil
}

func digest(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
