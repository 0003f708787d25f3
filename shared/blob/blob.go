// Package blob is Dataport's object storage: exports are streamed into
// MinIO (or any S3 endpoint) and read back or handed out as presigned URLs.
//
// It is the only package in the project that imports minio-go. Every minio
// error is translated here, at one boundary, so callers test for the
// sentinels below with errors.Is and never depend on S3 error codes.
package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// ErrNotFound is returned (wrapped) by Stat and Open when the key or the
// bucket does not exist, and by List and Delete when the bucket does not.
var ErrNotFound = errors.New("blob: object not found")

// ErrInvalidArgument is returned (wrapped) for requests that can never
// succeed as made: an invalid bucket or key name, or a presign TTL out of
// range. Retrying them is pointless, so a consumer can Term instead of Nak.
var ErrInvalidArgument = errors.New("blob: invalid argument")

// ErrUnavailable is returned (wrapped, next to the cause) when the object
// store could not be reached or said it is overloaded or unwell: a refused
// or reset connection, a timeout, a 5xx answer, SlowDown. It is the
// store's state, not the request's fault, so a caller waits and retries
// the same request instead of counting it against the work. minio-go has
// already retried such a request a few times when this comes back.
var ErrUnavailable = errors.New("blob: object store unavailable")

const (
	// PartSize is the size of Upload's parts (the first PartsAtBase;
	// PartSizeAt gives the rest). It must be set explicitly: with an
	// unknown length and no part size, minio-go sizes its part buffer for
	// a 5 TiB object and allocates about 528 MiB per upload (minio-go
	// #848, #1473). Upload's parts are on local disk (PartFile), not on
	// the heap, so the smallest part S3 takes costs the least disk and
	// page cache; 10,000 parts still hold 327 GiB.
	PartSize = MinPartSize

	// MaxPresignTTL is the longest lifetime SigV4 allows a presigned URL.
	MaxPresignTTL = 7 * 24 * time.Hour

	// pingTimeout bounds Ping so a readiness probe answers before the
	// kubelet gives up on it, even while minio-go is retrying.
	pingTimeout = 2 * time.Second

	defaultContentType = "application/octet-stream"
)

// Config says where the object store is and how to authenticate.
type Config struct {
	// Endpoint is host:port, without a scheme; UseTLS selects https.
	Endpoint  string
	AccessKey string
	SecretKey string
	// Region may be empty: minio-go then looks up (and caches) each bucket's
	// location with one extra request. Set it to skip that round trip.
	Region string
	UseTLS bool
}

// String masks the secret key so a Config can be printed at start-up.
func (c Config) String() string {
	scheme := "http"
	if c.UseTLS {
		scheme = "https"
	}
	return fmt.Sprintf("%s://%s (access key %q, secret key %s, region %q)",
		scheme, c.Endpoint, c.AccessKey, mask(c.SecretKey), c.Region)
}

// LogValue masks the secret key; without it slog's JSON handler would
// marshal the struct field by field, secret included.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("endpoint", c.Endpoint),
		slog.String("access_key", c.AccessKey),
		slog.String("secret_key", mask(c.SecretKey)),
		slog.String("region", c.Region),
		slog.Bool("use_tls", c.UseTLS),
	)
}

func mask(secret string) string {
	if secret == "" {
		return "(unset)"
	}
	return "***"
}

// Info describes a stored object.
type Info struct {
	Key  string
	Size int64
	// ContentType is empty in List results: S3 listings do not carry it.
	ContentType string
	// ETag is unquoted. For multipart uploads it is not an MD5 of the
	// content, so it identifies a version but cannot verify bytes.
	ETag string
	// LastModified is zero in Upload results when the server did not report
	// it; Stat returns the authoritative value.
	LastModified time.Time
	// SHA256 is the lower-case hex SHA-256 of the object's bytes, computed
	// by Upload as they went up; empty in other results (the store keeps
	// no whole-object SHA-256 of a multipart object).
	SHA256 string
	// ChecksumSHA256 is the object's S3 x-amz-checksum-sha256, which the
	// store verified when it received the bytes and returns without them
	// (Stat): the base64 SHA-256 of an object stored in one request, or
	// the base64 SHA-256 of its parts' SHA-256s followed by "-<parts>" for
	// a multipart one. Empty for objects stored without a checksum, and in
	// List results. See HasSHA256.
	ChecksumSHA256 string
}

