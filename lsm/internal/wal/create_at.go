package wal

import (
	"fmt"

	"github.com/tierkv/tierkv/lsm/internal/base"
)

// CreateAt creates a log at path (in opts.Dir) rather than under the segment
// name of num. The engine's MANIFEST uses the WAL record format under its
// own name; num is still the log number stamped into its records.
func CreateAt(opts Options, path string, num base.FileNum) (*Writer, error) {
	opts.EnsureDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	f, err := opts.FS.Create(path)
	if err != nil {
		return nil, fmt.Errorf("wal: create %s: %w", path, err)
	}
	return finishCreate(opts, num, path, f)
}
