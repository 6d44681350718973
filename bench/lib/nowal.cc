// LD_PRELOAD interposer for a measurement only: rocksdb::DBImpl::WriteImpl of the prebuilt rocksdb 5.2.1 binding
// (RocksDB 6.17, called through its PLT) with WriteOptions.disableWAL set on every write that is not synced:
// what a binding that passes disableWAL for an install's unsynced batches would save. Synced writes keep the WAL.
#include <dlfcn.h>
#include <link.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
struct WriteOptions617 { bool sync, disableWAL, ignore_missing_column_families, no_slowdown, low_pri, memtable_insert_hint_per_batch; const void* timestamp; };
typedef void* (*WriteImplFn)(void* sret, void* self, const WriteOptions617* o, void* batch, void* cb, uint64_t* log_used, uint64_t log_ref,
                             bool disable_memtable, uint64_t* seq_used, size_t batch_cnt, void* pre_release);
static const char* const kName = "_ZN7rocksdb6DBImpl9WriteImplERKNS_12WriteOptionsEPNS_10WriteBatchEPNS_13WriteCallbackEPmmbS8_mPNS_18PreReleaseCallbackE";
static char found[4096];
static int find(struct dl_phdr_info* info, size_t, void*) {
  if (info->dlpi_name != nullptr && strstr(info->dlpi_name, "node.napi.glibc.node") != nullptr) { strncpy(found, info->dlpi_name, sizeof found - 1); return 1; }
  return 0;
}
static WriteImplFn real() {
  static WriteImplFn fn = nullptr;
  if (fn == nullptr) {
    dl_iterate_phdr(find, nullptr);
    void* h = found[0] ? dlopen(found, RTLD_LAZY | RTLD_NOLOAD) : nullptr;
    fn = h ? reinterpret_cast<WriteImplFn>(dlsym(h, kName)) : nullptr;
    if (fn == nullptr) { fprintf(stderr, "nowal: WriteImpl of the binding not found\n"); abort(); }
  }
  return fn;
}
extern "C" void* nowal_write_impl(void* sret, void* self, const WriteOptions617* o, void* batch, void* cb, uint64_t* log_used, uint64_t log_ref,
                                  bool disable_memtable, uint64_t* seq_used, size_t batch_cnt, void* pre_release) __asm__("_ZN7rocksdb6DBImpl9WriteImplERKNS_12WriteOptionsEPNS_10WriteBatchEPNS_13WriteCallbackEPmmbS8_mPNS_18PreReleaseCallbackE");
extern "C" void* nowal_write_impl(void* sret, void* self, const WriteOptions617* o, void* batch, void* cb, uint64_t* log_used, uint64_t log_ref,
                                  bool disable_memtable, uint64_t* seq_used, size_t batch_cnt, void* pre_release) {
  WriteOptions617 w = *o;
  if (!w.sync) w.disableWAL = true;
  return real()(sret, self, &w, batch, cb, log_used, log_ref, disable_memtable, seq_used, batch_cnt, pre_release);
}
