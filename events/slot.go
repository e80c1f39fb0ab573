package events

import "strings"

// SlotCount is the number of hash slots of Redis Cluster.
const SlotCount = 16384

// Slot is the Redis Cluster hash slot of key, as CLUSTER KEYSLOT computes it: CRC16
// (XMODEM) of the key's hash tag (what is between the first '{' and the next '}', when
// that is not empty), or of the whole key, modulo 16384. The partitions' hash tags are
// chosen with it (see Layout), so that they spread evenly over the cluster's masters.
func Slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16(key) % SlotCount)
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021, initial value 0), Redis Cluster's.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
