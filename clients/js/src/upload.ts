/**
 * `POST /files` (proto/files.md) with upload progress: XMLHttpRequest in browsers (the only
 * API there that reports upload progress over HTTP/1.1), a counted stream with fetch elsewhere.
 * @module
 */

import { OctetError } from "./close.js";
import type { Attachment } from "./frames.js";

/** Options of one upload. */
export interface UploadOptions {
  /** The file name (default: the Blob's `name` if it has one, else `file`). */
  name?: string;
  /** Called as bytes leave: bytes sent so far, and the total. */
  onProgress?: (sent: number, total: number) => void;
  /** Aborts the upload. */
  signal?: AbortSignal;
}

/** What an upload answers: the attachment to pass to `send` (its `id`). */
export type UploadResult = Attachment;

interface UploadAnswer {
  result: boolean;
  file?: Attachment;
  error?: string;
  message?: string;
}

const CHUNK = 64 * 1024;

/** Uploads `data` to `url` (`http…/files`) with the device's token. */
export async function upload(
  url: string,
  token: string,
  appid: string,
  data: Blob | Uint8Array | ArrayBuffer,
  options: UploadOptions,
): Promise<UploadResult> {
  const blob = data instanceof Blob ? data : new Blob([data as BlobPart]);
  const name = options.name ?? (data as { name?: string }).name ?? "file";
  const target = new URL(url);
  target.searchParams.set("name", name);
  const headers = { Authorization: `Bearer ${token}`, "Octet-Appid": appid };
  const XHR = (globalThis as { XMLHttpRequest?: typeof XMLHttpRequest }).XMLHttpRequest;
  const text = XHR
    ? await viaXhr(XHR, target.toString(), headers, blob, options)
    : await viaFetch(target.toString(), headers, blob, options);
  let answer: UploadAnswer;
  try {
    answer = JSON.parse(text) as UploadAnswer;
  } catch {
    throw new OctetError("bad_answer", `the broker answered the upload with: ${text.slice(0, 200)}`);
  }
  if (!answer.result || !answer.file) {
    throw new OctetError(answer.error ?? "upload_failed", answer.message ?? "the upload was refused");
  }
  return answer.file;
}

async function viaFetch(
  url: string,
  headers: Record<string, string>,
  blob: Blob,
  options: UploadOptions,
): Promise<string> {
  const total = blob.size;
  let sent = 0;
  const reader = blob.stream().getReader();
  // Progress counts the bytes handed to the network as fetch pulls them.
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const { done, value } = await reader.read();
      if (done) {
        controller.close();
        return;
      }
      for (let at = 0; at < value.length; at += CHUNK) {
        const chunk = value.subarray(at, at + CHUNK);
        controller.enqueue(chunk);
        sent += chunk.length;
        options.onProgress?.(sent, total);
      }
    },
  });
  const init: RequestInit & { duplex: "half" } = {
    method: "POST",
    headers: { ...headers, "Content-Length": String(total) },
    body,
    duplex: "half",
  };
  if (options.signal) init.signal = options.signal;
  const response = await fetch(url, init);
  return response.text();
}

function viaXhr(
  XHR: typeof XMLHttpRequest,
  url: string,
  headers: Record<string, string>,
  blob: Blob,
  options: UploadOptions,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const xhr = new XHR();
    xhr.open("POST", url);
    for (const [k, v] of Object.entries(headers)) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => options.onProgress?.(e.loaded, blob.size);
    xhr.onload = () => resolve(xhr.responseText);
    xhr.onerror = () => reject(new OctetError("network", "the upload failed on the network"));
    xhr.onabort = () => reject(new OctetError("aborted", "the upload was aborted"));
    options.signal?.addEventListener("abort", () => xhr.abort());
    xhr.send(blob);
  });
}
