// Package objectstoretest holds the acceptance suite that every
// objectstore.Bucket implementation passes. A backend's test calls
//
//	objectstoretest.AcceptanceTest(t, func(t *testing.T) objectstore.Bucket { ... })
//
// with a constructor that returns a new, empty bucket for every subtest.
// Every behaviour that tierkv's tiering relies on is a subtest here.
package objectstoretest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/tierkv/tierkv/objectstore"
)

// LargeObjectSize is the size of the object that the "Large" subtest
// uploads. It is above 2 parts of 5 MiB, MinIO's minimum part size, so that
// an s3 bucket configured with 5 MiB parts uploads it with multipart.
const LargeObjectSize = 12<<20 + 12345

// ManyObjects is how many objects the "ListMany" subtest lists, with pages
// of ManyObjectsPage names.
const (
	ManyObjects     = 2500
	ManyObjectsPage = 97
)

// AcceptanceTest runs the suite. newBucket must return a new, empty bucket;
// it is called once per subtest, and the suite closes the bucket at the end
// of the subtest.
func AcceptanceTest(t *testing.T, newBucket func(t *testing.T) objectstore.Bucket) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b objectstore.Bucket)
	}{
		{"NotExist", testNotExist},
		{"PutGet", testPutGet},
		{"UnknownSize", testUnknownSize},
		{"SizeMismatch", testSizeMismatch},
		{"Ranges", testRanges},
		{"Overwrite", testOverwrite},
		{"InvalidNames", testInvalidNames},
		{"List", testList},
		{"ListMany", testListMany},
		{"Large", testLarge},
		{"Concurrent", testConcurrent},
		{"Cancelled", testCancelled},
		{"Delete", testDelete},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newBucket(t)
			t.Cleanup(func() {
				if err := b.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, b)
		})
	}
}

// Data returns n pseudo-random bytes determined by seed.
func Data(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	p := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			p[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		p[i] = byte(r.Uint32())
	}
	return p
}

// Put stores data as name, failing the test on error.
func Put(t testing.TB, b objectstore.Bucket, name string, data []byte) {
	t.Helper()
	if err := b.Put(context.Background(), name, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("Put(%q, %d bytes): %v", name, len(data), err)
	}
}

// Get returns the whole object, failing the test on error.
func Get(t testing.TB, b objectstore.Bucket, name string) []byte {
	t.Helper()
	data, err := objectstore.ReadAll(context.Background(), b, name)
	if err != nil {
		t.Fatalf("Get(%q): %v", name, err)
	}
	return data
}

func getRange(b objectstore.Bucket, name string, off, length int64) ([]byte, error) {
	rc, err := b.GetRange(context.Background(), name, off, length)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// ListAll returns every name under prefix, paginating with pages of limit.
// It checks that pages are in order, not longer than limit, and that next
// continues the listing.
func ListAll(t testing.TB, b objectstore.Bucket, prefix string, limit int) []string {
	t.Helper()
	var all []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > 100000 {
			t.Fatalf("List(%q) does not end", prefix)
		}
		names, next, err := b.List(context.Background(), prefix, after, limit)
		if err != nil {
			t.Fatalf("List(%q, %q, %d): %v", prefix, after, limit, err)
		}
		if limit > 0 && len(names) > limit {
			t.Fatalf("List(%q, %q, %d) returned %d names", prefix, after, limit, len(names))
		}
		for _, n := range names {
			if !strings.HasPrefix(n, prefix) || n <= after {
				t.Fatalf("List(%q, %q): name %q out of range", prefix, after, n)
			}
			if len(all) > 0 && n <= all[len(all)-1] {
				t.Fatalf("List(%q): %q after %q: not in ascending order", prefix, n, all[len(all)-1])
			}
			all = append(all, n)
		}
		if next == "" {
			return all
		}
		if next <= after {
			t.Fatalf("List(%q, %q): next %q does not advance", prefix, after, next)
		}
		after = next
	}
}

