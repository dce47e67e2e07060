package objectstoretest

import "hash/crc32"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func objectstoreCRC(p []byte) uint32 { return crc32.Checksum(p, castagnoli) }
