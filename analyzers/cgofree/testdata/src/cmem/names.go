package cmem

import (
	"sync"
	"unsafe"
)

// nameTable keeps C strings for the life of the process.
type nameTable struct {
	mu sync.Mutex
	m  map[string]unsafe.Pointer
}

var names = &nameTable{m: map[string]unsafe.Pointer{}}

func (t *nameTable) add(k string, p unsafe.Pointer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.m[k] = p
}
