//go:build !linux

package bench

import (
	"io/fs"
	"path/filepath"
)

func fsType(path string) (string, bool, error) { return "unknown", false, nil }

func diskUsage(dir string) (allocated, apparent int64, err error) {
	err = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if info, err := d.Info(); err == nil && info.Mode().IsRegular() {
			apparent += info.Size()
		}
		return nil
	})
	return apparent, apparent, err
}

func syncAll() {}
