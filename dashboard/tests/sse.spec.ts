// The stream parser on its own (no browser): frames split anywhere, CRLF, comments.
import { expect, test } from "@playwright/test";
import { SseParser, type StreamFrame } from "../src/stream";

function parse(chunks: string[]): StreamFrame[] {
  const out: StreamFrame[] = [];
  const p = new SseParser((f) => out.push(f));
  for (const c of chunks) p.push(c);
  return out;
}

test("parses frames however the bytes are split", () => {
  const text =
    ': keepalive\n\nevent: audit\nid: 7\ndata: {"seq":7}\n\nevent: vm\ndata: {"id":"a"}\n\n' +
    'event: vm_deleted\r\ndata: {"id":"a"}\r\n\r\nevent: nodes\ndata: [1,\ndata: 2]\n\n';
  const want = [
    { event: "audit", data: '{"seq":7}', id: "7" },
    { event: "vm", data: '{"id":"a"}', id: "7" },
    { event: "vm_deleted", data: '{"id":"a"}', id: "7" },
    { event: "nodes", data: "[1,\n2]", id: "7" },
  ];
  expect(parse([text])).toEqual(want);
  for (const size of [1, 2, 3, 5, 8, 13]) {
    const chunks: string[] = [];
    for (let i = 0; i < text.length; i += size) chunks.push(text.slice(i, i + size));
    expect(parse(chunks)).toEqual(want);
  }
  // A frame is only dispatched at its blank line.
  expect(parse(['event: vm\ndata: {"id":"b"}\n'])).toEqual([]);
});
