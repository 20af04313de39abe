/**
 * Requests that the broker answers with a frame of their own: `history`, `profile` `get`,
 * `devices` and `revoke` (answered in order, with no id) and `file_url` (answered by file id).
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

/** What a `history`, `profile` `get`, `devices` or `revoke` is answered with. */
export type Answer = HistoryFrame | ProfileAnswerFrame | DevicesFrame | RevokeFrame;

interface Waiter<T> {
  resolve: (value: T) => void;
  reject: (err: Error) => void;
}

/** The id-less refusals that can answer each request (proto/frames.md lists them per op). */
const ANSWER_ERRORS: Record<Answer["op"], string[]> = {
  history: ["bad_value", "wrong_type", "internal"],
  profile: ["unknown_recipient", "bad_value", "wrong_type", "internal"],
  devices: ["internal"],
  revoke: ["forbidden", "no_such_user", "missing_field", "wrong_type", "internal"],
};

/** The requests of one client that wait for their answers. */
export class Requests {
  private readonly answers: (Waiter<Answer> & { kind: Answer["op"] })[] = [];
  private readonly fileUrls = new Map<string, Waiter<FileUrlFrame>>();

  /**
   * Writes a request and waits for its answer. The broker handles a connection's frames one at
   * a time, so answers without an id come in the order of the requests.
   */
  ask(kind: Answer["op"], write: () => void): Promise<Answer> {
    return new Promise((resolve, reject) => {
      this.answers.push({ kind, resolve, reject });
      write();
    });
  }

  /** Writes a `file_url` and waits for the answer with that id. */
  askFileUrl(id: string, write: () => void): Promise<FileUrlFrame> {
    return new Promise((resolve, reject) => {
      this.fileUrls.set(id, { resolve, reject });
      write();
    });
  }

  /** An answer (a `profile` without `seq`, …): the oldest request of that kind is answered. */
  onAnswer(frame: Answer): void {
    const index = this.answers.findIndex((w) => w.kind === frame.op);
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
      const waiter = this.fileUrls.get(frame.id);
      if (!waiter) return false;
      this.fileUrls.delete(frame.id);
      waiter.reject(error);
      return true;
    }
    if (frame.call !== undefined) return false;
    // Some frames without an answer (`read`, `ack`) are refused with the same codes; the oldest
    // request that can have caused it takes it, which is right unless both are in flight.
    const index = this.answers.findIndex((w) => ANSWER_ERRORS[w.kind].includes(frame.code));
    if (index < 0) return false;
    this.answers.splice(index, 1)[0]?.reject(error);
    return true;
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
