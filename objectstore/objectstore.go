package objectstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// ErrNotExist is returned (possibly wrapped) when an object does not exist.
// Every backend maps its native not-found error to it; test with errors.Is.
var ErrNotExist = errors.New("objectstore: object does not exist")

// ErrInvalidName is returned (wrapped) for a name that ValidateName rejects.
// Nothing is changed in the bucket.
var ErrInvalidName = errors.New("objectstore: invalid object name")

// ErrInvalidRange is returned (wrapped) by GetRange when off is negative or
// past the end of the object.
var ErrInvalidRange = errors.New("objectstore: invalid range")

// ErrSizeMismatch is returned (wrapped) by Put when the reader yields a
// different number of bytes than the size it was given. Nothing is stored.
var ErrSizeMismatch = errors.New("objectstore: size mismatch")

// ErrTransient marks an error as transient: retrying the same call may
// succeed. Backends mark their transient failures with MarkTransient; test
// with IsTransient.
var ErrTransient = errors.New("objectstore: transient error")

// ErrClosed is returned (wrapped) by calls on a closed Bucket.
var ErrClosed = errors.New("objectstore: bucket closed")

// MaxNameLen is the longest object name accepted, in bytes (S3's limit).
const MaxNameLen = 1024

// DefaultListLimit is the page size List uses when limit <= 0.
const DefaultListLimit = 1000

// Attributes describes a stored object.
type Attributes struct {
	// Size is the object's length in bytes.
	Size int64
	// LastModified is when the object was last written, as the backend
	// reports it (zero if unknown).
	LastModified time.Time
	// ETag is an opaque token that changes whenever the content changes
	// (S3's ETag, a hex CRC32C elsewhere). It may be empty.
	ETag string
	// CRC32C is the Castagnoli CRC32 of the whole object; valid only if
	// HasCRC32C. Backends report it when they know it without reading the
	// object again, except localfs, which reads the file to compute it.
	CRC32C uint32
	// HasCRC32C says whether CRC32C is set.
	HasCRC32C bool
}

// Bucket is a flat namespace of immutable objects.
//
// All methods are safe for concurrent use. Every method takes a context; a
// cancelled or expired context makes the call return an error wrapping the
// context's error, and a cancelled Put stores nothing. Errors name the
// object ("objectstore: put a/b: ..."). A missing object is reported with an
// error wrapping ErrNotExist. Transient failures are marked (IsTransient); the
// retry decorator (WithRetry) retries those and nothing else.
//
// Names are validated by ValidateName: '/'-separated segments, no empty,
// "." or ".." segment, valid UTF-8, at most MaxNameLen bytes.
type Bucket interface {
	// Put stores the size bytes read from r as the object name, replacing
	// any previous object of that name. The upload is atomic: a concurrent
	// or later reader sees the old object (or none) or the complete new one,
	// never a part. Put returns only once the object is durable (fsynced for
	// localfs, acknowledged for s3).
	//
	// size is the exact number of bytes r yields; if r yields fewer or more,
	// Put fails with ErrSizeMismatch and stores nothing. size < 0 means
	// unknown (backends may then buffer). Put does not close r; it does not
	// retain r after it returns. Uploading the same content twice is
	// harmless (idempotent).
	Put(ctx context.Context, name string, r io.Reader, size int64) error

	// Get returns the whole object. The caller must close the reader. Errors
	// while streaming are returned by Read; a reader opened before an
	// overwrite keeps returning the old content or fails, never a mix.
	Get(ctx context.Context, name string) (io.ReadCloser, error)

	// GetRange returns the bytes [off, off+length) of the object, truncated
	// at its end: exactly min(length, size-off) bytes. length < 0 means "to
	// the end". off == size yields an empty reader; off < 0 or off > size
	// fails with ErrInvalidRange. The caller must close the reader.
	GetRange(ctx context.Context, name string, off, length int64) (io.ReadCloser, error)

	// Attributes returns the object's size and checksums, or ErrNotExist.
	Attributes(ctx context.Context, name string) (Attributes, error)

	// List returns up to limit names (DefaultListLimit if limit <= 0) that
	// start with prefix and sort strictly after startAfter, in ascending
	// byte order. The listing is flat: "a/b" is listed under prefix "a".
	// next is "" when the listing is complete; otherwise pass it as
	// startAfter to get the next page. A page may hold fewer than limit names
	// even when next != "". Objects written or deleted during a listing may
	// or may not appear. The returned slice belongs to the caller.
	List(ctx context.Context, prefix, startAfter string, limit int) (names []string, next string, err error)

	// Delete removes the object. Deleting a missing object is not an error
	// (idempotent), so that garbage collection can be retried blindly.
	Delete(ctx context.Context, name string) error

	// Close releases the bucket's resources. It is idempotent; calls after
	// Close fail with ErrClosed (backends without resources may keep
	// working).
	Close() error
}