func wantNotExist(t *testing.T, what, name string, err error) {
	t.Helper()
	if !errors.Is(err, objectstore.ErrNotExist) {
		t.Fatalf("%s(%q) = %v, want ErrNotExist", what, name, err)
	}
	if !strings.Contains(err.Error(), name) {
		t.Fatalf("%s(%q) error %q does not name the object", what, name, err)
	}
}

func testNotExist(t *testing.T, b objectstore.Bucket) {
	ctx := context.Background()
	const name = "missing/object"
	_, err := b.Get(ctx, name)
	wantNotExist(t, "Get", name, err)
	_, err = b.GetRange(ctx, name, 0, 1)
	wantNotExist(t, "GetRange", name, err)
	_, err = b.GetRange(ctx, name, 0, 0)
	wantNotExist(t, "GetRange(len 0)", name, err)
	_, err = b.Attributes(ctx, name)
	wantNotExist(t, "Attributes", name, err)
	if err := b.Delete(ctx, name); err != nil {
		t.Fatalf("Delete of a missing object = %v, want nil (idempotent)", err)
	}
	if names := ListAll(t, b, "", 0); len(names) != 0 {
		t.Fatalf("List of an empty bucket = %q", names)
	}
	// An object whose name is a prefix of the missing one does not make it exist.
	Put(t, b, "missing/obj", []byte("x"))
	_, err = b.Get(ctx, name)
	wantNotExist(t, "Get", name, err)
	_, err = b.Get(ctx, "missing")
	wantNotExist(t, "Get", "missing", err)
}

func checkAttrs(t *testing.T, b objectstore.Bucket, name string, data []byte) {
	t.Helper()
	a, err := b.Attributes(context.Background(), name)
	if err != nil {
		t.Fatalf("Attributes(%q): %v", name, err)
	}
	if a.Size != int64(len(data)) {
		t.Fatalf("Attributes(%q).Size = %d, want %d", name, a.Size, len(data))
	}
	if a.HasCRC32C && a.CRC32C != objectstoreCRC(data) {
		t.Fatalf("Attributes(%q).CRC32C = %08x, want %08x", name, a.CRC32C, objectstoreCRC(data))
	}
}

func testPutGet(t *testing.T, b objectstore.Bucket) {
	for i, size := range []int{0, 1, 7, 4096, 4097, 100_000} {
		name := fmt.Sprintf("pg/obj-%d", i)
		data := Data(uint64(i), size)
		Put(t, b, name, data)
		if got := Get(t, b, name); !bytes.Equal(got, data) {
			t.Fatalf("Get(%q) returned %d bytes, not the %d put", name, len(got), len(data))
		}
		checkAttrs(t, b, name, data)
	}
	// Names with spaces, unicode and characters that need escaping in URLs.
	for _, name := range []string{"weird/a b+c%d?e=f&g#h", "weird/ünïcødé-日本", "weird/x~y!z'(*)"} {
		Put(t, b, name, []byte(name))
		if got := Get(t, b, name); string(got) != name {
			t.Fatalf("Get(%q) = %q", name, got)
		}
	}
	if got := ListAll(t, b, "weird/", 0); len(got) != 3 {
		t.Fatalf("List(weird/) = %q, want 3 names", got)
	}
}

func testUnknownSize(t *testing.T, b objectstore.Bucket) {
	for i, size := range []int{0, 10, 300_000} {
		name := fmt.Sprintf("unknown/%d", i)
		data := Data(uint64(100+i), size)
		// io.MultiReader hides bytes.Reader's Len and Seek.
		if err := b.Put(context.Background(), name, io.MultiReader(bytes.NewReader(data)), -1); err != nil {
			t.Fatalf("Put(%q, size -1): %v", name, err)
		}
		if got := Get(t, b, name); !bytes.Equal(got, data) {
			t.Fatalf("Get(%q) returned %d bytes, want %d", name, len(got), len(data))
		}
		checkAttrs(t, b, name, data)
	}
}

