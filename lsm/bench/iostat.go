package bench

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
)

// ioCounters is a snapshot of /proc/self/io.
type ioCounters struct {
	WriteBytes          int64 // bytes this process caused to be sent to the block layer
	WChar               int64 // bytes passed to write(2)-like syscalls
	CancelledWriteBytes int64
	ok                  bool
}

func readIO() ioCounters {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return ioCounters{}
	}
	var c ioCounters
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := bytes.Cut(sc.Bytes(), []byte(": "))
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
		if err != nil {
			continue
		}
		switch string(k) {
		case "write_bytes":
			c.WriteBytes = n
		case "wchar":
			c.WChar = n
		case "cancelled_write_bytes":
			c.CancelledWriteBytes = n
		}
	}
	c.ok = true
	return c
}

// ioSource says which counter write amplification is computed from.
type ioSource int

const (
	ioNone       ioSource = iota // no /proc/self/io
	ioWriteBytes                 // write_bytes: bytes sent to the device
	ioWChar                      // wchar: bytes written by syscalls (fallback)
)

func (s ioSource) String() string {
	switch s {
	case ioWriteBytes:
		return "write_bytes"
	case ioWChar:
		return "wchar"
	}
	return "none"
}

func (s ioSource) value(c ioCounters) int64 {
	switch s {
	case ioWriteBytes:
		return c.WriteBytes
	case ioWChar:
		return c.WChar
	}
	return 0
}

// probeIOSource writes and fsyncs a 1 MiB file in dir and checks whether
// write_bytes moved. Some kernels/containers report write_bytes as 0 (no
// block-IO accounting); then every engine is measured with wchar instead.
func probeIOSource(dir string) ioSource {
	before := readIO()
	if !before.ok {
		return ioNone
	}
	f, err := os.CreateTemp(dir, "ioprobe-*")
	if err != nil {
		return ioWChar
	}
	name := f.Name()
	defer os.Remove(name)
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	_, _ = f.Write(buf)
	_ = f.Sync()
	_ = f.Close()
	after := readIO()
	if after.WriteBytes-before.WriteBytes > 0 {
		return ioWriteBytes
	}
	return ioWChar
}
