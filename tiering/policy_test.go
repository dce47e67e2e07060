package tiering

import (
	"testing"
	"time"

	"github.com/tierkv/tierkv/lsm"
)

func TestPolicy(t *testing.T) {
	now := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	leveled := Policy{Strategy: lsm.Leveled, ColdLevel: 5, ColdAge: time.Hour, BlobColdAge: time.Hour}
	tiered := Policy{Strategy: lsm.SizeTiered, ColdLevel: 5, ColdAge: time.Hour, BlobColdAge: -1}
	for _, tc := range []struct {
		name  string
		p     Policy
		level int
		age   time.Duration
		cold  bool
	}{
		// Leveled: by level only, whatever the age.
		{"leveled above cold level", leveled, 4, 100 * time.Hour, false},
		{"leveled at cold level", leveled, 5, 0, true},
		{"leveled below cold level", leveled, 6, 0, true},
		{"leveled L0", leveled, 0, 100 * time.Hour, false},
		{"leveled all cold", Policy{Strategy: lsm.Leveled}, 0, 0, true},
		{"leveled never", Policy{Strategy: lsm.Leveled, ColdLevel: -1}, 6, 0, false},
		// Size-tiered: by age only, whatever the level.
		{"tiered young", tiered, 0, 59 * time.Minute, false},
		{"tiered at age", tiered, 0, time.Hour, true},
		{"tiered old", tiered, 6, 48 * time.Hour, true},
		{"tiered deep but young", tiered, 6, 0, false},
		{"tiered never", Policy{Strategy: lsm.SizeTiered, ColdAge: -1}, 0, 1000 * time.Hour, false},
	} {
		got := tc.p.TableCold(lsm.TableInfo{Level: tc.level, Created: now.Add(-tc.age)}, now)
		if got != tc.cold {
			t.Errorf("%s: cold = %v, want %v", tc.name, got, tc.cold)
		}
	}
	for _, tc := range []struct {
		name string
		p    Policy
		age  time.Duration
		cold bool
	}{
		{"blob young", leveled, 30 * time.Minute, false},
		{"blob old", leveled, 2 * time.Hour, true},
		{"blob never", tiered, 1000 * time.Hour, false},
		{"blob age 0", Policy{}, 0, true},
	} {
		if got := tc.p.BlobCold(lsm.BlobInfo{Created: now.Add(-tc.age)}, now); got != tc.cold {
			t.Errorf("%s: cold = %v, want %v", tc.name, got, tc.cold)
		}
	}
	ct, cb := leveled.ColdObjects(
		[]lsm.TableInfo{{FileNum: 1, Level: 0}, {FileNum: 2, Level: 5}, {FileNum: 3, Level: 6}},
		[]lsm.BlobInfo{{FileNum: 4, Created: now}, {FileNum: 5, Created: now.Add(-2 * time.Hour)}}, now)
	if len(ct) != 2 || ct[0] != 2 || ct[1] != 3 || len(cb) != 1 || cb[0] != 5 {
		t.Fatalf("ColdObjects = %v, %v", ct, cb)
	}
}