func testSizeMismatch(t *testing.T, b objectstore.Bucket) {
	ctx := context.Background()
	Put(t, b, "mismatch/existing", []byte("old"))
	for _, tc := range []struct {
		name string
		data []byte
		size int64
	}{
		{"mismatch/short", []byte("12345"), 10},
		{"mismatch/long", []byte("123456789012345"), 10},
		{"mismatch/existing", []byte("new"), 1},
	} {
		err := b.Put(ctx, tc.name, io.MultiReader(bytes.NewReader(tc.data)), tc.size)
		if !errors.Is(err, objectstore.ErrSizeMismatch) {
			t.Fatalf("Put(%q, %d bytes, size %d) = %v, want ErrSizeMismatch", tc.name, len(tc.data), tc.size, err)
		}
	}
	if got := ListAll(t, b, "mismatch/", 0); !slices.Equal(got, []string{"mismatch/existing"}) {
		t.Fatalf("after failed puts, List = %q, want only mismatch/existing", got)
	}
	if got := Get(t, b, "mismatch/existing"); string(got) != "old" {
		t.Fatalf("a failed overwrite changed the object to %q", got)
	}
}

func testRanges(t *testing.T, b objectstore.Bucket) {
	data := Data(7, 1000)
	Put(t, b, "r/obj", data)
	Put(t, b, "r/empty", nil)
	for _, tc := range []struct {
		name        string
		off, length int64
		want        []byte
	}{
		{"r/obj", 0, 0, nil},
		{"r/obj", 0, 1, data[:1]},
		{"r/obj", 0, 1000, data},
		{"r/obj", 0, 2000, data},
		{"r/obj", 0, -1, data},
		{"r/obj", 1, 998, data[1:999]},
		{"r/obj", 500, -1, data[500:]},
		{"r/obj", 999, 1, data[999:]},
		{"r/obj", 999, 5, data[999:]},
		{"r/obj", 1000, 0, nil},
		{"r/obj", 1000, 10, nil},
		{"r/obj", 1000, -1, nil},
		{"r/empty", 0, 0, nil},
		{"r/empty", 0, 10, nil},
		{"r/empty", 0, -1, nil},
	} {
		got, err := getRange(b, tc.name, tc.off, tc.length)
		if err != nil {
			t.Fatalf("GetRange(%q, %d, %d): %v", tc.name, tc.off, tc.length, err)
		}
		if !bytes.Equal(got, tc.want) {
			t.Fatalf("GetRange(%q, %d, %d) returned %d bytes, want %d", tc.name, tc.off, tc.length, len(got), len(tc.want))
		}
	}
	for _, tc := range []struct {
		name        string
		off, length int64
	}{
		{"r/obj", 1001, 1},
		{"r/obj", 1001, 0},
		{"r/obj", -1, 10},
		{"r/empty", 1, 1},
	} {
		_, err := getRange(b, tc.name, tc.off, tc.length)
		if !errors.Is(err, objectstore.ErrInvalidRange) {
			t.Fatalf("GetRange(%q, %d, %d) = %v, want ErrInvalidRange", tc.name, tc.off, tc.length, err)
		}
	}
	// ReadAt has no partial reads.
	p := make([]byte, 10)
	if err := objectstore.ReadAt(context.Background(), b, "r/obj", p, 990); err != nil || !bytes.Equal(p, data[990:]) {
		t.Fatalf("ReadAt(990, 10) = %v", err)
	}
	if err := objectstore.ReadAt(context.Background(), b, "r/obj", p, 995); !errors.Is(err, objectstore.ErrInvalidRange) {
		t.Fatalf("ReadAt past the end = %v, want ErrInvalidRange", err)
	}
}

