// LD_PRELOAD interposer: rocksdb::crc32c::Extend computed with the SSE 4.2 crc32 instruction.
// The prebuilt rocksdb 5.2.1 binding calls Extend through its PLT, so this definition replaces its table-driven one.
// For bench/rocks-binding.ts (old-hwcrc) only. Same results as the table (CRC-32C is one function): checked against a
// bitwise reference over offsets 0-15 and lengths 0-4000, and data dirs written either way read back either way.
// IsFastCrc32Supported is left as it is: defining it too (returning true) made the binding crash at its first write.
#include <nmmintrin.h>
#include <stdint.h>
#include <string.h>
#include <stddef.h>
namespace rocksdb { namespace crc32c {
uint32_t Extend(uint32_t crc, const char* buf, size_t n) {
  uint64_t l = crc ^ 0xffffffffu;
  const unsigned char* p = reinterpret_cast<const unsigned char*>(buf);
  while (n > 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0) { l = _mm_crc32_u8(static_cast<uint32_t>(l), *p++); n--; }
  // three independent streams would hide the instruction's latency; one stream is ~8 bytes per 3 cycles
  while (n >= 8) { uint64_t v; memcpy(&v, p, 8); l = _mm_crc32_u64(l, v); p += 8; n -= 8; }
  while (n > 0) { l = _mm_crc32_u8(static_cast<uint32_t>(l), *p++); n--; }
  return static_cast<uint32_t>(l) ^ 0xffffffffu;
}
}}
