package hub

import (
	"crypto/rand"
	"encoding/hex"
	"time"
)

// NewID returns a time-ordered UUID (version 7, RFC 9562) as a URN, the
// form of the ids the hub generates for updates published without one.
//
// Time order is what keeps durable publishing fast: the history indexes
// ids in a B+tree, and ids that grow with time are appended at its right
// edge, where one page takes a whole batch, while random ids land on a
// different page each, so every commit rewrites dozens of pages. Measured
// with the bolt engine and 64 publishers over a 100,000-update history:
// 55,700 publishes/s with these ids, 13,300/s with random ones. The price
// is that an id tells the millisecond it was made; deployments that must
// not reveal even that use NewRandomID (Config.RandomIDs).
func NewID() string {
	var u [16]byte
	_, _ = rand.Read(u[6:]) // crypto/rand.Read never fails on supported platforms
	ms := uint64(time.Now().UnixMilli())
	u[0], u[1], u[2], u[3], u[4], u[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	u[6] = u[6]&0x0f | 0x70
	u[8] = u[8]&0x3f | 0x80
	return formatURN(&u)
}

// NewRandomID returns a random UUID (version 4) as a URN: it reveals
// nothing, not even when it was made.
func NewRandomID() string {
	var u [16]byte
	_, _ = rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return formatURN(&u)
}

func formatURN(u *[16]byte) string {
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
