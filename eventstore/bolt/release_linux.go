package bolt

import (
	"bytes"
	"os"
	"strconv"

	"go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// releaseMappedPages drops the log's pages from this process's memory map;
// they stay in the kernel's page cache and fault back in, without reading
// the disk, when next read. bbolt maps the whole file, and each page fault
// maps the whole folio and its neighbours in the page cache, so a catch-up
// that reads the log end to end, or random reads of stream after stream,
// would otherwise leave all of it resident and counted in the process's
// RSS (mysafe bench's memory scenario: 800 MB of mapped file beside 35 MB
// of heap, with a million events).
//
// The read transaction keeps bbolt from remapping the file meanwhile (a
// remap waits for every read transaction), so the range is the mapping's.
func releaseMappedPages(db *bbolt.DB) error {
	tx, err := db.Begin(false)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	// The mapping is at least the file's size, which is at least tx.Size().
	_, _, errno := unix.Syscall(unix.SYS_MADVISE, db.Info().Data, uintptr(tx.Size()), unix.MADV_DONTNEED)
	if errno != 0 {
		return errno
	}
	return nil
}

// residentFileBytes is how much file-backed (and shared) memory the process
// holds: the "shared" field of /proc/self/statm, in pages.
func residentFileBytes() (int64, error) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, err
	}
	f := bytes.Fields(b)
	if len(f) < 3 {
		return 0, os.ErrInvalid
	}
	pages, err := strconv.ParseInt(string(f[2]), 10, 64)
	return pages * int64(os.Getpagesize()), err
}
