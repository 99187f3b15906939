/* http_cycle.h: the ASGI cycle of one HTTP request. Internal to asgi/. */
#ifndef LAUREL_ASGI_HTTP_CYCLE_H
#define LAUREL_ASGI_HTTP_CYCLE_H

#include "laurel/http/h1.h"
#include "laurel/http/h2.h"

int lr_http_cycle_init(void);
/* lr_h1_app.request: scope, app Task, attached to h. 0, or -1 (reported). */
int lr_http_cycle_start(lr_h1 *h);
/* lr_h2_app.request: the same for an HTTP/2 request stream. */
int lr_http_cycle_start_h2(lr_h2s *s);

#endif
