package s3_test

import (
	"bytes"
	"context"
	"errors"
	"hash/crc32"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"go.uber.org/goleak"

	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/objectstore/miniotest"
	"github.com/tierkv/tierkv/objectstore/objectstoretest"
	"github.com/tierkv/tierkv/objectstore/s3"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func start(t *testing.T) *miniotest.Server {
	t.Helper()
	return miniotest.Start(t)
}

func open(t *testing.T, srv *miniotest.Server, bucket string, mod func(*s3.Options)) *s3.Bucket {
	t.Helper()
	opts := s3.Options{
		Bucket:          bucket,
		Endpoint:        srv.Endpoint,
		Region:          "us-east-1",
		UsePathStyle:    true,
		AccessKeyID:     srv.AccessKey,
		SecretAccessKey: srv.SecretKey,
		PartSize:        s3.MinPartSize, // so that the suite's large object is multipart
		Retry:           objectstore.RetryOptions{Sleep: noSleep},
	}
	if mod != nil {
		mod(&opts)
	}
	b, err := s3.Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func noSleep(ctx context.Context, d time.Duration) error { return ctx.Err() }

func TestS3(t *testing.T) {
	srv := start(t)
	t.Run("Acceptance", func(t *testing.T) {
		objectstoretest.AcceptanceTest(t, func(t *testing.T) objectstore.Bucket {
			return open(t, srv, srv.NewBucket(t), nil)
		})
	})
	t.Run("VerifiedByMinioGo", func(t *testing.T) { testVerifiedByMinioGo(t, srv) })
	t.Run("SSE", func(t *testing.T) { testSSE(t, srv) })
	t.Run("Retries", func(t *testing.T) { testRetries(t, srv) })
	t.Run("Permanent", func(t *testing.T) { testPermanent(t, srv) })
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// testVerifiedByMinioGo checks with minio-go, an independent client, what
// the backend wrote: content, size, and that large objects went multipart.
func testVerifiedByMinioGo(t *testing.T, srv *miniotest.Server) {
	bucket := srv.NewBucket(t)
	b := open(t, srv, bucket, nil)
	defer b.Close()
	ctx := context.Background()
	small := objectstoretest.Data(1, 1000)
	large := objectstoretest.Data(2, 2*s3.MinPartSize+777) // 3 parts
	objectstoretest.Put(t, b, "v/small", small)
	objectstoretest.Put(t, b, "v/large", large)
	exact := objectstoretest.Data(3, s3.MinPartSize) // one part: a single PutObject
	objectstoretest.Put(t, b, "v/exact", exact)
	if got := b.MultipartUploadsForTesting(); got != 1 {
		t.Fatalf("%d multipart uploads, want 1 (the large object)", got)
	}
	for _, tc := range []struct {
		name      string
		data      []byte
		etagParts string
	}{{"v/small", small, ""}, {"v/exact", exact, ""}, {"v/large", large, "-3"}} {
		info, err := srv.Client.StatObject(ctx, bucket, tc.name, minio.StatObjectOptions{})
		if err != nil {
			t.Fatalf("minio-go StatObject(%s): %v", tc.name, err)
		}
		if info.Size != int64(len(tc.data)) {
			t.Fatalf("minio-go: %s has %d bytes, want %d", tc.name, info.Size, len(tc.data))
		}
		if tc.etagParts != "" && !strings.HasSuffix(info.ETag, tc.etagParts) {
			t.Fatalf("minio-go: %s ETag %q lacks the multipart suffix %q", tc.name, info.ETag, tc.etagParts)
		}
		if tc.etagParts == "" && strings.Contains(info.ETag, "-") {
			t.Fatalf("minio-go: %s ETag %q is a multipart ETag", tc.name, info.ETag)
		}
		obj, err := srv.Client.GetObject(ctx, bucket, tc.name, minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(obj)
		obj.Close()
		if err != nil || !bytes.Equal(got, tc.data) {
			t.Fatalf("minio-go: content of %s differs (%d bytes, %v)", tc.name, len(got), err)
		}
		a, err := b.Attributes(ctx, tc.name)
		if err != nil {
			t.Fatal(err)
		}
		if !a.HasCRC32C || a.CRC32C != crc32.Checksum(tc.data, castagnoli) {
			t.Fatalf("Attributes(%s) = %+v, want the CRC32C %08x", tc.name, a, crc32.Checksum(tc.data, castagnoli))
		}
	}
	// An object written by minio-go reads back through the backend.
	if _, err := srv.Client.PutObject(ctx, bucket, "v/by-minio-go", bytes.NewReader(small), int64(len(small)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := objectstoretest.Get(t, b, "v/by-minio-go"); !bytes.Equal(got, small) {
		t.Fatal("an object written by minio-go reads back different")
	}
	// No multipart upload is left behind by a failed (size mismatch) upload.
	err := b.Put(ctx, "v/failed", io.MultiReader(bytes.NewReader(large)), int64(len(large))+1)
	if !errors.Is(err, objectstore.ErrSizeMismatch) {
		t.Fatalf("Put with a short reader = %v", err)
	}
	for u := range srv.Client.ListIncompleteUploads(ctx, bucket, "v/", true) {
		if u.Err != nil {
			t.Fatal(u.Err)
		}
		t.Fatalf("incomplete multipart upload left behind: %s %s", u.Key, u.UploadID)
	}
}

// testSSE uploads with SSE-S3 and SSE-KMS (the miniotest server has a static
// KMS key) and checks with minio-go that the objects are encrypted.
func testSSE(t *testing.T, srv *miniotest.Server) {
	ctx := context.Background()
	bucket := srv.NewBucket(t)
	for _, tc := range []struct{ sse, key string }{{s3.SSES3, ""}, {s3.SSEKMS, miniotest.KMSKeyID}} {
		b := open(t, srv, bucket, func(o *s3.Options) { o.SSE, o.SSEKMSKeyID = tc.sse, tc.key })
		for _, size := range []int{100, 2*s3.MinPartSize + 1} {
			data := objectstoretest.Data(uint64(size), size)
			name := "sse/" + strings.ReplaceAll(tc.sse, ":", "-") + "/" + string(rune('a'+size%26))
			objectstoretest.Put(t, b, name, data)
			if got := objectstoretest.Get(t, b, name); !bytes.Equal(got, data) {
				t.Fatalf("%s: content differs", name)
			}
			info, err := srv.Client.StatObject(ctx, bucket, name, minio.StatObjectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := info.Metadata.Get("X-Amz-Server-Side-Encryption"); got != tc.sse {
				t.Fatalf("%s: server-side encryption %q, want %q", name, got, tc.sse)
			}
		}
		b.Close()
	}
}

// flakyProxy forwards to MinIO but answers the first failures requests
// with 503 SlowDown.
type flakyProxy struct {
	proxy    *httputil.ReverseProxy
	failures atomic.Int64
	requests atomic.Int64
	status   int
}

func (p *flakyProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.requests.Add(1)
	if p.failures.Add(-1) >= 0 {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(p.status)
		code := "SlowDown"
		if p.status == http.StatusForbidden {
			code = "AccessDenied"
		}
		io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>`+code+`</Code><Message>injected</Message></Error>`)
		return
	}
	p.proxy.ServeHTTP(w, r)
}

func newFlakyProxy(t *testing.T, srv *miniotest.Server, status int) (*flakyProxy, string) {
	u, err := url.Parse(srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = tr
	p := &flakyProxy{proxy: rp, status: status}
	hs := httptest.NewServer(p)
	t.Cleanup(func() { hs.Close(); tr.CloseIdleConnections() })
	return p, hs.URL
}

// testRetries checks that real S3 throttling answers are retried with
// backoff until they succeed, and that attempts are bounded.
func testRetries(t *testing.T, srv *miniotest.Server) {
	bucket := srv.NewBucket(t)
	p, endpoint := newFlakyProxy(t, srv, http.StatusServiceUnavailable)
	var sleeps atomic.Int64
	b := open(t, srv, bucket, func(o *s3.Options) {
		o.Endpoint = endpoint
		o.Retry = objectstore.RetryOptions{MaxAttempts: 4, Sleep: func(ctx context.Context, d time.Duration) error {
			sleeps.Add(1)
			return ctx.Err()
		}}
	})
	defer b.Close()
	ctx := context.Background()
	data := objectstoretest.Data(3, 3000)
	p.failures.Store(3)
	objectstoretest.Put(t, b, "retry/x", data)
	if sleeps.Load() != 3 || p.requests.Load() != 4 {
		t.Fatalf("Put after 3 failures: %d sleeps, %d requests; want 3 and 4", sleeps.Load(), p.requests.Load())
	}
	// Multipart: a failing part is retried on its own.
	large := objectstoretest.Data(4, s3.MinPartSize+10)
	p.failures.Store(2)
	objectstoretest.Put(t, b, "retry/large", large)
	p.failures.Store(2)
	if got := objectstoretest.Get(t, b, "retry/large"); !bytes.Equal(got, large) {
		t.Fatal("content differs after retries")
	}
	// Bounded: 4 attempts, then the error names the object.
	p.failures.Store(100)
	p.requests.Store(0)
	_, err := b.Get(ctx, "retry/x")
	if err == nil || !objectstore.IsTransient(err) || !strings.Contains(err.Error(), "retry/x") || p.requests.Load() != 4 {
		t.Fatalf("Get against a failing server = %v after %d requests; want a transient error naming retry/x after 4", err, p.requests.Load())
	}
	p.failures.Store(0)
}

// testPermanent checks that permanent errors are not retried and surface
// with the object name.
func testPermanent(t *testing.T, srv *miniotest.Server) {
	bucket := srv.NewBucket(t)
	p, endpoint := newFlakyProxy(t, srv, http.StatusForbidden)
	var retries atomic.Int64
	b := open(t, srv, bucket, func(o *s3.Options) {
		o.Endpoint = endpoint
		o.Retry.OnRetry = func(int, error) { retries.Add(1) }
	})
	defer b.Close()
	p.failures.Store(1)
	err := b.Put(context.Background(), "perm/x", strings.NewReader("x"), 1)
	if err == nil || objectstore.IsTransient(err) || !strings.Contains(err.Error(), "perm/x") || retries.Load() != 0 {
		t.Fatalf("Put with AccessDenied = %v after %d retries; want a permanent error naming perm/x, no retry", err, retries.Load())
	}
	// Wrong credentials against the real server.
	bad := open(t, srv, bucket, func(o *s3.Options) {
		o.SecretAccessKey = "wrong-secret"
		o.Retry.OnRetry = func(int, error) { retries.Add(1) }
	})
	defer bad.Close()
	_, err = bad.Get(context.Background(), "perm/y")
	if err == nil || errors.Is(err, objectstore.ErrNotExist) || objectstore.IsTransient(err) || retries.Load() != 0 {
		t.Fatalf("Get with a wrong secret = %v after %d retries", err, retries.Load())
	}
	// A missing bucket is not a missing object.
	nb := open(t, srv, "no-such-bucket-tierkv", nil)
	defer nb.Close()
	if _, err := nb.Get(context.Background(), "x"); err == nil || errors.Is(err, objectstore.ErrNotExist) {
		t.Fatalf("Get from a missing bucket = %v, want an error that is not ErrNotExist", err)
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []s3.Options{
		{},
		{Bucket: "b", PartSize: 1 << 20},
		{Bucket: "b", SSE: "rot13"},
		{Bucket: "b", SSEKMSKeyID: "k"},
		{Bucket: "b", AccessKeyID: "a"},
	} {
		if _, err := s3.Open(context.Background(), o); err == nil {
			t.Errorf("Open(%+v) succeeded", o)
		}
	}
}
