// Package s3 is an objectstore.Bucket on Amazon S3 or an S3-compatible
// server such as MinIO, built on aws-sdk-go-v2.
//
// For MinIO set Endpoint (e.g. "http://127.0.0.1:9000") and UsePathStyle,
// and give static keys. Without keys the SDK's default credential chain is
// used: environment, shared config and credentials files, SSO, and the EC2
// instance profile through IMDSv2.
//
// Uploads are buffered in parts of PartSize bytes (memory per Put is bounded
// by Concurrency × PartSize): an object that fits in one part is sent with
// one PutObject, a larger one with a multipart upload whose parts are sent
// Concurrency at a time and which is aborted on any failure, so nothing is
// visible until CompleteMultipartUpload. Every request carries a CRC32C
// checksum that the server verifies (S3 and MinIO accept CRC32C); the SDK's
// own default checksum calculation is set to "when required" so that it adds
// no trailing checksums of its own.
//
// Each request is retried by objectstore.Retry (Options.Retry); the SDK's own
// retryer is off, so that one policy, with an injectable sleep, applies.
package s3

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/tierkv/tierkv/objectstore"
)

// Server-side encryption modes for Options.SSE.
const (
	// SSES3 is SSE-S3: the server encrypts with keys it manages.
	SSES3 = "AES256"
	// SSEKMS is SSE-KMS: the server encrypts with a KMS key (SSEKMSKeyID, or
	// the account's default key). MinIO accepts it only with a KMS
	// configured.
	SSEKMS = "aws:kms"
)

// MinPartSize is S3's (and MinIO's) minimum size of a multipart part but the
// last.
const MinPartSize = 5 << 20

// maxParts is S3's maximum number of parts of a multipart upload.
const maxParts = 10000

// Options configures Open.
type Options struct {
	// Bucket is the bucket name. Required; the bucket must exist.
	Bucket string
	// Endpoint is the server's URL for S3-compatible servers, e.g.
	// "http://127.0.0.1:9000". Empty: AWS S3 in Region.
	Endpoint string
	// Region is the signing region. Default: the SDK's configuration
	// (AWS_REGION, shared config), else "us-east-1" (what MinIO expects).
	Region string
	// UsePathStyle addresses the bucket in the path ("host/bucket/key")
	// instead of the host name. MinIO needs it.
	UsePathStyle bool
	// AccessKeyID, SecretAccessKey and SessionToken are static credentials.
	// If AccessKeyID is empty, the SDK's default chain is used (environment,
	// shared files, SSO, EC2 instance profile via IMDSv2).
	AccessKeyID, SecretAccessKey, SessionToken string
	// SSE is the server-side encryption of new objects: "" (the bucket's
	// default), SSES3 or SSEKMS.
	SSE string
	// SSEKMSKeyID is the KMS key for SSEKMS; empty means the default key.
	SSEKMSKeyID string
	// PartSize is the size of multipart parts and the largest object sent
	// with one PutObject. Default 16 MiB (a 160 GiB object at most, with
	// 10,000 parts); at least MinPartSize.
	PartSize int64
	// Concurrency is the number of parts of one upload in flight. Default 4.
	Concurrency int
	// Retry is the retry policy of every request (zero value: defaults).
	Retry objectstore.RetryOptions
	// HTTPClient overrides the HTTP client (tests). Default: a client of its
	// own, whose idle connections Close closes.
	HTTPClient *http.Client
}

// EnsureDefaults fills in zero fields with their defaults.
func (o *Options) EnsureDefaults() {
	if o.PartSize == 0 {
		o.PartSize = 16 << 20 // 2 × the tierkv table target size, few requests
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 4 // saturates a 1 Gbit/s link at 16 MiB parts
	}
	o.Retry = o.Retry.EnsureDefaults()
}

