// The live stream: GET /v1/stream (text/event-stream) read with fetch(), since it needs the
// Authorization header (EventSource cannot send one). Reconnects with backoff when the
// stream ends, starting after the last audit sequence number seen.

import { getToken } from "./api/client";

export interface StreamFrame {
  event: string;
  data: string;
  id: string | null;
}

export interface StreamHandlers {
  /** One frame (event, data). */
  frame(f: StreamFrame): void;
  /** The stream answered 200 (first time: `again` false). */
  connected(again: boolean): void;
  /** It ended or failed; `retryInMs` null when it will not retry. */
  down(why: string, retryInMs: number | null): void;
  /** The sequence number to start after on (re)connection, if any. */
  afterSeq(): number | null;
}

/** Parses an event stream incrementally: feed text chunks, get frames. */
export class SseParser {
  private buf = "";
  private event = "";
  private data: string[] = [];
  private id: string | null = null;

  constructor(private readonly emit: (f: StreamFrame) => void) {}

  push(chunk: string): void {
    this.buf += chunk;
    for (;;) {
      const m = /\r\n|\r|\n/.exec(this.buf);
      if (!m) break;
      // A lone \r at the end of the buffer may be the first half of \r\n: wait for more.
      if (m[0] === "\r" && m.index === this.buf.length - 1) break;
      const line = this.buf.slice(0, m.index);
      this.buf = this.buf.slice(m.index + m[0].length);
      this.line(line);
    }
  }

  private line(line: string): void {
    if (line === "") {
      if (this.data.length > 0) {
        this.emit({ event: this.event || "message", data: this.data.join("\n"), id: this.id });
      }
      this.event = "";
      this.data = [];
      return;
    }
    if (line.startsWith(":")) return; // a comment (keepalive)
    const i = line.indexOf(":");
    const field = i < 0 ? line : line.slice(0, i);
    let value = i < 0 ? "" : line.slice(i + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.event = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id") this.id = value;
  }
}

const MIN_BACKOFF_MS = 1000;
const MAX_BACKOFF_MS = 30000;

export class LiveStream {
  private ctl: AbortController | null = null;
  private timer: number | null = null;
  private backoff = MIN_BACKOFF_MS;
  private connects = 0;
  private stopped = false;

  constructor(private readonly h: StreamHandlers) {}

  start(): void {
    this.stopped = false;
    void this.run();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) window.clearTimeout(this.timer);
    this.timer = null;
    this.ctl?.abort();
    this.ctl = null;
  }

  private retry(why: string): void {
    if (this.stopped) return;
    const wait = this.backoff;
    this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
    this.h.down(why, wait);
    this.timer = window.setTimeout(() => {
      this.timer = null;
      void this.run();
    }, wait);
  }

  private async run(): Promise<void> {
    if (this.stopped) return;
    const ctl = new AbortController();
    this.ctl = ctl;
    const after = this.h.afterSeq();
    const url = after === null ? "/v1/stream" : `/v1/stream?after_seq=${after}`;
    let resp: Response;
    try {
      resp = await fetch(url, {
        headers: { Authorization: `Bearer ${getToken()}`, Accept: "text/event-stream" },
        signal: ctl.signal,
        cache: "no-store",
      });
    } catch (e) {
      if (!ctl.signal.aborted) this.retry(`the stream could not connect (${String(e)})`);
      return;
    }
    if (resp.status === 401 || resp.status === 403 || resp.status === 404) {
      // Retrying will not help: the token is refused, or this server has no stream.
      await resp.body?.cancel();
      this.h.down(
        resp.status === 404 ? "this control plane has no live stream (404)" : `the stream was refused (${resp.status})`,
        null,
      );
      return;
    }
    if (!resp.ok || !resp.body) {
      await resp.body?.cancel();
      this.retry(`the stream answered ${resp.status}`);
      return;
    }
    this.h.connected(this.connects > 0);
    this.connects++;
    const parser = new SseParser((f) => {
      this.backoff = MIN_BACKOFF_MS; // it works: the next failure retries soon
      this.h.frame(f);
    });
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        parser.push(value);
      }
    } catch (e) {
      if (ctl.signal.aborted) return;
      this.retry(`the stream broke (${String(e)})`);
      return;
    }
    if (!ctl.signal.aborted) this.retry("the stream ended");
  }
}
