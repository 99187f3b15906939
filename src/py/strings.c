/* strings.c: the interned-string table (see strings.h). */
#include "laurel/py/strings.h"

lr_strings lr_s;

int lr_strings_init(void) {
  if (lr_s.type)
    return 0;
#define STRINGS__INTERN(field, text)                                                     \
  if (!(lr_s.field = PyUnicode_InternFromString(text)))                                  \
    return -1;
  LR_STRINGS(STRINGS__INTERN)
#undef STRINGS__INTERN
  return 0;
}
