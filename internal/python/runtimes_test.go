package python

import (
	"context"
	"testing"

	"codeexec/internal/testenv"
)

func TestReadRuntimes(t *testing.T) {
	testenv.File(t, "/usr/bin/python3", "python3")
	testenv.File(t, "/bin/bash", "bash")
	rt, err := ReadRuntimes(context.Background(), "/usr/bin/python3", "/bin/bash")
	if err != nil {
		t.Fatal(err)
	}
	if len(rt.Languages) != 2 || rt.Languages[0].Name != "python" || rt.Languages[0].Version[:2] != "3." ||
		rt.Languages[1].Name != "bash" || rt.Languages[1].Version == "" {
		t.Errorf("languages %+v", rt.Languages)
	}
	// scripts/deps.sh installs every library.
	if len(rt.Libraries) != len(Libraries) {
		t.Errorf("%d libraries installed of %d: %+v", len(rt.Libraries), len(Libraries), rt.Libraries)
	}
	for _, l := range rt.Libraries {
		if l.Version == "" {
			t.Errorf("no version for %+v", l)
		}
	}
}