// Validate checks the options.
func (o *Options) Validate() error {
	switch {
	case o.Bucket == "":
		return errors.New("objectstore/s3: Options.Bucket is required")
	case o.PartSize < MinPartSize:
		return fmt.Errorf("objectstore/s3: Options.PartSize %d is below the minimum %d", o.PartSize, MinPartSize)
	case o.SSE != "" && o.SSE != SSES3 && o.SSE != SSEKMS:
		return fmt.Errorf("objectstore/s3: Options.SSE %q is not %q, %q or empty", o.SSE, SSES3, SSEKMS)
	case o.SSEKMSKeyID != "" && o.SSE != SSEKMS:
		return fmt.Errorf("objectstore/s3: Options.SSEKMSKeyID needs SSE %q", SSEKMS)
	case (o.AccessKeyID == "") != (o.SecretAccessKey == ""):
		return errors.New("objectstore/s3: give both AccessKeyID and SecretAccessKey, or neither")
	}
	return nil
}

// Bucket is an objectstore.Bucket on one S3 bucket. Create it with Open.
type Bucket struct {
	opts      Options
	client    *s3.Client
	transport *http.Transport // nil if Options.HTTPClient was given
	closed    atomic.Bool

	// multipartUploadsForTesting counts completed multipart uploads.
	multipartUploads atomic.Int64
}

var _ objectstore.Bucket = (*Bucket)(nil)

// Open returns a Bucket for opts.Bucket. It does not contact the server.
func Open(ctx context.Context, opts Options) (*Bucket, error) {
	opts.EnsureDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	b := &Bucket{opts: opts}
	loadOpts := []func(*awsconfig.LoadOptions) error{
		awsconfig.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
		awsconfig.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		awsconfig.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
	}
	if opts.Region != "" {
		loadOpts = append(loadOpts, awsconfig.WithRegion(opts.Region))
	}
	if opts.AccessKeyID != "" {
		loadOpts = append(loadOpts, awsconfig.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(opts.AccessKeyID, opts.SecretAccessKey, opts.SessionToken)))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("objectstore/s3: load AWS config: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	// NB: the SDK's BuildableClient applies AWS_CA_BUNDLE and friends, but
	// hides its live transport; take a copy of that transport so that Close
	// can close its idle connections.
	httpClient := opts.HTTPClient
	if httpClient == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		if bc, ok := cfg.HTTPClient.(*awshttp.BuildableClient); ok {
			tr = bc.GetTransport()
		}
		tr.MaxIdleConnsPerHost = 64
		tr.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		tr.ResponseHeaderTimeout = 60 * time.Second
		b.transport = tr
		httpClient = &http.Client{
			Transport: tr,
			// Like the SDK's client: S3 redirects are errors to report.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	b.client = s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.UsePathStyle = opts.UsePathStyle
		o.HTTPClient = httpClient
		if opts.Endpoint != "" {
			o.BaseEndpoint = aws.String(opts.Endpoint)
		}
		o.DisableLogOutputChecksumValidationSkipped = true
	})
	return b, nil
}

// MultipartUploadsForTesting returns the number of multipart uploads
// completed by this Bucket.
func (b *Bucket) MultipartUploadsForTesting() int64 { return b.multipartUploads.Load() }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crcString(c uint32) *string {
	var p [4]byte
	binary.BigEndian.PutUint32(p[:], c)
	return aws.String(base64.StdEncoding.EncodeToString(p[:]))
}

func parseCRC(s *string) (uint32, bool) {
	if s == nil {
		return 0, false
	}
	p, err := base64.StdEncoding.DecodeString(*s)
	if err != nil || len(p) != 4 {
		return 0, false // e.g. a composite "xxxx-3"
	}
	return binary.BigEndian.Uint32(p), true
}

// classify maps an SDK error to the objectstore's: not-found to ErrNotExist,
// retryable ones marked transient.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "NoSuchKey", "NotFound":
			return fmt.Errorf("%w (%w)", objectstore.ErrNotExist, err)
		case "SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling", "ThrottlingException", "RequestTimeTooSkewed", "XMinioServerNotInitialized":
			return objectstore.MarkTransient(err)
		}
	}
	var respErr *smithyhttp.ResponseError
	if errors.As(err, &respErr) {
		if code := respErr.HTTPStatusCode(); code >= 500 || code == http.StatusTooManyRequests {
			return objectstore.MarkTransient(err)
		}
		if respErr.HTTPStatusCode() == http.StatusNotFound && !isCode(err, "NoSuchBucket") {
			return fmt.Errorf("%w (%w)", objectstore.ErrNotExist, err)
		}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if retry.IsErrorRetryables(retry.DefaultRetryables).IsErrorRetryable(err) == aws.TrueTernary ||
		retry.IsErrorThrottles(retry.DefaultThrottles).IsErrorThrottle(err) == aws.TrueTernary {
		return objectstore.MarkTransient(err)
	}
	return err
}

