/* tokens.c: header names to tokens (see tokens.h). Names are bucketed by length, so a
 * lookup compares against the few known names of that length only. */
#include "laurel/http/tokens.h"

#include <string.h>

_Static_assert(LR_TOK_COUNT <= 64, "a request keeps its tokens in a 64-bit mask");

const char *const lr_token_name[LR_TOK_COUNT] = {
#define TOKENS__NAME(id, name) name,
    LR_TOKENS(TOKENS__NAME)
#undef TOKENS__NAME
};

const unsigned char lr_token_len[LR_TOK_COUNT] = {
#define TOKENS__LEN(id, name) sizeof name - 1,
    LR_TOKENS(TOKENS__LEN)
#undef TOKENS__LEN
};

#define TOKENS__MAXLEN 32

/* by_len[n] .. by_len[n + 1]: the slots of order[] holding the tokens of length n. */
static unsigned char tokens__by_len[TOKENS__MAXLEN + 2];
static unsigned char tokens__order[LR_TOK_COUNT];
static int tokens__ready;

static void tokens__index(void) {
  unsigned k = 0;
  for (unsigned n = 0; n <= TOKENS__MAXLEN; n++) {
    tokens__by_len[n] = (unsigned char)k;
    for (unsigned t = 0; t < LR_TOK_COUNT; t++)
      if (lr_token_len[t] == n)
        tokens__order[k++] = (unsigned char)t;
  }
  tokens__by_len[TOKENS__MAXLEN + 1] = (unsigned char)k;
  tokens__ready = 1;
}

lr_token lr_token_find(const char *name, size_t len) {
  if (len == 0 || len > TOKENS__MAXLEN)
    return LR_TOK_UNKNOWN;
  if (!tokens__ready)
    tokens__index(); /* the first call comes from the loop's one thread */
  char low[TOKENS__MAXLEN];
  for (size_t i = 0; i < len; i++) {
    char ch = name[i];
    low[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
  }
  for (unsigned k = tokens__by_len[len]; k < tokens__by_len[len + 1]; k++) {
    unsigned t = tokens__order[k];
    if (lr_token_name[t][0] == low[0] && memcmp(lr_token_name[t], low, len) == 0)
      return (lr_token)t;
  }
  return LR_TOK_UNKNOWN;
}
