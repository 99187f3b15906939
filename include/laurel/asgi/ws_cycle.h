/* ws_cycle.h: the ASGI cycle of one WebSocket. Internal to asgi/. */
#ifndef LAUREL_ASGI_WS_CYCLE_H
#define LAUREL_ASGI_WS_CYCLE_H

#include "laurel/http/h1.h"
#include "laurel/http/h2.h"

int lr_ws_cycle_init(void);
/* lr_h1_app.websocket: checks the handshake, starts the app and makes the connection
 * a WebSocket. 0, or the status h1 answers with (400, 426, 500). */
int lr_ws_cycle_start(lr_h1 *h);
/* lr_h2_app.websocket: the same for an RFC 8441 extended CONNECT, over the stream's
 * tunnel (h2.h). 0, or the status h2 answers with. */
int lr_ws_cycle_start_h2(lr_h2s *s);

#endif