func isCode(err error, code string) bool {
	var apiErr smithy.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode() == code
}

func opError(op, name string, err error) error {
	return fmt.Errorf("objectstore/s3: %s %s: %w", op, name, err)
}

// do runs one request with retries, classifying its errors.
func (b *Bucket) do(ctx context.Context, fn func(ctx context.Context) error) error {
	return objectstore.Retry(ctx, b.opts.Retry, func(ctx context.Context) error {
		return classify(fn(ctx))
	})
}

func (b *Bucket) check(ctx context.Context, op, name string) error {
	if err := objectstore.ValidateName(name); err != nil {
		return opError(op, name, err)
	}
	if b.closed.Load() {
		return opError(op, name, objectstore.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return opError(op, name, err)
	}
	return nil
}

// Put is part of the objectstore.Bucket interface.
func (b *Bucket) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	if err := b.check(ctx, "put", name); err != nil {
		return err
	}
	r = objectstore.SizedReader(objectstore.ContextReader(ctx, r), size)
	// Buffer up to one part; a small object allocates only what it needs.
	var buf bytes.Buffer
	if size >= 0 {
		buf.Grow(int(min(size, b.opts.PartSize)))
	}
	n, err := io.CopyN(&buf, r, b.opts.PartSize)
	if err == nil && n == size {
		// Exactly one part of a known size: check that r ends here (r is
		// a SizedReader: extra bytes are an error) and send it whole.
		var one [1]byte
		if _, err = r.Read(one[:]); err != io.EOF {
			if err == nil {
				err = objectstore.ErrSizeMismatch
			}
			return opError("put", name, err)
		}
	}
	if err == nil {
		// A full part: there may be more. Multipart.
		if err := b.putMultipart(ctx, name, r, buf.Bytes()); err != nil {
			return opError("put", name, err)
		}
		return nil
	}
	if err != io.EOF {
		return opError("put", name, err)
	}
	data := buf.Bytes()[:n]
	crc := crc32.Checksum(data, castagnoli)
	err = b.do(ctx, func(ctx context.Context) error {
		in := &s3.PutObjectInput{
			Bucket:         &b.opts.Bucket,
			Key:            &name,
			Body:           bytes.NewReader(data),
			ContentLength:  aws.Int64(int64(len(data))),
			ChecksumCRC32C: crcString(crc),
		}
		b.setSSE(&in.ServerSideEncryption, &in.SSEKMSKeyId)
		_, err := b.client.PutObject(ctx, in)
		return err
	})
	if err != nil {
		return opError("put", name, err)
	}
	return nil
}

func (b *Bucket) setSSE(sse *types.ServerSideEncryption, keyID **string) {
	if b.opts.SSE != "" {
		*sse = types.ServerSideEncryption(b.opts.SSE)
	}
	if b.opts.SSEKMSKeyID != "" {
		*keyID = aws.String(b.opts.SSEKMSKeyID)
	}
}

