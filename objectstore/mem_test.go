package objectstore_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/objectstore/objectstoretest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMemAcceptance(t *testing.T) {
	objectstoretest.AcceptanceTest(t, func(t *testing.T) objectstore.Bucket { return objectstore.NewMemBucket() })
}
