/* pystr.h: interned Python strings and cached constants used on the hot paths. */
#ifndef LAUREL_PYSTR_H
#define LAUREL_PYSTR_H

#include <Python.h>

#define LR_STRINGS(X)                                                                    \
  X(type, "type")                                                                        \
  X(asgi, "asgi")                                                                        \
  X(version, "version")                                                                  \
  X(spec_version, "spec_version")                                                        \
  X(http_version, "http_version")                                                        \
  X(method, "method")                                                                    \
  X(scheme, "scheme")                                                                    \
  X(path, "path")                                                                        \
  X(raw_path, "raw_path")                                                                \
  X(query_string, "query_string")                                                        \
  X(root_path, "root_path")                                                              \
  X(headers, "headers")                                                                  \
  X(client, "client")                                                                    \
  X(server, "server")                                                                    \
  X(state, "state")                                                                      \
  X(extensions, "extensions")                                                            \
  X(body, "body")                                                                        \
  X(more_body, "more_body")                                                              \
  X(status, "status")                                                                    \
  X(http, "http")                                                                        \
  X(https, "https")                                                                      \
  X(v1_0, "1.0")                                                                         \
  X(v1_1, "1.1")                                                                         \
  X(http_request, "http.request")                                                        \
  X(http_disconnect, "http.disconnect")                                                  \
  X(http_response_start, "http.response.start")                                          \
  X(http_response_body, "http.response.body")                                            \
  X(set_result, "set_result")                                                            \
  X(done, "done")                                                                        \
  X(cancel, "cancel")                                                                    \
  X(loop, "loop")

typedef struct lr_strings {
#define LR_STR_FIELD(name, text) PyObject *name;
  LR_STRINGS(LR_STR_FIELD)
#undef LR_STR_FIELD
} lr_strings;

extern lr_strings lr_s;

int lr_pystr_init(void);

#endif
