/* nomem.so: makes one library's allocations fail, for tests of out-of-memory paths.
 *
 *   LD_PRELOAD=build/nomem.so LAUREL_NOMEM_LIB=libwslay LAUREL_NOMEM_FLAG=/tmp/f laurel
 *
 * While the file LAUREL_NOMEM_FLAG exists, malloc, calloc and realloc called from code
 * of the loaded object whose path contains LAUREL_NOMEM_LIB return NULL (errno ENOMEM);
 * every other allocation, and every one while the file is absent, goes to glibc. Not for
 * sanitizer builds: their runtime owns malloc. */
#include <errno.h>
#include <link.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

static uintptr_t nomem__lo, nomem__hi; /* the target's executable segments */
static const char *nomem__flag;

static int nomem__find(struct dl_phdr_info *info, size_t size, void *lib) {
  (void)size;
  if (!info->dlpi_name || !strstr(info->dlpi_name, lib))
    return 0;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
      continue;
    uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
    if (!nomem__lo || lo < nomem__lo)
      nomem__lo = lo;
    if (hi > nomem__hi)
      nomem__hi = hi;
  }
  return 1;
}

__attribute__((constructor)) static void nomem__init(void) {
  const char *lib = getenv("LAUREL_NOMEM_LIB");
  nomem__flag = getenv("LAUREL_NOMEM_FLAG");
  if (lib && *lib && nomem__flag && *nomem__flag)
    dl_iterate_phdr(nomem__find, (void *)lib);
}

static int nomem__fail(const void *caller) {
  uintptr_t a = (uintptr_t)caller;
  if (!nomem__hi || a < nomem__lo || a >= nomem__hi || access(nomem__flag, F_OK) != 0)
    return 0;
  errno = ENOMEM;
  return 1;
}

void *malloc(size_t n) {
  return nomem__fail(__builtin_return_address(0)) ? NULL : __libc_malloc(n);
}

void *calloc(size_t k, size_t n) {
  return nomem__fail(__builtin_return_address(0)) ? NULL : __libc_calloc(k, n);
}

void *realloc(void *p, size_t n) {
  return nomem__fail(__builtin_return_address(0)) ? NULL : __libc_realloc(p, n);
}