// putMultipart uploads first and the rest of r as a multipart upload with a
// full-object CRC32C. On any failure it aborts the upload.
func (b *Bucket) putMultipart(ctx context.Context, name string, r io.Reader, first []byte) (err error) {
	var uploadID string
	err = b.do(ctx, func(ctx context.Context) error {
		in := &s3.CreateMultipartUploadInput{
			Bucket:            &b.opts.Bucket,
			Key:               &name,
			ChecksumAlgorithm: types.ChecksumAlgorithmCrc32c,
			ChecksumType:      types.ChecksumTypeFullObject,
		}
		b.setSSE(&in.ServerSideEncryption, &in.SSEKMSKeyId)
		out, err := b.client.CreateMultipartUpload(ctx, in)
		if err == nil {
			uploadID = aws.ToString(out.UploadId)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("create multipart upload: %w", err)
	}
	defer func() {
		if err == nil {
			return
		}
		// Abort even if ctx was cancelled, with a bound of its own.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		aerr := b.do(actx, func(ctx context.Context) error {
			_, err := b.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
				Bucket: &b.opts.Bucket, Key: &name, UploadId: &uploadID,
			})
			return err
		})
		if aerr != nil {
			err = fmt.Errorf("%w (and aborting upload %s: %w)", err, uploadID, aerr)
		}
	}()

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		parts []types.CompletedPart
		total = crc32.New(castagnoli)
		size  int64
	)
	// buffers bounds the memory of the upload to Concurrency parts.
	buffers := make(chan []byte, b.opts.Concurrency)
	buffers <- first
	for range b.opts.Concurrency - 1 {
		buffers <- nil
	}
	buf := <-buffers
	n := len(first)
	for partNum := int32(1); ; partNum++ {
		if partNum > maxParts {
			err = fmt.Errorf("more than %d parts of %d bytes", maxParts, b.opts.PartSize)
			break
		}
		data := buf[:n]
		total.Write(data)
		size += int64(n)
		crc := crc32.Checksum(data, castagnoli)
		partBuf := buf
		wg.Go(func() {
			defer func() { buffers <- partBuf }()
			err := b.do(ctx, func(ctx context.Context) error {
				out, err := b.client.UploadPart(ctx, &s3.UploadPartInput{
					Bucket: &b.opts.Bucket, Key: &name, UploadId: &uploadID,
					PartNumber:     aws.Int32(partNum),
					Body:           bytes.NewReader(data),
					ContentLength:  aws.Int64(int64(len(data))),
					ChecksumCRC32C: crcString(crc),
				})
				if err == nil {
					mu.Lock()
					parts = append(parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(partNum), ChecksumCRC32C: out.ChecksumCRC32C})
					mu.Unlock()
				}
				return err
			})
			if err != nil {
				cancel(fmt.Errorf("upload part %d: %w", partNum, err))
			}
		})
		// Read the next part into a free buffer.
		select {
		case buf = <-buffers:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		if int64(cap(buf)) < b.opts.PartSize {
			buf = make([]byte, b.opts.PartSize)
		}
		buf = buf[:b.opts.PartSize]
		var rerr error
		n, rerr = io.ReadFull(r, buf)
		if rerr == io.EOF {
			break
		}
		if rerr != nil && rerr != io.ErrUnexpectedEOF {
			err = rerr
			break
		}
	}
	if err != nil {
		cancel(err)
	}
	wg.Wait()
	if cause := context.Cause(ctx); cause != nil {
		return cause
	}
	slices.SortFunc(parts, func(a, b types.CompletedPart) int { return cmp.Compare(*a.PartNumber, *b.PartNumber) })
	err = b.do(ctx, func(ctx context.Context) error {
		_, err := b.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
			Bucket: &b.opts.Bucket, Key: &name, UploadId: &uploadID,
			MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
			ChecksumCRC32C:  crcString(total.Sum32()),
			ChecksumType:    types.ChecksumTypeFullObject,
			MpuObjectSize:   aws.Int64(size),
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("complete multipart upload: %w", err)
	}
	b.multipartUploads.Add(1)
	return nil
}

// Get is part of the objectstore.Bucket interface.
func (b *Bucket) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if err := b.check(ctx, "get", name); err != nil {
		return nil, err
	}
	var body io.ReadCloser
	err := b.do(ctx, func(ctx context.Context) error {
		out, err := b.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &b.opts.Bucket, Key: &name})
		if err == nil {
			body = out.Body
		}
		return err
	})
	if err != nil {
		return nil, opError("get", name, err)
	}
	return body, nil
}

// GetRange is part of the objectstore.Bucket interface. A zero length, and
// an offset at or past the end (S3 answers 416), cost an extra HEAD request.
func (b *Bucket) GetRange(ctx context.Context, name string, off, length int64) (io.ReadCloser, error) {
	if err := b.check(ctx, "get", name); err != nil {
		return nil, err
	}
	if off < 0 {
		return nil, opError("get", name, fmt.Errorf("%w: offset %d", objectstore.ErrInvalidRange, off))
	}
	if length == 0 {
		return b.emptyRange(ctx, name, off)
	}
	rng := fmt.Sprintf("bytes=%d-", off)
	if length > 0 {
		rng = fmt.Sprintf("bytes=%d-%d", off, off+length-1)
	}
	var body io.ReadCloser
	err := b.do(ctx, func(ctx context.Context) error {
		out, err := b.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &b.opts.Bucket, Key: &name, Range: &rng})
		if err == nil {
			body = out.Body
		}
		return err
	})
	if err != nil {
		if isCode(err, "InvalidRange") {
			return b.emptyRange(ctx, name, off)
		}
		return nil, opError("get", name, err)
	}
	return body, nil
}

