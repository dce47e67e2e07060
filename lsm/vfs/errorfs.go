package vfs

import (
	"errors"
	"os"
	"sync/atomic"
)

// ErrInjected is the error an ErrorFS returns from an operation its
// predicate selects.
var ErrInjected = errors.New("vfs: injected error")

// Op names an operation that ErrorFS can fail.
type Op int

// The operations ErrorFS can fail.
const (
	OpCreate Op = iota
	OpOpen
	OpRead
	OpWrite
	OpSync
	OpRemove
	OpRename
	OpList
)

// ErrorFS wraps an FS and fails the operations for which Inject returns
// true with ErrInjected. It is meant for tests: it checks that every I/O
// error surfaces and that none is acknowledged as success.
type ErrorFS struct {
	FS
	// Inject decides whether the operation op on the named file fails.
	Inject func(op Op, name string) bool
	// Injected counts the errors returned so far.
	Injected atomic.Int64
}

var _ FS = (*ErrorFS)(nil)

func (e *ErrorFS) fail(op Op, name string) error {
	if e.Inject != nil && e.Inject(op, name) {
		e.Injected.Add(1)
		return &os.PathError{Op: "inject", Path: name, Err: ErrInjected}
	}
	return nil
}

// Create is part of the FS interface.
func (e *ErrorFS) Create(name string) (File, error) {
	if err := e.fail(OpCreate, name); err != nil {
		return nil, err
	}
	f, err := e.FS.Create(name)
	if err != nil {
		return nil, err
	}
	return &errorFile{File: f, fs: e, name: name}, nil
}

// Open is part of the FS interface.
func (e *ErrorFS) Open(name string) (File, error) {
	if err := e.fail(OpOpen, name); err != nil {
		return nil, err
	}
	f, err := e.FS.Open(name)
	if err != nil {
		return nil, err
	}
	return &errorFile{File: f, fs: e, name: name}, nil
}

// OpenReadWrite is part of the FS interface.
func (e *ErrorFS) OpenReadWrite(name string) (File, error) {
	if err := e.fail(OpOpen, name); err != nil {
		return nil, err
	}
	f, err := e.FS.OpenReadWrite(name)
	if err != nil {
		return nil, err
	}
	return &errorFile{File: f, fs: e, name: name}, nil
}

// OpenDir is part of the FS interface.
func (e *ErrorFS) OpenDir(name string) (File, error) {
	f, err := e.FS.OpenDir(name)
	if err != nil {
		return nil, err
	}
	return &errorFile{File: f, fs: e, name: name}, nil
}

// Remove is part of the FS interface.
func (e *ErrorFS) Remove(name string) error {
	if err := e.fail(OpRemove, name); err != nil {
		return err
	}
	return e.FS.Remove(name)
}

// Rename is part of the FS interface.
func (e *ErrorFS) Rename(oldname, newname string) error {
	if err := e.fail(OpRename, newname); err != nil {
		return err
	}
	return e.FS.Rename(oldname, newname)
}

// List is part of the FS interface.
func (e *ErrorFS) List(dir string) ([]string, error) {
	if err := e.fail(OpList, dir); err != nil {
		return nil, err
	}
	return e.FS.List(dir)
}

type errorFile struct {
	File
	fs   *ErrorFS
	name string
}

func (f *errorFile) Read(p []byte) (int, error) {
	if err := f.fs.fail(OpRead, f.name); err != nil {
		return 0, err
	}
	return f.File.Read(p)
}

func (f *errorFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.fs.fail(OpRead, f.name); err != nil {
		return 0, err
	}
	return f.File.ReadAt(p, off)
}

func (f *errorFile) Write(p []byte) (int, error) {
	if err := f.fs.fail(OpWrite, f.name); err != nil {
		return 0, err
	}
	return f.File.Write(p)
}

func (f *errorFile) Sync() error {
	if err := f.fs.fail(OpSync, f.name); err != nil {
		return err
	}
	return f.File.Sync()
}
