package linearize

import (
	"testing"

	"go.uber.org/goleak"
)

// The checker runs porcupine's goroutines; none may outlive a check.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
