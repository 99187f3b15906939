/* check.h: the C unit tests' checks. Each failure prints one line; main() ends with
 * CHECK_SUMMARY(), the "N passed, N failed" line CI reads, and its exit status. */
#ifndef LAUREL_TEST_CHECK_H
#define LAUREL_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

static int passed, failed;

#define CHECK(cond)                                                                      \
  do {                                                                                   \
    if (cond)                                                                            \
      passed++;                                                                          \
    else {                                                                               \
      failed++;                                                                          \
      printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                             \
    }                                                                                    \
  } while (0)

#define CHECK_STR(got, want)                                                             \
  do {                                                                                   \
    const char *g_ = (got), *w_ = (want);                                                \
    if (g_ && w_ && strcmp(g_, w_) == 0)                                                 \
      passed++;                                                                          \
    else {                                                                               \
      failed++;                                                                          \
      printf("FAIL %s:%d: %s is \"%s\", want \"%s\"\n", __FILE__, __LINE__, #got,        \
             g_ ? g_ : "(null)", w_ ? w_ : "(null)");                                    \
    }                                                                                    \
  } while (0)

#endif