func testOverwrite(t *testing.T, b objectstore.Bucket) {
	first, second := Data(1, 5000), Data(2, 300)
	Put(t, b, "ow/x", first)
	Put(t, b, "ow/x", second)
	if got := Get(t, b, "ow/x"); !bytes.Equal(got, second) {
		t.Fatalf("after overwrite Get returned %d bytes, want the second %d", len(got), len(second))
	}
	checkAttrs(t, b, "ow/x", second)
	// Idempotent upload: the same content twice.
	Put(t, b, "ow/x", second)
	if got := Get(t, b, "ow/x"); !bytes.Equal(got, second) {
		t.Fatal("re-uploading the same content changed it")
	}
	if got := ListAll(t, b, "ow/", 0); !slices.Equal(got, []string{"ow/x"}) {
		t.Fatalf("List = %q, want [ow/x]", got)
	}
}

func testInvalidNames(t *testing.T, b objectstore.Bucket) {
	ctx := context.Background()
	for _, name := range []string{"", "/abs", "../escape", "a/../../escape", "a//b", "a/./b", "trailing/", ".", "..", "nul\x00", "back\\slash", "\xff\xfe", strings.Repeat("x", objectstore.MaxNameLen+1)} {
		err := b.Put(ctx, name, strings.NewReader("x"), 1)
		if !errors.Is(err, objectstore.ErrInvalidName) {
			t.Fatalf("Put(%q) = %v, want ErrInvalidName", name, err)
		}
		if _, err := b.Get(ctx, name); !errors.Is(err, objectstore.ErrInvalidName) {
			t.Fatalf("Get(%q) = %v, want ErrInvalidName", name, err)
		}
		if err := b.Delete(ctx, name); !errors.Is(err, objectstore.ErrInvalidName) {
			t.Fatalf("Delete(%q) = %v, want ErrInvalidName", name, err)
		}
	}
	if names := ListAll(t, b, "", 0); len(names) != 0 {
		t.Fatalf("invalid puts stored %q", names)
	}
}

