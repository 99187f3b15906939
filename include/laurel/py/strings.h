/* strings.h: every interned Python string the C code uses, in one table.
 *
 * Dict keys, message types and method names are looked up by identity on the hot
 * paths; interning them once makes a dict lookup a pointer compare. The same table is
 * built into the server and into the _laurel_layer extension. */
#ifndef LAUREL_PY_STRINGS_H
#define LAUREL_PY_STRINGS_H

#include <Python.h>

/* X(field, "text") */
#define LR_STRINGS(X)                                                                    \
  /* scope keys and values */                                                            \
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
  X(subprotocols, "subprotocols")                                                        \
  X(http, "http")                                                                        \
  X(https, "https")                                                                      \
  X(websocket, "websocket")                                                              \
  X(ws, "ws")                                                                            \
  X(wss, "wss")                                                                          \
  X(v1_0, "1.0")                                                                         \
  X(v1_1, "1.1")                                                                         \
  /* message keys */                                                                     \
  X(body, "body")                                                                        \
  X(more_body, "more_body")                                                              \
  X(status, "status")                                                                    \
  X(text, "text")                                                                        \
  X(bytes, "bytes")                                                                      \
  X(code, "code")                                                                        \
  X(reason, "reason")                                                                    \
  X(subprotocol, "subprotocol")                                                          \
  /* message types */                                                                    \
  X(http_request, "http.request")                                                        \
  X(http_disconnect, "http.disconnect")                                                  \
  X(http_response_start, "http.response.start")                                          \
  X(http_response_body, "http.response.body")                                            \
  X(websocket_connect, "websocket.connect")                                              \
  X(websocket_receive, "websocket.receive")                                              \
  X(websocket_disconnect, "websocket.disconnect")                                        \
  X(websocket_accept, "websocket.accept")                                                \
  X(websocket_send, "websocket.send")                                                    \
  X(websocket_close, "websocket.close")                                                  \
  X(websocket_http_response_start, "websocket.http.response.start")                      \
  X(websocket_http_response_body, "websocket.http.response.body")                        \
  /* asyncio: futures, tasks, loops */                                                   \
  X(loop, "loop")                                                                        \
  X(result, "result")                                                                    \
  X(set_result, "set_result")                                                            \
  X(done, "done")                                                                        \
  X(cancel, "cancel")                                                                    \
  X(throw, "throw")                                                                      \
  X(close, "close")                                                                      \
  X(create_future, "create_future")                                                      \
  X(call_soon_threadsafe, "call_soon_threadsafe")                                        \
  X(call_exception_handler, "call_exception_handler")                                    \
  X(asyncio_future_blocking, "_asyncio_future_blocking")                                 \
  X(loop_closed, "_closed")                                                              \
  X(loop_debug, "_debug")                                                                \
  X(loop_ready, "_ready")                                                                \
  X(append, "append")                                                                    \
  X(context, "context")                                                                  \
  X(message, "message")                                                                  \
  X(exception, "exception")                                                              \
  X(handle, "handle")                                                                    \
  X(timer_handle_cancelled, "_timer_handle_cancelled")                                   \
  X(process_events, "_process_events")                                                   \
  X(fd_to_key, "_fd_to_key")                                                             \
  X(fileobj, "fileobj")                                                                  \
  X(events, "events")                                                                    \
  X(data, "data")                                                                        \
  X(selector, "_selector")                                                               \
  X(check_callback, "_check_callback")                                                   \
  X(check_thread, "_check_thread")                                                       \
  X(slow_callback_duration, "slow_callback_duration")                                    \
  X(cancelled_attr, "_cancelled")                                                        \
  X(run_attr, "_run")                                                                    \
  X(submit, "submit")                                                                    \
  X(max_workers, "_max_workers")                                                         \
  X(shutdown_attr, "_shutdown")                                                          \
  X(thread_name_prefix, "_thread_name_prefix")                                           \
  X(default_executor, "_default_executor")                                               \
  X(set_exception, "set_exception")                                                      \
  X(name, "name")                                                                        \
  /* laurel's own */                                                                     \
  X(laurel, "laurel")                                                                    \
  X(layer_wake, "_wake")

typedef struct lr_strings {
#define LR_STR_FIELD(field, text) PyObject *field;
  LR_STRINGS(LR_STR_FIELD)
#undef LR_STR_FIELD
} lr_strings;

extern lr_strings lr_s;

/* Interns the table (once). 0, or -1 with an exception set. */
int lr_strings_init(void);

#endif