// Store reads and writes objects. It is safe for concurrent use; create one
// per process and share it.
type Store struct {
	client *minio.Client
	core   minio.Core
	region string
	// partDir is where Upload's part files go (os.TempDir() when empty).
	partDir string
}

// New validates cfg and returns a Store. It does not contact the server;
// use Ping for that.
func New(cfg Config) (*Store, error) {
	switch {
	case cfg.Endpoint == "":
		return nil, errors.New("blob: endpoint is empty (want host:port)")
	case strings.Contains(cfg.Endpoint, "://"):
		return nil, fmt.Errorf("blob: endpoint %q must be host:port without a scheme (set UseTLS for https)", cfg.Endpoint)
	case cfg.AccessKey == "" || cfg.SecretKey == "":
		return nil, errors.New("blob: access key and secret key are required")
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure: cfg.UseTLS,
		Region: cfg.Region,
	})
	if err != nil {
		return nil, fmt.Errorf("blob: client for %s: %w", cfg.Endpoint, err)
	}
	return &Store{client: client, core: minio.Core{Client: client}, region: cfg.Region}, nil
}

// EnsureBucket creates bucket if it does not exist. It is idempotent and
// safe when several processes race to create the same bucket.
func (s *Store) EnsureBucket(ctx context.Context, bucket string) error {
	if err := checkBucket(bucket); err != nil {
		return err
	}
	// Checking first lets a deployment whose credentials may not create
	// buckets start against a bucket provisioned by someone else.
	exists, err := s.client.BucketExists(ctx, bucket)
	if err != nil {
		return fmt.Errorf("check bucket %s: %w", bucket, translate(err))
	}
	if exists {
		return nil
	}
	err = s.client.MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: s.region})
	if err == nil {
		return nil
	}
	switch errorCode(err) {
	case minio.BucketAlreadyOwnedByYou:
		// Another process won the race.
		return nil
	case minio.BucketAlreadyExists:
		// On AWS this can mean another account owns the name, so only
		// accept it if we can actually reach the bucket.
		if exists, xerr := s.client.BucketExists(ctx, bucket); xerr == nil && exists {
			return nil
		}
	}
	return fmt.Errorf("create bucket %s: %w", bucket, translate(err))
}

// Ping checks that the server answers and accepts the credentials. It is
// meant for /readyz and gives up after a couple of seconds.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	// ListBuckets needs no bucket name and, on MinIO, succeeds even for
	// policies restricted to one bucket (the listing is filtered).
	if _, err := s.client.ListBuckets(ctx); err != nil {
		return fmt.Errorf("ping %s: %w", s.client.EndpointURL().Host, translate(err))
	}
	return nil
}

// Open starts a streaming GET of bucket/key. The caller must Close the
// reader; reading stops when ctx ends. A missing object or bucket is
// reported here, as ErrNotFound, not on the first Read.
func (s *Store) Open(ctx context.Context, bucket, key string) (io.ReadCloser, Info, error) {
	if err := checkObject(bucket, key); err != nil {
		return nil, Info{}, err
	}
	// Core.GetObject issues the GET at once (one round trip, errors up
	// front), unlike Client.GetObject which defers it to the first Read.
	body, oi, _, err := s.core.GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, Info{}, fmt.Errorf("open %s/%s: %w", bucket, key, translate(err))
	}
	return translatedBody{body}, infoOf(oi), nil
}

// translatedBody translates read errors too: a server that dies while an
// object streams cuts the body off, and that is ErrUnavailable as much as
// a refused GET.
type translatedBody struct{ io.ReadCloser }

func (b translatedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = translate(err)
	}
	return n, err
}

// Stat returns the object's metadata, with the checksum the store keeps
// (Info.ChecksumSHA256), or ErrNotFound. It reads no object bytes.
func (s *Store) Stat(ctx context.Context, bucket, key string) (Info, error) {
	if err := checkObject(bucket, key); err != nil {
		return Info{}, err
	}
	// Checksum mode makes the answer carry the stored checksum.
	oi, err := s.client.StatObject(ctx, bucket, key, minio.StatObjectOptions{Checksum: true})
	if err != nil {
		return Info{}, fmt.Errorf("stat %s/%s: %w", bucket, key, translate(err))
	}
	return infoOf(oi), nil
}