// ValidateName returns an error wrapping ErrInvalidName if name is not a
// valid object name: empty, longer than MaxNameLen, invalid UTF-8,
// containing a control character (below 0x20, or 0x7f) or a backslash,
// starting or ending with '/', or with an empty, "." or ".." segment. Such
// names are rejected by every backend so that a name means the same object
// everywhere (and never escapes a localfs root).
func ValidateName(name string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w %q: %s", ErrInvalidName, name, why)
	}
	switch {
	case name == "":
		return bad("empty")
	case len(name) > MaxNameLen:
		return bad(fmt.Sprintf("longer than %d bytes", MaxNameLen))
	case !utf8.ValidString(name):
		return bad("not valid UTF-8")
	case strings.ContainsFunc(name, badRune):
		return bad("contains a control character or backslash")
	}
	for seg := range strings.SplitSeq(name, "/") {
		switch seg {
		case "":
			return bad("empty path segment (leading, trailing or double '/')")
		case ".", "..":
			return bad("'.' or '..' path segment")
		}
	}
	return nil
}

// badRune reports the runes that no name contains.
func badRune(r rune) bool { return r < 0x20 || r == 0x7f || r == '\\' }

// ValidatePrefix returns an error wrapping ErrInvalidName if prefix cannot
// begin a valid name. The empty prefix is valid.
func ValidatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if !utf8.ValidString(prefix) || strings.ContainsFunc(prefix, badRune) ||
		strings.HasPrefix(prefix, "/") || len(prefix) > MaxNameLen {
		return fmt.Errorf("%w: prefix %q", ErrInvalidName, prefix)
	}
	return nil
}

// Iter calls fn for every name under prefix, in ascending order, fetching
// pages of DefaultListLimit names. It stops at the first error from List or
// fn and returns it.
func Iter(ctx context.Context, b Bucket, prefix string, fn func(name string) error) error {
	after := ""
	for {
		names, next, err := b.List(ctx, prefix, after, 0)
		if err != nil {
			return err
		}
		for _, n := range names {
			if err := fn(n); err != nil {
				return err
			}
		}
		if next == "" {
			return nil
		}
		after = next
	}
}

// ReadAll reads the whole object name.
func ReadAll(ctx context.Context, b Bucket, name string) ([]byte, error) {
	rc, err := b.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("objectstore: read %s: %w", name, err)
	}
	return data, nil
}

// ReadAt reads exactly len(p) bytes of the object name at off into p, with
// one ranged read. Reading past the end fails with ErrInvalidRange (there
// are no partial reads).
func ReadAt(ctx context.Context, b Bucket, name string, p []byte, off int64) error {
	rc, err := b.GetRange(ctx, name, off, int64(len(p)))
	if err != nil {
		return err
	}
	defer rc.Close()
	n, err := io.ReadFull(rc, p)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		return fmt.Errorf("objectstore: read %s at %d: %w: %d of %d bytes before the end", name, off, ErrInvalidRange, n, len(p))
	}
	if err != nil {
		return fmt.Errorf("objectstore: read %s at %d: %w", name, off, err)
	}
	return nil
}

// SizedReader returns a reader that yields what r yields but fails with an
// error wrapping ErrSizeMismatch if r ends before size bytes or has more
// than size bytes. Backends wrap Put's reader with it. size < 0 returns r.
func SizedReader(r io.Reader, size int64) io.Reader {
	if size < 0 {
		return r
	}
	return &sizedReader{r: r, size: size, left: size}
}

type sizedReader struct {
	r          io.Reader
	size, left int64
	done       bool
}

func (s *sizedReader) Read(p []byte) (int, error) {
	if s.done {
		return 0, io.EOF
	}
	if s.left == 0 {
		// Everything promised was read: r must be at its end.
		var one [1]byte
		for {
			n, err := s.r.Read(one[:])
			if n > 0 {
				return 0, fmt.Errorf("%w: reader has more than %d bytes", ErrSizeMismatch, s.size)
			}
			if err == io.EOF {
				s.done = true
				return 0, io.EOF
			}
			if err != nil {
				return 0, err
			}
		}
	}
	if int64(len(p)) > s.left {
		p = p[:s.left]
	}
	n, err := s.r.Read(p)
	s.left -= int64(n)
	if err == io.EOF {
		if s.left > 0 {
			return n, fmt.Errorf("%w: reader ended after %d of %d bytes", ErrSizeMismatch, s.size-s.left, s.size)
		}
		err = nil
	}
	return n, err
}

// opError wraps err as "objectstore: op name: err" unless it already names
// the package.
func opError(op, name string, err error) error {
	return fmt.Errorf("objectstore: %s %s: %w", op, name, err)
}
