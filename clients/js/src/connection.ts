/**
 * One WebSocket connection of the client at a time, from the upgrade to its close: the login,
 * the frames in, the frames out, and the watch that gives a silent connection up.
 * @module
 */

import type { ClientFrame, ServerFrame } from "./frames.js";
import { OPEN, messageText } from "./socket.js";
import type { WebSocketConstructor, WebSocketLike } from "./socket.js";
import type { Cursor } from "./store.js";

/**
 * The `login` frame: resumes from the cursor, or on a first start (no epoch) replays the whole
 * log (`since: 0`) or starts live (no `since`).
 */
export function loginFrame(token: string, appid: string, cursor: Cursor, replayAll: boolean): ClientFrame {
  const login: ClientFrame = { op: "login", token, appid };
  if (cursor.epoch !== null) {
    login.since = cursor.held;
    login.epoch = cursor.epoch;
  } else if (replayAll) {
    login.since = 0;
  }
  return login;
}

/** How a connection ended: its close code and reason (1006 when there was no close frame). */
export interface CloseInfo {
  code: number;
  reason: string;
}

/** What a connection asks of its client. */
export interface LinkHooks {
  /** The URL to connect to now. */
  url(): string;
  /** The `login` frame for this connection (with the cursor as it is now). */
  login(): ClientFrame;
  /** A frame from the broker. */
  onFrame(frame: ServerFrame): void;
  /** Whether the client waits for the broker (the login, a `sent`, an answer). */
  waiting(): boolean;
  /** How long a waiting client accepts silence before it gives the connection up, in ms. */
  timeoutMs: number;
}

/** The client's current socket: what the client writes goes there, and nowhere while offline. */
export class Link {
  private ws: WebSocketLike | null = null;

  /** Writes a frame when a socket is open; offline, the frame is dropped (callers resend): false. */
  write(text: string): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== OPEN) return false;
    ws.send(text);
    return true;
  }

  /** Closes the current socket, if any. */
  close(code: number, reason: string): void {
    this.ws?.close(code, reason);
  }

  /** Forgets the socket after its close. */
  drop(): void {
    this.ws = null;
  }

  /** One connection, from the upgrade to its close. */
  run(WS: WebSocketConstructor, hooks: LinkHooks): Promise<CloseInfo> {
    return new Promise((done) => {
      let ws: WebSocketLike;
      try {
        ws = new WS(hooks.url());
      } catch (err) {
        done({ code: 1006, reason: String(err) });
        return;
      }
      this.ws = ws;
      // A connection that went dead without a close (a sleeping laptop, a dropped NAT entry)
      // shows as silence: while the client waits for something (the login, a `sent`, an
      // answer) and no frame at all comes for `timeoutMs`, it gives the socket up.
      const timeout = hooks.timeoutMs;
      let lastFrameAt = Date.now();
      const watch = setInterval(
        () => {
          const waiting = hooks.waiting();
          if (!waiting || Date.now() - lastFrameAt <= timeout) return;
          if (this.ws === ws) this.ws = null;
          ws.onopen = ws.onmessage = ws.onclose = null;
          try {
            ws.close(4000, "no answer");
          } catch {
            // closing a socket that never opened may throw; it is abandoned either way
          }
          resolve({ code: 1006, reason: `no frame from the broker for ${timeout} ms` });
        },
        Math.max(50, Math.min(1000, timeout / 4)),
      );
      const resolve = (close: CloseInfo) => {
        clearInterval(watch);
        done(close);
      };
      ws.onopen = () => {
        lastFrameAt = Date.now();
        ws.send(JSON.stringify(hooks.login()));
      };
      ws.onmessage = (event) => {
        if (this.ws !== ws) return;
        lastFrameAt = Date.now();
        const text = messageText(event.data);
        if (text === null) return;
        let frame: ServerFrame;
        try {
          frame = JSON.parse(text) as ServerFrame;
        } catch {
          return; // the broker sends JSON only; a broken frame is not ours to act on
        }
        hooks.onFrame(frame);
      };
      ws.onerror = () => {};
      ws.onclose = (event) => {
        if (this.ws === ws) this.ws = null;
        resolve({ code: event.code, reason: event.reason ?? "" });
      };
    });
  }
}
