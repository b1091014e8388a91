package hub

import (
	"crypto/rand"
	"encoding/hex"
)

// NewID returns a random UUID version 4 as a URN, the form of the ids the
// hub generates for updates published without one. Random ids reveal
// nothing about ordering or timing to subscribers who see them as cursors.
func NewID() string {
	var u [16]byte
	_, _ = rand.Read(u[:]) // crypto/rand.Read never fails on supported platforms
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	var b [45]byte
	copy(b[:], "urn:uuid:")
	hex.Encode(b[9:17], u[0:4])
	b[17] = '-'
	hex.Encode(b[18:22], u[4:6])
	b[22] = '-'
	hex.Encode(b[23:27], u[6:8])
	b[27] = '-'
	hex.Encode(b[28:32], u[8:10])
	b[32] = '-'
	hex.Encode(b[33:45], u[10:16])
	return string(b[:])
}
