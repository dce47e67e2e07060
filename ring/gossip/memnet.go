package gossip

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// MemNetwork is an in-process network for memberlist: every transport it
// makes can reach the others by address without sockets. It can partition
// members to inject faults: packets between blocked pairs are dropped and
// stream dials fail, in both directions. It is safe for concurrent use.
//
// It is used by tests and by single-process clusters; it is the in-memory
// fake that ships beside the transport seam (compare memberlist's
// MockNetwork, which is not safe to grow while running and cannot
// partition).
type MemNetwork struct {
	mu struct {
		sync.Mutex
		// byAddr and byName index the live transports; blocked holds
		// unordered pairs of names that cannot talk; port is the last
		// port handed out. All guarded by mu.
		byAddr  map[string]*MemTransport
		byName  map[string]*MemTransport
		blocked map[[2]string]bool
		port    int
	}
}

// NewMemNetwork returns an empty network.
func NewMemNetwork() *MemNetwork {
	n := &MemNetwork{}
	n.mu.byAddr = make(map[string]*MemTransport)
	n.mu.byName = make(map[string]*MemTransport)
	n.mu.blocked = make(map[[2]string]bool)
	return n
}

// NewTransport returns a transport for the member name with a fresh address
// 127.0.0.1:port. The name is used by Partition.
func (n *MemNetwork) NewTransport(name string) *MemTransport {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.mu.port++
	t := &MemTransport{
		net:      n,
		name:     name,
		port:     n.mu.port,
		addr:     net.JoinHostPort("127.0.0.1", strconv.Itoa(n.mu.port)),
		packetCh: make(chan *memberlist.Packet, 1024),
		streamCh: make(chan net.Conn),
		done:     make(chan struct{}),
	}
	n.mu.byAddr[t.addr] = t
	n.mu.byName[name] = t
	return t
}

func pair(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

// Partition cuts every member of a off from every member of b, by name.
func (n *MemNetwork) Partition(a, b []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, x := range a {
		for _, y := range b {
			n.mu.blocked[pair(x, y)] = true
		}
	}
}

// Heal removes every partition.
func (n *MemNetwork) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.mu.blocked)
}

// route returns the transport at addr if from may reach it.
func (n *MemNetwork) route(from *MemTransport, addr string) (*MemTransport, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	to, ok := n.mu.byAddr[addr]
	if !ok {
		return nil, fmt.Errorf("memnet: no member at %s", addr)
	}
	if n.mu.blocked[pair(from.name, to.name)] {
		return nil, errPartitioned
	}
	return to, nil
}

var errPartitioned = errors.New("memnet: partitioned")

// MemTransport is a memberlist.NodeAwareTransport on a MemNetwork.
type MemTransport struct {
	net      *MemNetwork
	name     string
	port     int
	addr     string
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	done     chan struct{}
	once     sync.Once
}

var _ memberlist.NodeAwareTransport = (*MemTransport)(nil)

// Addr returns the transport's address, host:port.
func (t *MemTransport) Addr() string { return t.addr }

// FinalAdvertiseAddr is part of the memberlist.Transport interface.
func (t *MemTransport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	return net.IPv4(127, 0, 0, 1), t.port, nil
}

// WriteTo is part of the memberlist.Transport interface. Like UDP, it drops
// the packet silently when the destination is partitioned away, gone or
// overloaded.
func (t *MemTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	now := time.Now()
	to, err := t.net.route(t, addr)
	if err != nil {
		return now, nil
	}
	p := &memberlist.Packet{Buf: append([]byte(nil), b...), From: memAddr(t.addr), Timestamp: now}
	select {
	case to.packetCh <- p:
	case <-to.done:
	default: // receiver overloaded: drop, as UDP would
	}
	return now, nil
}

// WriteToAddress is part of the memberlist.NodeAwareTransport interface.
func (t *MemTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

// PacketCh is part of the memberlist.Transport interface.
func (t *MemTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

// DialTimeout is part of the memberlist.Transport interface.
func (t *MemTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	to, err := t.net.route(t, addr)
	if err != nil {
		return nil, err
	}
	a, b := net.Pipe()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case to.streamCh <- &memConn{Conn: b, remote: memAddr(t.addr)}:
		return &memConn{Conn: a, remote: memAddr(addr)}, nil
	case <-to.done:
	case <-t.done:
	case <-timer.C:
	}
	a.Close()
	b.Close()
	return nil, fmt.Errorf("memnet: dial %s: timeout", addr)
}

// DialAddressTimeout is part of the memberlist.NodeAwareTransport interface.
func (t *MemTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

// StreamCh is part of the memberlist.Transport interface.
func (t *MemTransport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown is part of the memberlist.Transport interface. It removes the
// transport from the network; it is idempotent.
func (t *MemTransport) Shutdown() error {
	t.once.Do(func() {
		t.net.mu.Lock()
		delete(t.net.mu.byAddr, t.addr)
		if t.net.mu.byName[t.name] == t {
			delete(t.net.mu.byName, t.name)
		}
		t.net.mu.Unlock()
		close(t.done)
	})
	return nil
}

type memAddr string

func (a memAddr) Network() string { return "mem" }
func (a memAddr) String() string  { return string(a) }

// memConn reports memnet addresses instead of net.Pipe's.
type memConn struct {
	net.Conn
	remote net.Addr
}

func (c *memConn) RemoteAddr() net.Addr { return c.remote }
