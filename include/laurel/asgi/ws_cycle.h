/* ws_cycle.h: the ASGI cycle of one WebSocket. Internal to asgi/. */
#ifndef LAUREL_ASGI_WS_CYCLE_H
#define LAUREL_ASGI_WS_CYCLE_H

#include "laurel/http/h1.h"

int lr_ws_cycle_init(void);
/* lr_h1_app.websocket: checks the handshake, starts the app and makes the connection
 * a WebSocket. 0, or the status h1 answers with (400, 426, 500). */
int lr_ws_cycle_start(lr_h1 *h);

#endif
