package e2e

import (
	"testing"

	"github.com/clickstream/pipeline/internal/proctest"
)

// TestMain removes the service binaries that proctest built for the tests.
func TestMain(m *testing.M) { proctest.Main(m) }