// emptyRange answers a range that holds no bytes: empty if off is the
// object's size, ErrInvalidRange past it, ErrNotExist if there is no object.
func (b *Bucket) emptyRange(ctx context.Context, name string, off int64) (io.ReadCloser, error) {
	a, err := b.Attributes(ctx, name)
	if err != nil {
		return nil, err
	}
	if _, err := objectstore.RangeEnd(a.Size, off, 0); err != nil {
		return nil, opError("get", name, err)
	}
	return io.NopCloser(bytes.NewReader(nil)), nil
}

// Attributes is part of the objectstore.Bucket interface. CRC32C is set for
// objects with a full-object CRC32C checksum, which this package's uploads
// have.
func (b *Bucket) Attributes(ctx context.Context, name string) (objectstore.Attributes, error) {
	if err := b.check(ctx, "attributes", name); err != nil {
		return objectstore.Attributes{}, err
	}
	var out *s3.HeadObjectOutput
	err := b.do(ctx, func(ctx context.Context) error {
		var err error
		out, err = b.client.HeadObject(ctx, &s3.HeadObjectInput{
			Bucket: &b.opts.Bucket, Key: &name, ChecksumMode: types.ChecksumModeEnabled,
		})
		return err
	})
	if err != nil {
		return objectstore.Attributes{}, opError("attributes", name, err)
	}
	a := objectstore.Attributes{
		Size:         aws.ToInt64(out.ContentLength),
		LastModified: aws.ToTime(out.LastModified),
		ETag:         aws.ToString(out.ETag),
	}
	if out.ChecksumType == "" || out.ChecksumType == types.ChecksumTypeFullObject {
		a.CRC32C, a.HasCRC32C = parseCRC(out.ChecksumCRC32C)
	}
	return a, nil
}

// List is part of the objectstore.Bucket interface.
func (b *Bucket) List(ctx context.Context, prefix, startAfter string, limit int) ([]string, string, error) {
	if err := objectstore.ValidatePrefix(prefix); err != nil {
		return nil, "", opError("list", prefix, err)
	}
	if b.closed.Load() {
		return nil, "", opError("list", prefix, objectstore.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return nil, "", opError("list", prefix, err)
	}
	if limit <= 0 || limit > objectstore.DefaultListLimit {
		limit = objectstore.DefaultListLimit // S3 returns at most 1000 keys a page
	}
	in := &s3.ListObjectsV2Input{Bucket: &b.opts.Bucket, MaxKeys: aws.Int32(int32(limit))}
	if prefix != "" {
		in.Prefix = &prefix
	}
	if startAfter != "" {
		in.StartAfter = &startAfter
	}
	var out *s3.ListObjectsV2Output
	err := b.do(ctx, func(ctx context.Context) error {
		var err error
		out, err = b.client.ListObjectsV2(ctx, in)
		return err
	})
	if err != nil {
		return nil, "", opError("list", prefix, err)
	}
	names := make([]string, 0, len(out.Contents))
	for _, o := range out.Contents {
		names = append(names, aws.ToString(o.Key))
	}
	next := ""
	if aws.ToBool(out.IsTruncated) && len(names) > 0 {
		next = names[len(names)-1]
	}
	return names, next, nil
}

// Delete is part of the objectstore.Bucket interface.
func (b *Bucket) Delete(ctx context.Context, name string) error {
	if err := b.check(ctx, "delete", name); err != nil {
		return err
	}
	err := b.do(ctx, func(ctx context.Context) error {
		_, err := b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &b.opts.Bucket, Key: &name})
		return err
	})
	if err != nil && !errors.Is(err, objectstore.ErrNotExist) {
		return opError("delete", name, err)
	}
	return nil
}

// Close is part of the objectstore.Bucket interface. It closes idle
// connections; later calls fail with ErrClosed.
func (b *Bucket) Close() error {
	b.closed.Store(true)
	if b.transport != nil {
		b.transport.CloseIdleConnections()
	}
	return nil
}
