/**
 * Requests that the broker answers with a frame of their own: `history`, `profile` `get`,
 * `devices` and `revoke` (tagged with an `id` that the answer and any refusal carry back) and
 * `file_url` (answered by file id).
 * @module
 */

import { OctetError } from "./close.js";
import type {
  DevicesFrame,
  ErrorFrame,
  FileUrlFrame,
  HistoryFrame,
  ProfileAnswerFrame,
  RevokeFrame,
} from "./frames.js";
import { newId } from "./socket.js";

/** What a `history`, `profile` `get`, `devices` or `revoke` is answered with. */
export type Answer = HistoryFrame | ProfileAnswerFrame | DevicesFrame | RevokeFrame;

interface Waiter<T> {
  resolve: (value: T) => void;
  reject: (err: Error) => void;
}

/** A request waiting for its answer, tagged with the `id` the broker echoes. */
interface Waiting extends Waiter<Answer> {
  kind: Answer["op"];
  id: string;
}

/** The error of a request whose connection closed (or was not open) before the answer. */
export function lost(): OctetError {
  return new OctetError("connection_lost", "the connection closed before the answer");
}

/**
 * Runs `ask` again after a pause (doubling from `firstPauseMs` up to 5 s) while the broker
 * refuses it for the rate: `rate_limited` means the frame was dropped, not answered
 * (proto/clients.md, "Sends").
 */
export async function patiently<T>(ask: () => Promise<T>, firstPauseMs = 250): Promise<T> {
  for (let pause = firstPauseMs; ; pause = Math.min(pause * 2, 5000)) {
    try {
      return await ask();
    } catch (err) {
      if (!(err instanceof OctetError && err.code === "rate_limited")) throw err;
      await new Promise((resolve) => setTimeout(resolve, pause));
    }
  }
}

/** The requests of one client that wait for their answers. */
export class Requests {
  /** In the order asked. */
  private readonly answers: Waiting[] = [];
  private readonly fileUrls = new Map<string, Waiter<FileUrlFrame>>();

  /**
   * Writes a request and waits for its answer, written with a new `id` and matched by it (so a
   * refusal of another frame, or another request's answer, is never taken for it).
   */
  ask(kind: Answer["op"], write: (id: string) => boolean): Promise<Answer> {
    const id = newId();
    return new Promise((resolve, reject) => {
      const waiter: Waiting = { kind, id, resolve, reject };
      this.answers.push(waiter);
      if (write(id)) return;
      // Offline: nothing will answer. The caller asks again on the next connection.
      this.answers.splice(this.answers.indexOf(waiter), 1);
      reject(lost());
    });
  }

  /** Writes a `file_url` and waits for the answer with that id. */
  askFileUrl(id: string, write: () => boolean): Promise<FileUrlFrame> {
    return new Promise((resolve, reject) => {
      if (!write()) return reject(lost());
      this.fileUrls.set(id, { resolve, reject });
    });
  }

  /** An answer (a `profile` without `seq`, …): the request with its id. */
  onAnswer(frame: Answer): void {
    const index = this.answers.findIndex((w) => w.id === frame.id && w.kind === frame.op);
    if (index >= 0) this.answers.splice(index, 1)[0]?.resolve(frame);
  }

  onFileUrl(frame: FileUrlFrame): void {
    const waiter = this.fileUrls.get(frame.id);
    this.fileUrls.delete(frame.id);
    waiter?.resolve(frame);
  }

  /** An `error` that answers a waiting request; `false` when none can be its cause. */
  onError(frame: ErrorFrame): boolean {
    const error = new OctetError(frame.code, frame.message);
    if (frame.id !== undefined) {
      const index = this.answers.findIndex((w) => w.id === frame.id);
      if (index >= 0) {
        this.answers.splice(index, 1)[0]?.reject(error);
        return true;
      }
      const waiter = this.fileUrls.get(frame.id);
      if (!waiter) return false;
      this.fileUrls.delete(frame.id);
      waiter.reject(error);
      return true;
    }
    // An error without an id refuses a frame that has no answer (`read`, `ack`): every request
    // is tagged, so it is never one of them. Matching it by order would blame the wrong one.
    return false;
  }

  /** How many requests wait for their answers. */
  waiting(): number {
    return this.answers.length + this.fileUrls.size;
  }

  /** The connection closed or the client stopped: every waiting request fails with `err`. */
  failAll(err: Error): void {
    for (const waiter of this.answers.splice(0)) waiter.reject(err);
    for (const waiter of this.fileUrls.values()) waiter.reject(err);
    this.fileUrls.clear();
  }
}
