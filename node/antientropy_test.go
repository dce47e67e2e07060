package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tierkv/tierkv/node/antientropy"
)

// TestAntiEntropyRepairsPastHintWindow: a replica that was down while keys
// were written and deleted, and whose hints were dropped (past the hint
// window), converges after an anti-entropy pass triggered through the admin
// endpoint, and the deleted keys stay deleted on it.
func TestAntiEntropyRepairsPastHintWindow(t *testing.T) {
	c := startCluster(t, 3, func(cfg *Config) {
		cfg.HintWindow = time.Millisecond // every hint is past the window
		cfg.AntiEntropy.Interval = -1     // only the triggered pass
	})
	ctx := ctxT(t)
	const keys = 60
	// Keys that exist everywhere and will be deleted while n3 is down.
	for k := range keys / 2 {
		if _, err := c.nodes[0].Put(ctx, fmt.Appendf(nil, "del%02d", k), []byte("doomed"), All, 0); err != nil {
			t.Fatal(err)
		}
	}
	c.stop(2)
	c.waitDown(2)
	for k := range keys {
		if _, err := c.nodes[k%2].Put(ctx, fmt.Appendf(nil, "ae%02d", k), fmt.Appendf(nil, "v%d", k), Quorum, 0); err != nil {
			t.Fatal(err)
		}
	}
	for k := range keys / 2 {
		if _, err := c.nodes[k%2].Delete(ctx, fmt.Appendf(nil, "del%02d", k), Quorum, 0); err != nil {
			t.Fatal(err)
		}
	}
	c.start(2)
	c.waitReady()
	// Nothing reaches n3 but anti-entropy: no hints survived the window.
	time.Sleep(500 * time.Millisecond) // > two hint replay intervals (200 ms)
	if p := c.nodes[0].HintsPending() + c.nodes[1].HintsPending(); p != 0 {
		t.Fatalf("%d hints pending; the window should have dropped them", p)
	}
	n3 := c.nodes[2]
	missing := 0
	for k := range keys {
		if _, err := n3.ReadLocalForTesting(fmt.Appendf(nil, "ae%02d", k)); err != nil {
			missing++
		}
	}
	if missing != keys {
		t.Fatalf("n3 holds %d of the %d keys written while it was down before repair", keys-missing, keys)
	}

	resp, err := http.Post("http://"+n3.HTTPAddr()+"/v1/admin/repair", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /v1/admin/repair: %d %s", resp.StatusCode, body)
	}
	var st antientropy.Stats
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	t.Logf("repair: %s", body)
	if st.KeysFetched < keys+keys/2 || st.KeysPushed != 0 {
		t.Errorf("repair fetched %d keys and pushed %d; want at least %d fetched (some twice, from both peers), none pushed", st.KeysFetched, st.KeysPushed, keys+keys/2)
	}
	for k := range keys {
		key := fmt.Appendf(nil, "ae%02d", k)
		e, err := n3.ReadLocalForTesting(key)
		if err != nil || !bytes.Equal(e.Value, fmt.Appendf(nil, "v%d", k)) {
			t.Fatalf("n3 alone after repair: %s = %q, %v", key, e.Value, err)
		}
	}
	for k := range keys / 2 {
		key := fmt.Appendf(nil, "del%02d", k)
		e, err := n3.ReadLocalForTesting(key)
		if err != nil || !e.Deleted {
			t.Fatalf("n3 alone after repair: %s = %q deleted=%v, %v; want its tombstone", key, e.Value, e.Deleted, err)
		}
		// And no replica resurrects it at ALL.
		if _, _, err := c.nodes[k%3].Get(ctx, key, All); err == nil || !strings.Contains(err.Error(), "not found") {
			t.Fatalf("ALL read of deleted %s: %v", key, err)
		}
	}

	// A second pass finds every range in sync, and the progress endpoint
	// and the metrics show both passes.
	st2, err := n3.TriggerRepair(ctx)
	if err != nil || st2.KeysFetched != 0 || st2.KeysPushed != 0 || st2.RangesInSync != st2.Ranges {
		t.Fatalf("second pass: %+v, %v; want every range in sync", st2, err)
	}
	resp, err = http.Get("http://" + n3.HTTPAddr() + "/v1/admin/repair")
	if err != nil {
		t.Fatal(err)
	}
	var prog repairProgress
	err = json.NewDecoder(resp.Body).Decode(&prog)
	resp.Body.Close()
	if err != nil || prog.Passes != 2 || prog.Running || prog.Totals.KeysFetched != st.KeysFetched {
		t.Fatalf("GET /v1/admin/repair: %+v, %v", prog, err)
	}
	mresp, err := http.Get("http://" + n3.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mbody, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, want := range []string{
		"tierkv_antientropy_passes_total 2",
		fmt.Sprintf("tierkv_antientropy_keys_total{direction=\"fetched\"} %d", st.KeysFetched),
	} {
		if !strings.Contains(string(mbody), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
