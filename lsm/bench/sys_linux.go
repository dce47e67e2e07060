//go:build linux

package bench

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

const (
	tmpfsMagic = 0x01021994
	ramfsMagic = 0x858458f6
)

var fsNames = map[int64]string{
	0xEF53:     "ext2/3/4",
	0x58465342: "xfs",
	0x9123683E: "btrfs",
	0x794c7630: "overlayfs",
	0x2FC12FC1: "zfs",
	0x6969:     "nfs",
	0x65735546: "fuse",
	tmpfsMagic: "tmpfs",
	ramfsMagic: "ramfs",
}

// fsType returns a name for the filesystem holding path and whether it is
// memory-backed (tmpfs/ramfs), where write amplification and sync latency
// would be meaningless.
func fsType(path string) (name string, inMemory bool, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return "", false, err
	}
	t := int64(st.Type)
	name, ok := fsNames[t]
	if !ok {
		name = fmt.Sprintf("fs-0x%x", t)
	}
	return name, t == tmpfsMagic || t == ramfsMagic, nil
}

// diskUsage is like `du -s` of dir, in bytes: allocated blocks of every regular file
// (st_blocks*512), so preallocated files (e.g. recycled WALs) count what they
// occupy; apparent is the sum of the files' sizes.
func diskUsage(dir string) (allocated, apparent int64, err error) {
	var total, logical int64
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil // file removed by the engine while walking
			}
			return err
		}
		info, err := d.Info()
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		logical += info.Size()
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		} else {
			total += info.Size()
		}
		return nil
	})
	return total, logical, err
}

// syncAll runs sync(2) so each workload starts without other workloads'
// (or engines') dirty pages still being written back behind its back.
func syncAll() { syscall.Sync() }