func testList(t *testing.T, b objectstore.Bucket) {
	all := []string{"dir-2/q", "dir/x", "dir/y/z", "dir0", "e/f", "z"}
	for _, n := range []string{"z", "dir/y/z", "e/f", "dir0", "dir/x", "dir-2/q"} {
		Put(t, b, n, []byte(n))
	}
	for _, tc := range []struct {
		prefix, after string
		want          []string
	}{
		{"", "", all},
		{"dir", "", all[:4]},
		{"dir/", "", []string{"dir/x", "dir/y/z"}},
		{"dir/y", "", []string{"dir/y/z"}},
		{"dir/y/z", "", []string{"dir/y/z"}},
		{"dir/y/z/", "", nil},
		{"di", "dir/x", []string{"dir/y/z", "dir0"}},
		{"", "dir/y", []string{"dir/y/z", "dir0", "e/f", "z"}},
		{"", "z", nil},
		{"nothing", "", nil},
		{"e", "", []string{"e/f"}},
	} {
		for _, limit := range []int{0, 1, 2, 1000} {
			got, next, err := b.List(context.Background(), tc.prefix, tc.after, limit)
			if err != nil {
				t.Fatalf("List(%q, %q, %d): %v", tc.prefix, tc.after, limit, err)
			}
			want := tc.want
			if limit > 0 && len(want) > limit {
				want = want[:limit]
				if next == "" {
					t.Fatalf("List(%q, %q, %d): next is empty with more names left", tc.prefix, tc.after, limit)
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("List(%q, %q, %d) = %q, want %q", tc.prefix, tc.after, limit, got, want)
			}
			if got := ListAll(t, b, tc.prefix, limit); !slices.Equal(got, filterAfter(tc.want, "")) && tc.after == "" {
				t.Fatalf("ListAll(%q, %d) = %q, want %q", tc.prefix, limit, got, tc.want)
			}
		}
	}
	var iterated []string
	if err := objectstore.Iter(context.Background(), b, "dir", func(n string) error { iterated = append(iterated, n); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(iterated, all[:4]) {
		t.Fatalf("Iter(dir) = %q", iterated)
	}
}

func filterAfter(names []string, after string) []string {
	var out []string
	for _, n := range names {
		if n > after {
			out = append(out, n)
		}
	}
	return out
}

func parallel(t *testing.T, n, workers int, fn func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	next := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					errs <- err
					for range next {
					}
					return
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func testListMany(t *testing.T, b objectstore.Bucket) {
	want := make([]string, ManyObjects)
	for i := range want {
		// Several "directories" so that localfs walks a tree.
		want[i] = fmt.Sprintf("many/%02d/%05d", i%17, i)
	}
	parallel(t, len(want), 16, func(i int) error {
		return b.Put(context.Background(), want[i], strings.NewReader(want[i]), int64(len(want[i])))
	})
	Put(t, b, "manz", []byte("after the prefix"))
	Put(t, b, "man", []byte("before the prefix"))
	slices.Sort(want)
	if got := ListAll(t, b, "many/", ManyObjectsPage); !slices.Equal(got, want) {
		t.Fatalf("paginated List returned %d names, want %d (first difference near %d)", len(got), len(want), firstDiff(got, want))
	}
	if got := ListAll(t, b, "many/", 0); !slices.Equal(got, want) {
		t.Fatalf("List with the default page returned %d names, want %d", len(got), len(want))
	}
	if got := ListAll(t, b, "many/03/", 0); len(got) != len(slices.DeleteFunc(slices.Clone(want), func(s string) bool { return !strings.HasPrefix(s, "many/03/") })) {
		t.Fatalf("List(many/03/) returned %d names", len(got))
	}
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func testLarge(t *testing.T, b objectstore.Bucket) {
	data := Data(42, LargeObjectSize)
	Put(t, b, "large/obj", data)
	if got := Get(t, b, "large/obj"); !bytes.Equal(got, data) {
		t.Fatalf("Get of the large object returned %d bytes, want %d (or different content)", len(got), len(data))
	}
	checkAttrs(t, b, "large/obj", data)
	const part = 5 << 20
	for _, off := range []int64{0, part - 10, 2*part - 1, LargeObjectSize - 100} {
		got, err := getRange(b, "large/obj", off, 200)
		if err != nil {
			t.Fatalf("GetRange(%d, 200): %v", off, err)
		}
		end := min(off+200, LargeObjectSize)
		if !bytes.Equal(got, data[off:end]) {
			t.Fatalf("GetRange(%d, 200) differs", off)
		}
	}
	// Unknown size: the backend has to buffer or stream it in parts.
	if err := b.Put(context.Background(), "large/unknown", io.MultiReader(bytes.NewReader(data)), -1); err != nil {
		t.Fatalf("Put(large, size -1): %v", err)
	}
	if got := Get(t, b, "large/unknown"); !bytes.Equal(got, data) {
		t.Fatal("Get of the large object of unknown size differs")
	}
}

// testConcurrent uploads distinct objects in parallel, and overwrites one
// object from several writers while readers read it: a reader sees one
// complete version, never a mix or a part.
func testConcurrent(t *testing.T, b objectstore.Bucket) {
	ctx := context.Background()
	parallel(t, 32, 8, func(i int) error {
		name := fmt.Sprintf("conc/distinct-%02d", i)
		data := Data(uint64(i), 1000+i*513)
		if err := b.Put(ctx, name, bytes.NewReader(data), int64(len(data))); err != nil {
			return err
		}
		got, err := objectstore.ReadAll(ctx, b, name)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, data) {
			return fmt.Errorf("Get(%q) differs from what was put", name)
		}
		return nil
	})

	versions := make([][]byte, 6)
	for i := range versions {
		versions[i] = bytes.Repeat([]byte{byte('a' + i)}, 20_000+i*7919)
	}
	const name = "conc/shared"
	Put(t, b, name, versions[0])
	isVersion := func(p []byte) bool {
		for _, v := range versions {
			if bytes.Equal(p, v) {
				return true
			}
		}
		return false
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range versions {
		wg.Go(func() {
			for range 3 {
				if err := b.Put(ctx, name, bytes.NewReader(versions[i]), int64(len(versions[i]))); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			for range 10 {
				got, err := objectstore.ReadAll(ctx, b, name)
				if err != nil {
					errs <- fmt.Errorf("Get during overwrites: %w", err)
					return
				}
				if !isVersion(got) {
					errs <- fmt.Errorf("Get during overwrites returned %d bytes that are no complete version", len(got))
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := Get(t, b, name); !isVersion(got) {
		t.Fatalf("after concurrent overwrites, Get returned %d bytes that are no complete version", len(got))
	}
}

// cancelReader cancels its context once it has yielded n bytes.
type cancelReader struct {
	r      io.Reader
	n      int
	cancel context.CancelFunc
}

func (c *cancelReader) Read(p []byte) (int, error) {
	if c.n <= 0 {
		c.cancel()
	}
	if len(p) > c.n && c.n > 0 {
		p = p[:c.n]
	}
	n, err := c.r.Read(p)
	c.n -= n
	return n, err
}

func testCancelled(t *testing.T, b objectstore.Bucket) {
	Put(t, b, "cancel/existing", []byte("old content"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	wantCanceled := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("%s with a cancelled context = %v, want context.Canceled", what, err)
		}
	}
	wantCanceled("Put", b.Put(ctx, "cancel/new", strings.NewReader("x"), 1))
	_, err := b.Get(ctx, "cancel/existing")
	wantCanceled("Get", err)
	_, err = b.GetRange(ctx, "cancel/existing", 0, 3)
	wantCanceled("GetRange", err)
	_, err = b.Attributes(ctx, "cancel/existing")
	wantCanceled("Attributes", err)
	_, _, err = b.List(ctx, "", "", 0)
	wantCanceled("List", err)
	wantCanceled("Delete", b.Delete(ctx, "cancel/existing"))

	// Cancelled in the middle of an upload: nothing is stored, and an
	// overwrite leaves the old object.
	data := Data(9, 1<<20)
	for _, name := range []string{"cancel/midway", "cancel/existing"} {
		ctx, cancel := context.WithCancel(context.Background())
		err := b.Put(ctx, name, &cancelReader{r: bytes.NewReader(data), n: len(data) / 2, cancel: cancel}, int64(len(data)))
		cancel()
		if err == nil {
			t.Fatalf("Put(%q) cancelled midway succeeded", name)
		}
	}
	if got := ListAll(t, b, "cancel/", 0); !slices.Equal(got, []string{"cancel/existing"}) {
		t.Fatalf("after cancelled puts List = %q, want [cancel/existing]", got)
	}
	if got := Get(t, b, "cancel/existing"); string(got) != "old content" {
		t.Fatalf("a cancelled overwrite changed the object to %d bytes", len(got))
	}
}

func testDelete(t *testing.T, b objectstore.Bucket) {
	ctx := context.Background()
	Put(t, b, "del/a/b", []byte("1"))
	Put(t, b, "del/a/c", []byte("2"))
	if err := b.Delete(ctx, "del/a/b"); err != nil {
		t.Fatal(err)
	}
	_, err := b.Get(ctx, "del/a/b")
	wantNotExist(t, "Get after Delete", "del/a/b", err)
	if err := b.Delete(ctx, "del/a/b"); err != nil {
		t.Fatalf("second Delete = %v, want nil", err)
	}
	if got := ListAll(t, b, "del/", 0); !slices.Equal(got, []string{"del/a/c"}) {
		t.Fatalf("List = %q", got)
	}
	if err := b.Delete(ctx, "del/a/c"); err != nil {
		t.Fatal(err)
	}
	if got := ListAll(t, b, "", 0); len(got) != 0 {
		t.Fatalf("List after deleting everything = %q", got)
	}
	// A name can be reused after Delete (localfs removed its directories).
	Put(t, b, "del/a", []byte("3"))
	if got := Get(t, b, "del/a"); string(got) != "3" {
		t.Fatalf("Get(del/a) = %q", got)
	}
}