// Delete removes bucket/key. Deleting a missing key is not an error, so a
// redelivered cleanup succeeds; a missing bucket is (ErrNotFound), because
// it points at a misconfiguration rather than a repeated request.
func (s *Store) Delete(ctx context.Context, bucket, key string) error {
	if err := checkObject(bucket, key); err != nil {
		return err
	}
	err := s.client.RemoveObject(ctx, bucket, key, minio.RemoveObjectOptions{})
	if err != nil && errorCode(err) != minio.NoSuchKey {
		return fmt.Errorf("delete %s/%s: %w", bucket, key, translate(err))
	}
	return nil
}

// PresignGet returns a URL that downloads bucket/key without credentials
// until ttl has passed. ttl must be between one second and MaxPresignTTL
// (SigV4 counts whole seconds and caps at 7 days); mint URLs on demand,
// after the authorization check, with a short ttl. The URL points at the
// configured endpoint, which users may not be able to reach. The object's
// existence is not checked.
func (s *Store) PresignGet(ctx context.Context, bucket, key string, ttl time.Duration) (*url.URL, error) {
	if err := checkObject(bucket, key); err != nil {
		return nil, err
	}
	if ttl < time.Second || ttl > MaxPresignTTL {
		return nil, fmt.Errorf("presign %s/%s: %w: ttl %v not within [1s, %v]", bucket, key, ErrInvalidArgument, ttl, MaxPresignTTL)
	}
	u, err := s.client.PresignedGetObject(ctx, bucket, key, ttl, nil)
	if err != nil {
		return nil, fmt.Errorf("presign %s/%s: %w", bucket, key, translate(err))
	}
	return u, nil
}

// List returns every object under prefix, recursively, in key order.
// It holds the whole listing in memory; it is meant for the handful of
// parts of one job, not for sweeping a bucket.
func (s *Store) List(ctx context.Context, bucket, prefix string) ([]Info, error) {
	if err := checkBucket(bucket); err != nil {
		return nil, err
	}
	// Cancelling stops minio-go's listing goroutine if we return early.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var out []Info
	for oi := range s.client.ListObjectsIter(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if oi.Err != nil {
			return nil, fmt.Errorf("list %s/%s: %w", bucket, prefix, translate(oi.Err))
		}
		out = append(out, infoOf(oi))
	}
	return out, nil
}

// AbortIncompleteUploads aborts every unfinished multipart upload of
// bucket/key and reports how many there were. MinIO ignores the S3
// AbortIncompleteMultipartUpload lifecycle rule, so a sweeper calls this for
// the keys of jobs that failed or whose uploader died. MinIO lists uploads
// by exact key only, hence a key and not a prefix.
func (s *Store) AbortIncompleteUploads(ctx context.Context, bucket, key string) (int, error) {
	if err := checkObject(bucket, key); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Collect first: aborting while the listing is paged could skip uploads.
	var ids []string
	for u := range s.client.ListIncompleteUploads(ctx, bucket, key, true) {
		if u.Err != nil {
			return 0, fmt.Errorf("list uploads %s/%s: %w", bucket, key, translate(u.Err))
		}
		if u.Key == key {
			ids = append(ids, u.UploadID)
		}
	}
	n := 0
	for _, id := range ids {
		err := s.core.AbortMultipartUpload(ctx, bucket, key, id)
		if err != nil && errorCode(err) != minio.NoSuchUpload {
			return n, fmt.Errorf("abort upload %s/%s: %w", bucket, key, translate(err))
		}
		n++
	}
	return n, nil
}

// Upload describes an unfinished multipart upload.
type Upload struct {
	Key      string
	UploadID string
	// Initiated is when the upload was started, by the server's clock.
	Initiated time.Time
}

// ListIncompleteUploads returns the unfinished multipart uploads whose key
// starts with prefix, in key order. MinIO answers ListMultipartUploads for
// an exact key or for the whole bucket, never for a shorter prefix (a
// deliberate simplification of its multipart API), so the bucket is listed
// and filtered here. The listing is held in memory: unfinished uploads are
// few, since every Upload aborts its own on failure.
func (s *Store) ListIncompleteUploads(ctx context.Context, bucket, prefix string) ([]Upload, error) {
	if err := checkBucket(bucket); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var out []Upload
	for u := range s.client.ListIncompleteUploads(ctx, bucket, "", true) {
		if u.Err != nil {
			return nil, fmt.Errorf("list uploads %s/%s: %w", bucket, prefix, translate(u.Err))
		}
		if strings.HasPrefix(u.Key, prefix) {
			out = append(out, Upload{Key: u.Key, UploadID: u.UploadID, Initiated: u.Initiated.UTC()})
		}
	}
	slices.SortStableFunc(out, func(a, b Upload) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// AbortUpload aborts one unfinished multipart upload. Aborting an upload
// that no longer exists (completed or aborted meanwhile) is not an error,
// so two sweepers may race.
func (s *Store) AbortUpload(ctx context.Context, bucket, key, uploadID string) error {
	if err := checkObject(bucket, key); err != nil {
		return err
	}
	err := s.core.AbortMultipartUpload(ctx, bucket, key, uploadID)
	if err != nil && errorCode(err) != minio.NoSuchUpload {
		return fmt.Errorf("abort upload %s/%s: %w", bucket, key, translate(err))
	}
	return nil
}

func infoOf(oi minio.ObjectInfo) Info {
	return Info{
		Key:          oi.Key,
		Size:         oi.Size,
		ContentType:  oi.ContentType,
		ETag:         oi.ETag,
		LastModified: oi.LastModified.UTC(),
		// Set only when asked for (Stat).
		ChecksumSHA256: oi.ChecksumSHA256,
	}
}

func checkBucket(bucket string) error {
	if err := s3utils.CheckValidBucketNameStrict(bucket); err != nil {
		return fmt.Errorf("%w: bucket %q: %v", ErrInvalidArgument, bucket, err)
	}
	return nil
}

func checkObject(bucket, key string) error {
	if err := checkBucket(bucket); err != nil {
		return err
	}
	if err := s3utils.CheckValidObjectName(key); err != nil {
		return fmt.Errorf("%w: key %q: %v", ErrInvalidArgument, key, err)
	}
	return nil
}

// errorCode returns the S3 error code of err, or "" if err is not an S3
// error response.
func errorCode(err error) string {
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		return er.Code
	}
	return ""
}

// translate maps minio errors onto this package's sentinels. Errors it does
// not recognise pass through so that context.Canceled and network errors
// stay visible to errors.Is; unavailability is added next to the cause.
func translate(err error) error {
	var er minio.ErrorResponse
	if !errors.As(err, &er) {
		if unreachable(err) {
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return err
	}
	switch {
	case er.Code == minio.NoSuchKey || er.Code == minio.NoSuchBucket || er.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%w (%s)", ErrNotFound, er.Code)
	case er.Code == minio.InvalidBucketName || er.Code == minio.XMinioInvalidObjectName:
		return fmt.Errorf("%w: %s", ErrInvalidArgument, er.Message)
	case overloaded(er):
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// overloaded reports an S3 answer that says the server, not the request,
// is the problem. The codes and statuses are the ones minio-go itself
// retries (retry.go: retryableS3Codes, retryableHTTPStatusCodes) without
// the credential ones, plus MinIO's own for a server still starting or
// short of its quorum.
func overloaded(er minio.ErrorResponse) bool {
	switch er.Code {
	case "RequestTimeout", "Throttling", "ThrottlingException", "RequestLimitExceeded", "RequestThrottled",
		"InternalError", "SlowDown", "SlowDownWrite", "SlowDownRead", "ServiceUnavailable",
		"XMinioServerNotInitialized", "XMinioReadQuorum", "XMinioWriteQuorum":
		return true
	}
	switch er.StatusCode {
	case http.StatusRequestTimeout, http.StatusTooManyRequests, 499, http.StatusInternalServerError,
		http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout, 520:
		return true
	}
	return false
}

// unreachable reports a transport failure: no answer at all (refused,
// reset, timed out, cut off mid-body). The caller's own cancellation is
// not one.
func unreachable(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return !errors.Is(ue.Err, context.Canceled)
	}
	if _, ok := errors.AsType[*net.OpError](err); ok {
		return true
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return true
	}
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED)
}
